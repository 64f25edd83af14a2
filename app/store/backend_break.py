"""The backend's breaks (app/store/status.py Break): times no agent's batch could be stored.

Every `serve` process's evaluator loop says, each round and before it evaluates anything, that
it reached the database (`hear`: `heard_at` on the alerting lease row). When the last time any
process did so is older than the lease's time, every process or the database was down: the gap
is a break, kept in `backend_break`, and every reader of the status rule (the host list and
summary, /metrics, AgentSilent) leaves those times out of a host's silence, in whichever process
serves them. An evaluation that fails while the database answers (a bug in a rule) is no break:
the round was heard all the same, so no host's silence is excused by it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, delete, insert, select, update

from app.store.status import Break, Breaks
from app.store.tables import alert_lease, backend_break

ALERTING_LEASE = "alerting"  # the lease row whose heard_at the processes renew
# Breaks kept: older ones could only matter to a host silent for longer than this, which is
# silent either way unless the backend itself was down for nearly all of it. MAX_BREAKS bounds
# what one read returns (the newest), whatever a flapping database wrote.
BREAKS_KEPT = dt.timedelta(days=7)
MAX_BREAKS = 100


def recent_breaks(conn: Connection, now: dt.datetime) -> Breaks:
    """The breaks of the last BREAKS_KEPT, oldest first (at most MAX_BREAKS, the newest)."""
    rows = conn.execute(
        select(backend_break.c.down_at, backend_break.c.back_at)
        .where(backend_break.c.back_at > now - BREAKS_KEPT)
        .order_by(backend_break.c.down_at.desc())
        .limit(MAX_BREAKS)
    ).all()
    return tuple(Break(row.down_at, row.back_at) for row in reversed(rows))


def hear(
    conn: Connection, now: dt.datetime, ttl_s: float, reached: dt.datetime | None = None
) -> Break | None:
    """A process reached the database at `now`. Returns the break it ends, written down (more than
    `ttl_s` since any process last did), else None; None too when another process heard first.

    `reached`: when this process last finished a job on the database (its previous evaluation):
    a round slower than the lease's time is no break, the database answered all along."""
    query = select(alert_lease.c.heard_at, alert_lease.c.renewed_at).where(
        alert_lease.c.name == ALERTING_LEASE
    )
    if conn.dialect.name == "postgresql":
        # Another process hearing, or the leader renewing the lease in its evaluation, holds the
        # row: the database answers, so skip rather than wait (this job may share a transaction
        # with ingest batches, whose row locks must not wait on it either).
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None:
        return None  # alerting never ran here (nothing heard before), or the row is busy
    last = max(t for t in (row.heard_at or row.renewed_at, reached) if t is not None)
    if now <= last:
        return None
    # Compare and set: of two processes ending the same gap, one writes it.
    heard = alert_lease.c.heard_at
    same = heard.is_(None) if row.heard_at is None else heard == row.heard_at
    done = conn.execute(
        update(alert_lease)
        .where(alert_lease.c.name == ALERTING_LEASE, same)
        .values(heard_at=now)
        .returning(alert_lease.c.name)
    ).first()
    if done is None or (now - last).total_seconds() <= ttl_s:
        return None
    conn.execute(insert(backend_break).values(down_at=last, back_at=now))
    conn.execute(delete(backend_break).where(backend_break.c.back_at <= now - BREAKS_KEPT))
    return Break(last, now)
