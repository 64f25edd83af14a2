"""Counted losses (`gap` rows) as the API lists them: newest received first.

A gap is what the agent could not avoid losing (kmsg overrun, suppressed printk lines, a full
spool, forged records ignored); `count` is how many. Its time is when the backend received it
(`received_at`): a loss has no event time of its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select

from app.store.cursor import Cursor, encode_cursor
from app.store.tables import gap, host


@dataclass(frozen=True, slots=True)
class GapView:
    host: str
    boot_id: str
    source: str
    first_seq: int
    last_seq: int
    count: int
    reason: str
    received_at: dt.datetime


@dataclass(frozen=True, slots=True)
class GapPage:
    items: list[GapView]
    next_cursor: str | None


def list_gaps(
    conn: Connection,
    *,
    since: dt.datetime,
    until: dt.datetime,
    host_name: str | None = None,
    limit: int = 1000,
    after: Cursor | None = None,
) -> GapPage:
    """Newest received first, keyset-paginated on (received_at desc, id desc) like /events."""
    query = (
        select(
            gap.c.id,
            host.c.name.label("host"),
            gap.c.boot_id,
            gap.c.source,
            gap.c.first_seq,
            gap.c.last_seq,
            gap.c.count,
            gap.c.reason,
            gap.c.received_at,
        )
        .select_from(gap.join(host, host.c.id == gap.c.host_id))
        .where(gap.c.received_at >= since, gap.c.received_at < until)
        .order_by(gap.c.received_at.desc(), gap.c.id.desc())
        .limit(limit + 1)
    )
    if host_name is not None:
        query = query.where(host.c.name == host_name)
    if after is not None:
        query = query.where(
            or_(gap.c.received_at < after.time, and_(gap.c.received_at == after.time, gap.c.id < after.id))
        )
    rows = conn.execute(query).all()
    items = [GapView(**{k: v for k, v in row._mapping.items() if k != "id"}) for row in rows[:limit]]
    if len(rows) <= limit:
        return GapPage(items, None)
    last = rows[limit - 1]
    return GapPage(items, encode_cursor(last.received_at, last.id))


def lost_in_range(conn: Connection, *, since: dt.datetime, until: dt.datetime) -> int:
    """sum(gap.count) received in range: how many events the fleet lost."""
    total = conn.execute(
        select(func.coalesce(func.sum(gap.c.count), 0)).where(
            gap.c.received_at >= since, gap.c.received_at < until
        )
    ).scalar()
    return int(total or 0)
