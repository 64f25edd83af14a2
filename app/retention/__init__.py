"""Retention (#13): raw events expire, rollups stay longer, PostgreSQL drops day partitions.

plan.py is the pure part (horizons, partition names and bounds); run.py does the I/O and
the task `serve` runs.
"""
