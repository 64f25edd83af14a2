"""Reading the `event` table: filters shared by every read path, and the newest-first event list.

Filters name things the way users do (host and guest names, contract words); `resolve_filters`
turns names into ids once, so the queries compare integers on indexed columns. A name that
matches nothing resolves to `nothing=True` and every query answers empty, not an error: a
filter is a question, and "none" is its answer. The guest name `(host)` selects plain host
processes (events without a guest), the key /series uses for them.

The list is keyset-paginated over (time desc, id desc), index `ix_event_time_id`
(app/store/cursor.py): a page starts strictly after the last row of the previous one, so
concurrent inserts never repeat or skip a row that already existed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Engine, and_, or_, select, true
from sqlalchemy.sql.elements import KeyedColumnElement

from app.store.cursor import Cursor, encode_cursor
from app.store.tables import event, guest, host

HOST_GUEST_KEY = "(host)"  # the guest "name" of events that no guest took (plain host processes)
NO_GUEST_ID = 0  # rollups store guest_id 0 for those (a NULL would defeat their upsert key)


@dataclass(frozen=True, slots=True)
class Filters:
    host: str | None = None
    guest: str | None = None
    kind: str | None = None
    action: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """Filters with names turned into ids; `nothing` when a name matched no row."""

    host_id: int | None = None
    guest_id: int | None = None  # NO_GUEST_ID selects events without a guest
    kind: str | None = None
    action: str | None = None
    source: str | None = None
    nothing: bool = False
    # Several at once (one page of a list): their totals in one query.
    host_ids: tuple[int, ...] | None = None
    guest_ids: tuple[int, ...] | None = None


def resolve_filters(conn: Connection, filters: Filters) -> Resolved:
    host_id: int | None = None
    guest_id: int | None = None
    if filters.host is not None:
        host_id = conn.execute(select(host.c.id).where(host.c.name == filters.host)).scalar()
        if host_id is None:
            return Resolved(nothing=True)
    if filters.guest == HOST_GUEST_KEY:
        guest_id = NO_GUEST_ID
    elif filters.guest is not None:
        guest_id = conn.execute(select(guest.c.id).where(guest.c.name == filters.guest)).scalar()
        if guest_id is None:
            return Resolved(nothing=True)
    return Resolved(host_id, guest_id, filters.kind, filters.action, filters.source)


def event_conditions(resolved: Resolved) -> list[ColumnElement[bool]]:
    """WHERE terms for `event` (not the time range)."""
    terms: list[ColumnElement[bool]] = []
    if resolved.host_id is not None:
        terms.append(event.c.host_id == resolved.host_id)
    if resolved.host_ids is not None:
        terms.append(event.c.host_id.in_(resolved.host_ids))
    if resolved.guest_ids is not None:
        terms.append(event.c.guest_id.in_(resolved.guest_ids))
    if resolved.guest_id == NO_GUEST_ID:
        terms.append(event.c.guest_id.is_(None))
    elif resolved.guest_id is not None:
        terms.append(event.c.guest_id == resolved.guest_id)
    for column, value in (
        (event.c.kind, resolved.kind),
        (event.c.action, resolved.action),
        (event.c.source, resolved.source),
    ):
        if value is not None:
            terms.append(column == value)
    return terms


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    host: str
    boot_id: str
    source: str
    seq: int
    time: dt.datetime
    received_at: dt.datetime
    kind: str
    comm: str
    tid: int
    tgid: int | None
    address: str | None
    count: int
    action: str
    guest: str | None
    vcpu: int | None
    vmm: str | None


# Exactly the Event fields of the API, in order: the JSON keys and the CSV header.
EVENT_COLUMNS: tuple[str, ...] = tuple(EventRow.__dataclass_fields__)

_SELECT_COLUMNS: tuple[KeyedColumnElement[object], ...] = (
    event.c.id,
    host.c.name.label("host"),
    event.c.boot_id,
    event.c.source,
    event.c.seq,
    event.c.time,
    event.c.received_at,
    event.c.kind,
    event.c.comm,
    event.c.tid,
    event.c.tgid,
    event.c.address,
    event.c.count,
    event.c.action,
    guest.c.name.label("guest"),
    event.c.vcpu,
    event.c.vmm,
)


@dataclass(frozen=True, slots=True)
class EventPage:
    items: list[EventRow]
    next_cursor: str | None


def list_events(
    conn: Connection,
    resolved: Resolved,
    *,
    since: dt.datetime,
    until: dt.datetime,
    limit: int,
    after: Cursor | None = None,
) -> EventPage:
    """Events with since <= time < until, newest first, at most `limit`, after `after`."""
    if resolved.nothing:
        return EventPage([], None)
    position: ColumnElement[bool] = true()
    if after is not None:
        position = or_(
            event.c.time < after.time,
            and_(event.c.time == after.time, event.c.id < after.id),
        )
    query = (
        select(*_SELECT_COLUMNS)
        .select_from(
            event.join(host, host.c.id == event.c.host_id).outerjoin(guest, guest.c.id == event.c.guest_id)
        )
        .where(event.c.time >= since, event.c.time < until, position, *event_conditions(resolved))
        .order_by(event.c.time.desc(), event.c.id.desc())
        .limit(limit + 1)  # one more tells whether a next page exists
    )
    rows = [EventRow(**row._mapping) for row in conn.execute(query)]
    if len(rows) <= limit:
        return EventPage(rows, None)
    rows = rows[:limit]
    last = rows[-1]
    return EventPage(rows, encode_cursor(last.time, last.id))


def iter_all_events(
    engine: Engine,
    resolved: Resolved,
    *,
    since: dt.datetime,
    until: dt.datetime,
    page_size: int = 1000,
) -> Iterator[EventRow]:
    """Every event of the filter, newest first, one short connection per page.

    For streaming (CSV): no connection or transaction is held while the client reads, so a
    slow download never pins a snapshot or blocks SQLite's writer; the keyset keeps the pages
    consistent with each other.
    """
    after: Cursor | None = None
    while True:
        with engine.connect() as conn:
            page = list_events(conn, resolved, since=since, until=until, limit=page_size, after=after)
        yield from page.items
        if page.next_cursor is None:
            return
        last = page.items[-1]
        after = Cursor(last.time, last.id)
