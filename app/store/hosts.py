"""Hosts as the API shows them: the `host` row, its status, and what happened on it in a range.

The row holds the current facts (ingest keeps them); the range adds event totals and guests
seen (app/store/series.range_totals: rollups plus sub-minute edges) and, for one host, the
`host_state` history. Status comes from the one rule in app/store/status.py.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Row, select

from app.store.cursor import NameCursor, encode_name_cursor
from app.store.events import NO_GUEST_ID, Resolved
from app.store.ranking import busiest
from app.store.series import range_totals
from app.store.status import Breaks, HostStatus, Status, host_status
from app.store.tables import guest, host, host_state


@dataclass(frozen=True, slots=True)
class StatusRule:
    """The settings the status rule reads, and the clock it compares against."""

    now: dt.datetime
    silent_after_s: float
    breaks: Breaks = ()  # the backend's recent breaks: no host's silence (app/store/backend_break.py)


@dataclass(frozen=True, slots=True)
class HostView:
    name: str
    boot_id: str
    kernel: str
    cpu_model: str
    agent_version: str
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime | None
    status: Status
    reason: str
    needs_action: bool
    verdict: Status
    verdict_details: dict[str, Any]
    verdict_since: dt.datetime | None
    mode: str | None
    ratelimit: int | None
    mitigate: int | None
    sld_supported: bool | None
    bld_supported: bool | None
    cpus_total: int
    cpus_on: int
    cpus_off: int
    cpus_error: int
    events: int
    guests: int
    health: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class CpuView:
    cpu: int
    test_ctrl: int | None
    sld_on: bool | None
    bld_on: bool | None
    error: str | None


@dataclass(frozen=True, slots=True)
class StateView:
    observed_at: dt.datetime
    boot_id: str
    kernel: str
    mode: str
    ratelimit: int | None
    mitigate: int | None
    sld_supported: bool
    bld_supported: bool
    cpus_on: int
    cpus_off: int
    cpus_error: int
    verdict: str | None
    cpus: list[CpuView]


@dataclass(frozen=True, slots=True)
class HostDetail:
    host: HostView
    cpus: list[CpuView]
    states: list[StateView]
    guests: list[str]


def row_status(row: Row[Any], rule: StatusRule) -> HostStatus:
    """The status rule (app/store/status.py) applied to one `host` row."""
    return host_status(
        last_seen_at=row.last_seen_at if row.agent_reported else None,
        verdict=row.verdict,
        reason=row.verdict_reason,
        details=row.verdict_details if isinstance(row.verdict_details, dict) else None,
        since=row.verdict_since,
        now=rule.now,
        silent_after_s=rule.silent_after_s,
        breaks=rule.breaks,
    )


def _view(row: Row[Any], rule: StatusRule, events: int, guests: int) -> HostView:
    verdict = row_status(row, rule)
    return HostView(
        name=row.name,
        boot_id=row.boot_id,
        kernel=row.kernel,
        cpu_model=row.cpu_model,
        agent_version=row.agent_version,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at if row.agent_reported else None,  # no agent report: none
        status=verdict.status,
        reason=verdict.reason,
        needs_action=verdict.needs_action,
        verdict=verdict.verdict,
        verdict_details=verdict.details,
        verdict_since=row.verdict_since,
        mode=row.mode,
        ratelimit=row.ratelimit,
        mitigate=row.mitigate,
        sld_supported=row.sld_supported,
        bld_supported=row.bld_supported,
        cpus_total=row.cpus_total,
        cpus_on=row.cpus_on,
        cpus_off=row.cpus_off,
        cpus_error=row.cpus_error,
        events=events,
        guests=guests,
        health=row.health if isinstance(row.health, dict) else None,
    )


def cpu_views(cpus: object) -> list[CpuView]:
    """The per-CPU list as ingest stored it (JSON), tolerant of missing keys."""
    if not isinstance(cpus, list):
        return []
    out = []
    for item in cpus:
        if isinstance(item, dict) and isinstance(item.get("cpu"), int):
            out.append(
                CpuView(
                    cpu=item["cpu"],
                    test_ctrl=item.get("test_ctrl"),
                    sld_on=item.get("sld_on"),
                    bld_on=item.get("bld_on"),
                    error=item.get("error"),
                )
            )
    return sorted(out, key=lambda c: c.cpu)


def _per_host(
    conn: Connection, resolved: Resolved, since: dt.datetime, until: dt.datetime
) -> tuple[dict[int, int], dict[int, set[int]]]:
    events: dict[int, int] = defaultdict(int)
    guests: dict[int, set[int]] = defaultdict(set)
    totals = range_totals(conn, resolved, since=since, until=until, by=("host_id", "guest_id"))
    for (host_id, guest_id), count in totals.items():
        assert isinstance(host_id, int) and isinstance(guest_id, int)
        events[host_id] += count
        if guest_id != NO_GUEST_ID and count > 0:
            guests[host_id].add(guest_id)
    return events, guests


@dataclass(frozen=True, slots=True)
class HostPage:
    items: list[HostView]
    next_cursor: str | None


HostSort = Literal["name", "events"]


@dataclass(frozen=True, slots=True)
class HostFilter:
    """Which hosts a list keeps, by the status rule: `needs_action` true or false, and/or a
    status among `statuses`. Nothing set: every host."""

    needs_action: bool | None = None
    statuses: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.needs_action is None and self.statuses is None

    def keeps(self, status: HostStatus) -> bool:
        return (self.needs_action is None or status.needs_action == self.needs_action) and (
            self.statuses is None or status.status in self.statuses
        )


EVERY_HOST = HostFilter()


def list_hosts(
    conn: Connection,
    *,
    since: dt.datetime,
    until: dt.datetime,
    rule: StatusRule,
    limit: int = 100,
    after: NameCursor | None = None,
    only: HostFilter = EVERY_HOST,
    sort: HostSort = "name",
) -> HostPage:
    """One page of hosts, range totals for that page only.

    sort="name": by name (keyset on the unique name). sort="events": the hosts with events in
    the range, most first (then by id, the order hosts were first seen): in a fleet of 10,000 the
    busiest are not among the first page of names. `only` keeps the hosts whose status it
    names, counted by the page and its cursor."""
    if sort == "events":
        return _ranked_page(conn, since, until, rule, limit, after, only)
    query = select(host)
    if after is not None:
        query = query.where(host.c.name > after.name)
    if not only.everything:
        ids = _ids_matching(conn, rule, after, limit + 1, only)
        query = query.where(host.c.id.in_(ids))
    rows = conn.execute(query.order_by(host.c.name).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    views = _views(conn, rows, rule, since, until)
    return HostPage(views, encode_name_cursor(NameCursor(views[-1].name)) if more and views else None)


def _views(
    conn: Connection, rows: Sequence[Row[Any]], rule: StatusRule, since: dt.datetime, until: dt.datetime
) -> list[HostView]:
    events, guests = _per_host(conn, Resolved(host_ids=tuple(r.id for r in rows)), since, until)
    return [_view(row, rule, events.get(row.id, 0), len(guests.get(row.id, ()))) for row in rows]


def _ranked_page(
    conn: Connection,
    since: dt.datetime,
    until: dt.datetime,
    rule: StatusRule,
    limit: int,
    after: NameCursor | None,
    only: HostFilter,
) -> HostPage:
    totals = range_totals(conn, Resolved(), since=since, until=until, by=("host_id",))
    kept: set[int] | None = None
    if not only.everything:
        kept = {row.id for row in conn.execute(select(host.c.id, *_STATUS_COLUMNS)) if _kept(row, only, rule)}
    page, more = busiest(totals, lambda hid: kept is None or hid in kept, after, limit)
    ids = [hid for hid, _ in page]
    rows = {r.id: r for r in conn.execute(select(host).where(host.c.id.in_(ids)))} if ids else {}
    views = _views(conn, [rows[hid] for hid in ids if hid in rows], rule, since, until)
    cursor = None
    if more and page:
        hid, events = page[-1]
        cursor = encode_name_cursor(NameCursor(rows[hid].name if hid in rows else "", events, hid))
    return HostPage(views, cursor)


def brief_status(
    last_seen_at: dt.datetime | None, agent_reported: bool, verdict: str | None, rule: StatusRule
) -> HostStatus:
    """The status rule from the three columns it decides by (no reason, details or since):
    what the summary counts and the host filters walk, without reading whole rows."""
    return host_status(
        last_seen_at=last_seen_at if agent_reported else None,
        verdict=verdict,
        reason=None,
        details=None,
        since=None,
        now=rule.now,
        silent_after_s=rule.silent_after_s,
        breaks=rule.breaks,
    )


# What brief_status decides by: a host filter reads these, not whole rows.
_STATUS_COLUMNS = (host.c.last_seen_at, host.c.agent_reported, host.c.verdict)


def _kept(row: Any, only: HostFilter, rule: StatusRule) -> bool:  # a row of _STATUS_COLUMNS
    return only.keeps(brief_status(row.last_seen_at, row.agent_reported, row.verdict, rule))


FILTER_SCAN_CHUNK = 5000  # hosts whose status one query of _ids_matching reads


def _ids_matching(
    conn: Connection, rule: StatusRule, after: NameCursor | None, wanted: int, only: HostFilter
) -> list[int]:
    """The ids of the first `wanted` hosts by name after `after` that `only` keeps. The status
    is the rule's, in Python, from the few columns it reads (as the summary's count is), so a
    filtered page scans the hosts' names in chunks rather than whole rows: the fleet view lists
    every host that needs action or is silent, not those among the first page of names."""
    found: list[int] = []
    last = after.name if after is not None else None
    while len(found) < wanted:
        query = select(host.c.id, host.c.name, *_STATUS_COLUMNS)
        if last is not None:
            query = query.where(host.c.name > last)
        chunk = conn.execute(query.order_by(host.c.name).limit(FILTER_SCAN_CHUNK)).all()
        for row in chunk:
            if _kept(row, only, rule):
                found.append(row.id)
                if len(found) == wanted:
                    break
        if len(chunk) < FILTER_SCAN_CHUNK:
            break
        last = chunk[-1].name
    return found


@dataclass(frozen=True, slots=True)
class VerdictView:
    host: str
    status: HostStatus
    observed_at: dt.datetime | None  # the sample the verdict is about


def get_verdict(conn: Connection, name: str, *, rule: StatusRule) -> VerdictView | None:
    row = conn.execute(select(host).where(host.c.name == name)).one_or_none()
    if row is None:
        return None
    return VerdictView(row.name, row_status(row, rule), row.state_observed_at)


def get_host(
    conn: Connection, name: str, *, since: dt.datetime, until: dt.datetime, rule: StatusRule
) -> HostDetail | None:
    row = conn.execute(select(host).where(host.c.name == name)).one_or_none()
    if row is None:
        return None
    events, guests = _per_host(conn, Resolved(host_id=row.id), since, until)
    guest_ids = guests.get(row.id, set())
    names = (
        sorted(conn.execute(select(guest.c.name).where(guest.c.id.in_(sorted(guest_ids)))).scalars())
        if guest_ids
        else []
    )
    return HostDetail(
        host=_view(row, rule, events.get(row.id, 0), len(guest_ids)),
        cpus=cpu_views(row.cpus),
        states=_states(conn, row.id, since, until),
        guests=names,
    )


MAX_STATES = 1000  # state changes one host answer lists: the newest in the range (#14)


def _states(conn: Connection, host_id: int, since: dt.datetime, until: dt.datetime) -> list[StateView]:
    """host_state rows in range, oldest first, led by the one in force at `since`.

    At most MAX_STATES changes: when the range holds more (a host flapping for weeks), the
    newest are listed, led by the one in force before the first of them.
    """
    newest_first = conn.execute(
        select(host_state)
        .where(
            host_state.c.host_id == host_id,
            host_state.c.observed_at >= since,
            host_state.c.observed_at < until,
        )
        .order_by(host_state.c.observed_at.desc(), host_state.c.id.desc())
        .limit(MAX_STATES + 1)
    ).all()
    within = list(reversed(newest_first[:MAX_STATES]))
    if len(newest_first) > MAX_STATES:
        before = newest_first[MAX_STATES:]
    else:
        before = conn.execute(
            select(host_state)
            .where(host_state.c.host_id == host_id, host_state.c.observed_at < since)
            .order_by(host_state.c.observed_at.desc(), host_state.c.id.desc())
            .limit(1)
        ).all()
    return [
        StateView(
            observed_at=r.observed_at,
            boot_id=r.boot_id,
            kernel=r.kernel,
            mode=r.mode,
            ratelimit=r.ratelimit,
            mitigate=r.mitigate,
            sld_supported=r.sld_supported,
            bld_supported=r.bld_supported,
            cpus_on=r.cpus_on,
            cpus_off=r.cpus_off,
            cpus_error=r.cpus_error,
            verdict=r.verdict,
            cpus=cpu_views(r.cpus),
        )
        for r in [*before, *within]
    ]
