"""The `splitwatch` command: one module per subcommand, each with `register(cli)`.

A subcommand module imports only typer at import time; what it needs (the backend, the
agent loop) is imported inside the command, so `splitwatch agent` never loads FastAPI.
"""
