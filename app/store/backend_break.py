"""The backend's last break (app/store/status.py Break): a time no batch could be stored.

Every `serve` process's evaluator loop says, each round and before it evaluates anything, that
it reached the database (`hear`, the `heard_at` of the alerting lease row). When the last time
any process did so is older than the lease's time, every process or the database was down: the
gap is a break, written on the same row, and every reader of the status rule (the host list and
summary, /metrics, AgentSilent) leaves that time out of a host's silence, in whichever process
serves them. An evaluation that fails while the database answers (a bug in a rule) is no break:
the round was heard all the same, so no host's silence is excused by it.
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


def hear(conn: Connection, now: dt.datetime, ttl_s: float) -> Break | None:
    """A process reached the database at `now`. Returns the break it ends, written down (more than
    `ttl_s` since any process last did), else None; None too when another process heard first."""
    row = conn.execute(
        select(alert_lease.c.heard_at, alert_lease.c.renewed_at).where(alert_lease.c.name == ALERTING_LEASE)
    ).first()
    if row is None:
        return None  # alerting never ran here: nothing was heard before, so no break to tell of
    last = row.heard_at or row.renewed_at  # no heard_at yet: the lease's last renewal
    if now <= last:
        return None
    gap = (now - last).total_seconds() > ttl_s
    values: dict[str, dt.datetime] = {"heard_at": now}
    if gap:
        values |= {"break_down_at": last, "break_back_at": now}
    # Compare and set: of two processes ending the same gap, one writes it.
    same = (
        alert_lease.c.heard_at.is_(None) if row.heard_at is None else alert_lease.c.heard_at == row.heard_at
    )
    done = conn.execute(
        update(alert_lease)
        .where(alert_lease.c.name == ALERTING_LEASE, same)
        .values(**values)
        .returning(alert_lease.c.name)
    ).first()
    return Break(last, now) if gap and done is not None else None
