"""Guests as the API shows them: the `guest` row plus what it did in a range.

A guest is known by name (ingest keys `guest` on it) and can move between hosts, so the hosts
it ran on come from the events (`event.host_id`, via the rollups), not from `last_host_id`.
`killed` means a SIGBUS killed it at `killed_at` (the last such kill; the host was in fatal
mode, docs/kernel.md). Last host, last action and kill follow only sightings of the guest's
identity (name and uuid: app/ingest/write._guest_upsert); `sightings` shows each host's own
view (`guest_host`), namesakes included and marked (#14).

Lists are pages (#14: 40,000 guests made one answer hundreds of megabytes): ordered by name
(keyset on the unique name) or ranked by events in the range (keyset on events desc, id), with
the range totals computed for the page's guests only when ordered by name.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Row, func, select

from app.store.cursor import NameCursor, encode_name_cursor
from app.store.events import NO_GUEST_ID, Resolved
from app.store.ranking import busiest
from app.store.series import range_totals
from app.store.tables import event, guest, guest_host, host

AddressSpace = Literal["guest-kernel", "guest-user"]
GuestSort = Literal["name", "events"]
TOP_ADDRESSES = 10
MAX_SIGHTINGS = 100  # hosts shown in one guest's sightings, most recent first


@dataclass(frozen=True, slots=True)
class GuestView:
    name: str
    uuid: str | None
    vmm: str
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    last_host: str | None
    last_action: str | None
    killed: bool
    killed_at: dt.datetime | None
    killed_by: str | None  # kernel_line | tracefs | vmm_exit (#16)
    events: int
    hosts: list[str]


@dataclass(frozen=True, slots=True)
class AddressCount:
    address: str
    count: int
    space: AddressSpace


@dataclass(frozen=True, slots=True)
class Sighting:
    """What one host reported of the guest name, written by that host alone."""

    host: str
    uuid: str | None
    vmm: str
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    last_action: str | None
    killed_at: dt.datetime | None
    same_guest: bool  # the guest's identity (name and uuid); False: a namesake


@dataclass(frozen=True, slots=True)
class GuestDetail:
    guest: GuestView
    actions: dict[str, int]
    top_addresses: list[AddressCount]
    sightings: list[Sighting]


@dataclass(frozen=True, slots=True)
class GuestPage:
    items: list[GuestView]
    next_cursor: str | None


def address_space(address: str) -> AddressSpace:
    """guest-kernel for the canonical upper half (bit 63 set, `0xffff...`), else guest-user.

    Bit 63 separates the halves under both 4- and 5-level paging; a trap RIP in the upper
    half is guest kernel code (docs/kernel.md).
    """
    try:
        value = int(address, 16)
    except ValueError:
        return "guest-user"
    return "guest-kernel" if value >= 1 << 63 else "guest-user"


def _select_guests() -> Any:
    return select(guest, host.c.name.label("last_host")).select_from(
        guest.outerjoin(host, host.c.id == guest.c.last_host_id)
    )


def _view(row: Row[Any], events: int, hosts: list[str]) -> GuestView:
    return GuestView(
        name=row.name,
        uuid=row.uuid,
        vmm=row.vmm,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        last_host=row.last_host,
        last_action=row.last_action,
        killed=row.killed_at is not None,
        killed_at=row.killed_at,
        killed_by=row.killed_by if row.killed_at is not None else None,
        events=events,
        hosts=hosts,
    )


def _per_guest(
    conn: Connection, resolved: Resolved, since: dt.datetime, until: dt.datetime
) -> tuple[dict[int, int], dict[int, list[str]]]:
    totals = range_totals(conn, resolved, since=since, until=until, by=("guest_id", "host_id"))
    events: dict[int, int] = defaultdict(int)
    host_ids: dict[int, set[int]] = defaultdict(set)
    for (guest_id, host_id), count in totals.items():
        assert isinstance(guest_id, int) and isinstance(host_id, int)
        events[guest_id] += count
        if count > 0:
            host_ids[guest_id].add(host_id)
    all_ids = sorted({h for ids in host_ids.values() for h in ids})
    names: dict[int, str] = (
        dict(conn.execute(select(host.c.id, host.c.name).where(host.c.id.in_(all_ids))).all())
        if all_ids
        else {}
    )
    hosts = {g: sorted(names[h] for h in ids if h in names) for g, ids in host_ids.items()}
    return events, hosts


def list_guests(
    conn: Connection,
    *,
    since: dt.datetime,
    until: dt.datetime,
    host_name: str | None = None,
    limit: int = 100,
    after: NameCursor | None = None,
    sort: GuestSort = "name",
) -> GuestPage:
    """One page of guests (with `host_name`: those that host ever reported).

    sort="name": every guest, by name. sort="events": the guests with events in the range,
    most first (then by id). Figures are the guest's own across all hosts either way.
    """
    host_id: int | None = None
    if host_name is not None:
        host_id = conn.execute(select(host.c.id).where(host.c.name == host_name)).scalar()
        if host_id is None:
            return GuestPage([], None)
    on_host = select(guest_host.c.guest_id).where(guest_host.c.host_id == host_id)
    if sort == "events":
        return _ranked_page(conn, since, until, host_id, limit, after)
    query = _select_guests()
    if host_id is not None:
        query = query.where(guest.c.id.in_(on_host))
    if after is not None:
        query = query.where(guest.c.name > after.name)
    rows = conn.execute(query.order_by(guest.c.name).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    events, hosts = _per_guest(conn, Resolved(guest_ids=tuple(r.id for r in rows)), since, until)
    views = [_view(row, events.get(row.id, 0), hosts.get(row.id, [])) for row in rows]
    cursor = encode_name_cursor(NameCursor(views[-1].name)) if more and views else None
    return GuestPage(views, cursor)


def _ranked_page(
    conn: Connection,
    since: dt.datetime,
    until: dt.datetime,
    host_id: int | None,
    limit: int,
    after: NameCursor | None,
) -> GuestPage:
    totals = range_totals(conn, Resolved(), since=since, until=until, by=("guest_id",))
    allowed: set[int] | None = None
    if host_id is not None:
        allowed = set(
            conn.execute(select(guest_host.c.guest_id).where(guest_host.c.host_id == host_id)).scalars()
        )

    def keep(gid: int) -> bool:
        return gid != NO_GUEST_ID and (allowed is None or gid in allowed)

    page, more = busiest(totals, keep, after, limit)
    ids = [gid for gid, _ in page]
    rows = {r.id: r for r in conn.execute(_select_guests().where(guest.c.id.in_(ids)))} if ids else {}
    _, hosts = _per_guest(conn, Resolved(guest_ids=tuple(ids)), since, until) if ids else ({}, {})
    views = [_view(rows[gid], events, hosts.get(gid, [])) for gid, events in page if gid in rows]
    cursor = None
    if more and page:
        gid, events = page[-1]
        cursor = encode_name_cursor(NameCursor(rows[gid].name if gid in rows else "", events, gid))
    return GuestPage(views, cursor)


def get_guest(conn: Connection, name: str, *, since: dt.datetime, until: dt.datetime) -> GuestDetail | None:
    row = conn.execute(_select_guests().where(guest.c.name == name)).one_or_none()
    if row is None:
        return None
    resolved = Resolved(guest_id=row.id)
    events, hosts = _per_guest(conn, resolved, since, until)
    actions: dict[str, int] = {}
    for (action,), count in range_totals(conn, resolved, since=since, until=until, by=("action",)).items():
        if count > 0:
            actions[str(action)] = count
    total = func.sum(event.c.count)
    top = conn.execute(
        select(event.c.address, total)
        .where(
            event.c.guest_id == row.id,
            event.c.time >= since,
            event.c.time < until,
            event.c.address.is_not(None),
        )
        .group_by(event.c.address)
        .order_by(total.desc(), event.c.address)
        .limit(TOP_ADDRESSES)
    )
    sightings = conn.execute(
        select(guest_host, host.c.name.label("host"))
        .select_from(guest_host.join(host, host.c.id == guest_host.c.host_id))
        .where(guest_host.c.guest_id == row.id)
        .order_by(guest_host.c.last_seen_at.desc(), host.c.name)
        .limit(MAX_SIGHTINGS)
    ).all()
    return GuestDetail(
        guest=_view(row, events.get(row.id, 0), hosts.get(row.id, [])),
        actions=dict(sorted(actions.items(), key=lambda kv: (-kv[1], kv[0]))),
        top_addresses=[AddressCount(address, int(count), address_space(address)) for address, count in top],
        sightings=[
            Sighting(
                host=s.host,
                uuid=s.uuid,
                vmm=s.vmm,
                first_seen_at=s.first_seen_at,
                last_seen_at=s.last_seen_at,
                last_action=s.last_action,
                killed_at=s.killed_at,
                same_guest=s.uuid == row.uuid,
            )
            for s in sightings
        ],
    )
