"""splitwatch backend (FastAPI) and the `splitwatch` command line.

Nothing heavy is imported here: `splitwatch agent` runs through app.cli on hosts that
have neither FastAPI, SQLAlchemy nor Plotly installed.
"""
