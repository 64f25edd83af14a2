"""The backend's last break, as the alert evaluator saw it (app/store/status.py Break).

The evaluator finds it: no process renewed the alerting lease for longer than the lease's time,
so every backend process or the database was down (app/alerts/evaluate.py). It writes the break
on the lease row, and every reader of the status rule (the host list and summary, /metrics,
AgentSilent) leaves that time out of a host's silence, in whichever process serves them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, select, update

from app.store.status import Break
from app.store.tables import alert_lease

ALERTING_LEASE = "alerting"  # the lease row that carries the break


def backend_break(conn: Connection) -> Break | None:
    """The last break recorded, or None (none yet, or alerting has never run)."""
    row = conn.execute(
        select(alert_lease.c.break_down_at, alert_lease.c.break_back_at).where(
            alert_lease.c.name == ALERTING_LEASE
        )
    ).first()
    if row is None or row.break_down_at is None or row.break_back_at is None:
        return None
    return Break(row.break_down_at, row.break_back_at)


def record_break(conn: Connection, down_at: dt.datetime, back_at: dt.datetime) -> Break:
    """Write the break on the lease row (the caller holds the lease, in its transaction)."""
    conn.execute(
        update(alert_lease)
        .where(alert_lease.c.name == ALERTING_LEASE)
        .values(break_down_at=down_at, break_back_at=back_at)
    )
    return Break(down_at, back_at)
