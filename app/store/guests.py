"""Guests as the API shows them: the `guest` row plus what it did in a range.

A guest is known by name (ingest keys `guest` on it) and can move between hosts, so the hosts
it ran on come from the events (`event.host_id`, via the rollups), not from `last_host_id`.
`killed` means a SIGBUS killed it at `killed_at` (the last such kill; the host was in fatal
mode, DESIGN.md §1).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Row, func, or_, select

from app.store.events import Resolved
from app.store.series import range_totals
from app.store.tables import event, guest, host

AddressSpace = Literal["guest-kernel", "guest-user"]
TOP_ADDRESSES = 10


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
class GuestDetail:
    guest: GuestView
    actions: dict[str, int]
    top_addresses: list[AddressCount]


def address_space(address: str) -> AddressSpace:
    """guest-kernel for the canonical upper half (bit 63 set, `0xffff...`), else guest-user.

    Bit 63 separates the halves under both 4- and 5-level paging; a trap RIP in the upper
    half is guest kernel code (DESIGN.md §1).
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
    conn: Connection, *, since: dt.datetime, until: dt.datetime, host_name: str | None = None
) -> list[GuestView]:
    """Every guest (or, with `host_name`, those with events on it in range or last seen on it).

    Figures are the guest's own across all hosts; sorted by events in range, most first.
    """
    events, hosts = _per_guest(conn, Resolved(), since, until)
    query = _select_guests()
    if host_name is not None:
        host_id = conn.execute(select(host.c.id).where(host.c.name == host_name)).scalar()
        if host_id is None:
            return []
        on_host = {g for g, names in hosts.items() if host_name in names}
        query = query.where(or_(guest.c.last_host_id == host_id, guest.c.id.in_(sorted(on_host))))
    views = [_view(row, events.get(row.id, 0), hosts.get(row.id, [])) for row in conn.execute(query)]
    views.sort(key=lambda g: (-g.events, g.name))
    return views


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
    return GuestDetail(
        guest=_view(row, events.get(row.id, 0), hosts.get(row.id, [])),
        actions=dict(sorted(actions.items(), key=lambda kv: (-kv[1], kv[0]))),
        top_addresses=[AddressCount(address, int(count), address_space(address)) for address, count in top],
    )
