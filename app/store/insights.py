"""The three answers of issue 16 §2-§4, read from the tables; the rules are app/insights/*.

- `throttling`: vCPU time lost to misery mode. The state in force at each moment comes from
  `host_state` (a row per change; `state_spans` keeps only changes of kernel, mode, mitigate
  and support, with a window function), never from the host's current row: a host that turned
  mitigate off yesterday still paid for last week. Spans with the same answer merge
  (`misery_stretches`). Counts come from the rollups by source (series.range_totals: whole
  hours from rollup_1h, minutes from rollup_1m, sub-minute edges from `event`): one fleet-wide
  read for every host with one answer over the window, one read per stretch for the few whose
  misery mode came or went, none for hosts that never throttled.
- `fatal_readiness`: who would have been killed (`read_offenders`). Guests from the rollups
  (counts by source, the minute of the last trap), the exact last trap looked up in `event`
  only for the rows shown and each host's newest; host processes, which only `event` names,
  from the raw rows of the hosts the rollups say have some.
  Cost: `state_spans` reads every host_state row of the window (the index holds host_id and
  observed_at only); a covering index with kernel, mode, mitigate would make it index-only.
- `kernel_eras`: each host's era NOW (its latest report: an upgrade plan is about the kernel it
  runs), and over the window the offenders an upgrade to 5.19+ would start throttling.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from app.insights.cost import Cost, Tally, throttling_cost
from app.insights.eras import (
    MISERY_SINCE,
    MISERY_SLEEP_MS,
    Era,
    KernelEra,
    kernel_era,
    misery_in_force,
    parse_release,
)
from app.insights.fatal import WATCHING_MODES, Readiness, host_readiness, killed_under_fatal
from app.rollups.buckets import bucket_start
from app.store.events import HOST_GUEST_KEY, NO_GUEST_ID, Resolved
from app.store.series import Dimension, range_totals
from app.store.tables import event, guest, host, host_state, rollup_1h, rollup_1m

# Actions of split-lock traps that went through split_lock_warn() and so paid misery's sleep
# when it was on (sigbus, reflect, oops never reach it; ratelimit is a bus-lock action).
THROTTLED_PATH_ACTIONS = frozenset({"throttle", "warn", "unknown"})
TRUE_COUNT_SOURCE = "tracefs"  # kprobe hits; kmsg and import lines are first sightings


@dataclass(frozen=True, slots=True)
class HostRow:
    id: int
    name: str
    kernel: str
    mode: str | None
    mitigate: int | None
    sld_supported: bool | None
    bld_supported: bool | None
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime


def read_hosts(conn: Connection, names: Sequence[str] | None) -> tuple[list[HostRow], list[str]]:
    """The hosts named (all when None), by name, and the names that match no host."""
    query = select(
        host.c.id,
        host.c.name,
        host.c.kernel,
        host.c.mode,
        host.c.mitigate,
        host.c.sld_supported,
        host.c.bld_supported,
        host.c.first_seen_at,
        host.c.last_seen_at,
    ).order_by(host.c.name)
    if names is not None:
        query = query.where(host.c.name.in_(sorted(set(names))))
    rows = [HostRow(*row) for row in conn.execute(query)]
    unknown = sorted(set(names or ()) - {r.name for r in rows})
    return rows, unknown


# ------------------------------------------------------------------ state in force over time


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of one host's window under one state; mode None: no state reported yet."""

    start: dt.datetime
    end: dt.datetime
    kernel: str | None
    mode: str | None
    mitigate: int | None
    sld_supported: bool | None


def state_spans(
    conn: Connection, host_ids: Sequence[int], since: dt.datetime, until: dt.datetime
) -> dict[int, list[Span]]:
    """Per host, [since, until) cut where kernel, mode, mitigate or support changed."""
    hs = host_state.c
    ids = sorted(set(host_ids))
    if not ids or since >= until:
        return {}
    cols = (hs.kernel, hs.mode, hs.mitigate, hs.sld_supported)
    latest = (
        select(hs.host_id, func.max(hs.observed_at).label("at"))
        .where(hs.observed_at < since, hs.host_id.in_(ids))
        .group_by(hs.host_id)
        .subquery()
    )
    before: dict[int, tuple[Any, ...]] = {}
    for host_id, _id, *values in conn.execute(
        select(hs.host_id, hs.id, *cols)
        .join(latest, and_(hs.host_id == latest.c.host_id, hs.observed_at == latest.c.at))
        .order_by(hs.host_id, hs.id)
    ):
        before[host_id] = tuple(values)  # the last of equal times wins, as ingest orders them
    # Busy warn-mode hosts write a row whenever a core flips: keep only rows that change what
    # the answers read, in SQL (LAG over each host's rows), so a week is a handful of rows.
    order = (hs.observed_at, hs.id)
    inner = (
        select(
            hs.host_id,
            hs.observed_at,
            hs.id,
            *cols,
            *(func.lag(c).over(partition_by=hs.host_id, order_by=order).label(f"p_{c.name}") for c in cols),
            func.row_number().over(partition_by=hs.host_id, order_by=order).label("n"),
        )
        .where(hs.observed_at >= since, hs.observed_at < until, hs.host_id.in_(ids))
        .subquery()
    )
    c = inner.c
    changes = conn.execute(
        select(c.host_id, c.observed_at, c.kernel, c.mode, c.mitigate, c.sld_supported)
        .where(
            or_(
                c.n == 1,
                c.kernel != c.p_kernel,
                c.mode != c.p_mode,
                c.mitigate.is_distinct_from(c.p_mitigate),
                c.sld_supported != c.p_sld_supported,
            )
        )
        .order_by(c.host_id, c.observed_at, c.id)
    ).all()
    starts: dict[int, list[tuple[dt.datetime, tuple[Any, ...]]]] = defaultdict(list)
    for host_id in ids:
        starts[host_id].append((since, before.get(host_id, (None, None, None, None))))
    for row in changes:
        starts[row[0]].append((row[1], tuple(row[2:])))
    spans: dict[int, list[Span]] = {}
    for host_id, points in starts.items():
        out: list[Span] = []
        for i, (start, state) in enumerate(points):
            end = points[i + 1][0] if i + 1 < len(points) else until
            if end <= start:
                continue
            if out and (out[-1].kernel, out[-1].mode, out[-1].mitigate, out[-1].sld_supported) == state:
                out[-1] = Span(out[-1].start, end, *state)  # the window's first row repeats the one before
            else:
                out.append(Span(start, end, *state))
        spans[host_id] = out
    return spans


# ------------------------------------------------------------------------------ §2 throttling


@dataclass(frozen=True, slots=True)
class GuestCost:
    host: str
    guest: str  # HOST_GUEST_KEY for plain host processes
    cost: Cost


@dataclass(frozen=True, slots=True)
class HostCost:
    host: str
    cost: Cost
    misery_s: float  # seconds of the window in which misery mode was on


@dataclass(frozen=True, slots=True)
class Throttling:
    window_s: float
    total: Cost  # guests and plain host processes
    guests_total: Cost  # guests only: "guests lost N vCPU-hours"
    hosts: list[HostCost]
    more_hosts: int
    guests: list[GuestCost]
    more_guests: int


# Whether the traps of a stretch slept: True, False, None (era unknown), or BY_ACTION when no
# state was reported yet, so the action the agent derived is the only evidence.
BY_ACTION = "by_action"
Verdict = bool | None | str


@dataclass(frozen=True, slots=True)
class Stretch:
    start: dt.datetime
    end: dt.datetime
    misery: Verdict


def _verdict(span: Span) -> Verdict:
    if span.mode is None or span.kernel is None:
        return BY_ACTION
    return misery_in_force(span.kernel, span.mode, span.mitigate)


def _slept(verdict: Verdict, action: str) -> bool | None:
    """Did a split-lock trap with `action` sleep 10 ms under this verdict?"""
    if verdict == BY_ACTION:
        return {"throttle": True, "unknown": None}.get(action, False)
    return verdict if verdict is None else bool(verdict)


def misery_stretches(spans: Sequence[Span]) -> list[Stretch]:
    """The spans with the same answer merged: an upgrade from 6.6 to 6.8 with mitigate=1 is one
    stretch of misery mode, so only a host whose misery mode came or went needs cutting."""
    out: list[Stretch] = []
    for span in spans:
        verdict = _verdict(span)
        if out and out[-1].misery == verdict and out[-1].end == span.start:
            out[-1] = Stretch(out[-1].start, span.end, verdict)
        else:
            out.append(Stretch(span.start, span.end, verdict))
    return out


def _tally_rows(
    tallies: dict[tuple[int, int], Tally],
    counts: dict[tuple[object, ...], int],
    lines: dict[tuple[object, ...], int],
    verdicts: Mapping[int, Verdict],
    host_id_of: Any,
) -> None:
    for key, seen in lines.items():
        host_id, guest_id, source, action = host_id_of(key)
        if host_id not in verdicts or action not in THROTTLED_PATH_ACTIONS or not seen:
            continue
        slept = _slept(verdicts[host_id], action)
        if slept is False:
            continue
        if slept is None:
            add = Tally(uncertain=seen)
        elif source == TRUE_COUNT_SOURCE:
            add = Tally(counted=counts.get(key, 0))
        else:
            add = Tally(sighted=seen)
        tallies[(host_id, guest_id)] = tallies.get((host_id, guest_id), Tally()) + add


def _rank(cost: Cost) -> tuple[float, int, int]:
    return (-(cost.vcpu_seconds or 0.0), -cost.uncounted_sightings, 0 if cost.reason is None else 1)


def _tallies(
    conn: Connection, host_ids: Sequence[int], since: dt.datetime, until: dt.datetime, *, per_guest: bool
) -> tuple[dict[tuple[int, int], Tally], dict[int, list[Stretch]]]:
    """Throttled traps per (host, guest) over the window, and each host's misery stretches.
    Without `per_guest`, one tally per host (guest NO_GUEST_ID): a host's figure depends only
    on its sums (see host_throttling), and a week of a 10,000-host fleet is 100,000s of
    (host, guest) keys against a few per host (#13)."""
    stretches = {h: misery_stretches(s) for h, s in state_spans(conn, host_ids, since, until).items()}
    tallies: dict[tuple[int, int], Tally] = {}
    guest_dim: tuple[Dimension, ...] = ("guest_id",) if per_guest else ()
    # One read for every host with one answer over the whole window (no read at all for those
    # that never throttled: mitigate 0, fatal, off, a kernel before 5.19).
    steady = {h: s[0].misery for h, s in stretches.items() if len(s) == 1 and s[0].misery is not False}
    if steady:
        resolved = Resolved(host_id=next(iter(steady)) if len(steady) == 1 else None, kind="split_lock")
        by: tuple[Dimension, ...] = ("host_id", *guest_dim, "source", "action")
        counts = range_totals(conn, resolved, since=since, until=until, by=by)
        lines = range_totals(conn, resolved, since=since, until=until, by=by, measure="events")
        lines = {k: v for k, v in lines.items() if k[0] in steady}
        _tally_rows(tallies, counts, lines, steady, lambda k: k if per_guest else (k[0], NO_GUEST_ID, *k[1:]))
    # A host whose misery mode came or went in the window is read stretch by stretch, but only
    # if it took a split-lock trap at all: one read says which. A fleet whose hosts were first
    # seen in the window has two stretches per host (nothing known, then their state); 1,000
    # quiet ones were 4,000 reads and 6 s of the fleet view (#13).
    cut = [h for h, s in stretches.items() if len(s) > 1 and any(x.misery is not False for x in s)]
    trapped = (
        range_totals(
            conn, Resolved(kind="split_lock"), since=since, until=until, by=("host_id",), measure="events"
        )
        if cut
        else {}
    )
    for host_id in cut:
        if not trapped.get((host_id,)):
            continue
        for stretch in stretches[host_id]:
            if stretch.misery is False:
                continue
            resolved = Resolved(host_id=host_id, kind="split_lock")
            by2: tuple[Dimension, ...] = (*guest_dim, "source", "action")
            counts = range_totals(conn, resolved, since=stretch.start, until=stretch.end, by=by2)
            lines = range_totals(
                conn, resolved, since=stretch.start, until=stretch.end, by=by2, measure="events"
            )
            _tally_rows(
                tallies,
                counts,
                lines,
                {host_id: stretch.misery},
                lambda k, h=host_id: (h, *k) if per_guest else (h, NO_GUEST_ID, *k),
            )
    return tallies, stretches


def host_throttling(
    conn: Connection, host_ids: Sequence[int], *, since: dt.datetime, until: dt.datetime
) -> dict[int, float | None]:
    """vCPU-seconds misery mode took per host, as throttling()'s hosts say (hosts with no
    throttled trap: absent, i.e. 0; None: only kernel-log sightings or an unknown era, no count).
    A host's figure needs only its own sums: its true counts add up across guests, and only
    when it has none do its sightings (or uncertain traps) decide that no figure is known."""
    tallies, _ = _tallies(conn, sorted(set(host_ids)), since, until, per_guest=False)
    window_s = (until - since).total_seconds()
    return {host_id: throttling_cost(tally, window_s).vcpu_seconds for (host_id, _), tally in tallies.items()}


def throttling(
    conn: Connection, hosts: Sequence[HostRow], *, since: dt.datetime, until: dt.datetime, limit: int
) -> Throttling:
    window_s = (until - since).total_seconds()
    by_id = {h.id: h for h in hosts}
    tallies, stretches = _tallies(conn, list(by_id), since, until, per_guest=True)

    guest_names = guest_names_by_id(conn, (g for _, g in tallies if g != NO_GUEST_ID))
    guests: list[GuestCost] = []
    per_host: dict[int, Tally] = defaultdict(Tally)
    guests_only = Tally()
    for (host_id, guest_id), tally in tallies.items():
        name = (
            HOST_GUEST_KEY if guest_id == NO_GUEST_ID else guest_names.get(guest_id, f"(guest #{guest_id})")
        )
        guests.append(GuestCost(by_id[host_id].name, name, throttling_cost(tally, window_s)))
        # A guest with true counts: its kernel-log lines are the same traps, not extra ones.
        distinct = Tally(tally.counted, 0 if tally.counted else tally.sighted, tally.uncertain)
        per_host[host_id] += distinct
        if guest_id != NO_GUEST_ID:
            guests_only += distinct
    host_costs = [
        HostCost(
            by_id[host_id].name,
            throttling_cost(tally, window_s),
            sum((s.end - s.start).total_seconds() for s in stretches.get(host_id, ()) if s.misery is True),
        )
        for host_id, tally in per_host.items()
    ]
    total = throttling_cost(sum(per_host.values(), Tally()), window_s)
    guests.sort(key=lambda g: (*_rank(g.cost), g.host, g.guest))
    host_costs.sort(key=lambda h: (*_rank(h.cost), h.host))
    return Throttling(
        window_s,
        total,
        throttling_cost(guests_only, window_s),
        host_costs[:limit],
        max(0, len(host_costs) - limit),
        guests[:limit],
        max(0, len(guests) - limit),
    )


# Ids per IN list: a week of a 100,000-guest fleet names 70,000+ guests, past PostgreSQL's
# 65,535 parameters per statement (every /metrics scrape failed on it at fleet size, #13).
NAMES_PER_QUERY = 10_000


def guest_names_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    """Guest names by id, NAMES_PER_QUERY ids per statement (ids without a guest row are left out)."""
    wanted = sorted(set(ids))
    names: dict[int, str] = {}
    for i in range(0, len(wanted), NAMES_PER_QUERY):
        chunk = wanted[i : i + NAMES_PER_QUERY]
        names.update(conn.execute(select(guest.c.id, guest.c.name).where(guest.c.id.in_(chunk))).all())
    return names


# ---------------------------------------------------------------------- offenders (§3 and §4)


@dataclass(frozen=True, slots=True)
class Offender:
    host: str
    guest: str | None  # None: a plain host process, named by `comm`
    comm: str | None  # the thread of the last trap; None for a guest not looked up in `event`
    kind: str
    last_trap_at: dt.datetime
    count: int | None  # sum of tracefs counts; None: seen only in the kernel log
    sightings: int  # kernel-log (kmsg, import) lines
    sources: list[str]
    killed: bool  # it already took SIGBUS (host in fatal mode)


@dataclass
class _Acc:
    last: dt.datetime  # exact for host processes; the minute bucket for guests until refined
    comm: str
    count: int | None = None
    sightings: int = 0
    sources: set[str] = field(default_factory=set)
    killed: bool = False
    exact: bool = False


_MINUTE = dt.timedelta(minutes=1)
_HOUR = dt.timedelta(hours=1)


def read_offenders(
    conn: Connection,
    hosts: Sequence[HostRow],
    *,
    since: dt.datetime,
    until: dt.datetime,
    kinds: Sequence[str] = ("split_lock", "bus_lock"),
    actions: Iterable[str] | None = None,
    exact: int = 0,
) -> list[Offender]:
    """Every guest and host process whose traps in the window fatal mode would have killed,
    newest last trap first (unbounded: callers cut).

    Guests come from the rollups: exact counts by source (range_totals) and the minute of their
    last trap (rollup_1m, read from its covering index). The `exact` first offenders, and each
    host's newest, then get their last trap to the microsecond from `event` (one indexed look
    within that minute each). Host processes are named only in `event` (the rollups key them
    as guest 0), so they are grouped from the raw rows of the hosts the rollups say have some.
    """
    by_id = {h.id: h for h in hosts}
    if not by_id or since >= until:
        return []
    wanted = None if actions is None else set(actions)
    host_filter = next(iter(by_id)) if len(by_id) == 1 else None

    def killable(host_id: int, guest_id: int | None, kind: str, action: str) -> bool:
        h = by_id.get(host_id)
        if h is None or kind not in kinds or (wanted is not None and action not in wanted):
            return False
        return killed_under_fatal(
            kind,
            action,
            guest=guest_id is not None,
            sld_supported=h.sld_supported,
            bld_supported=h.bld_supported,
        )

    by: tuple[Dimension, ...] = ("host_id", "guest_id", "kind", "source", "action")
    resolved = Resolved(host_id=host_filter)
    counts = range_totals(conn, resolved, since=since, until=until, by=by)
    lines = range_totals(conn, resolved, since=since, until=until, by=by, measure="events")
    acc: dict[tuple[int, int | None, str, str], _Acc] = {}
    process_hosts: set[int] = set()
    for key, seen in lines.items():
        host_id, guest_id, kind, source, action = key
        assert isinstance(host_id, int) and isinstance(guest_id, int)
        kind, source, action = str(kind), str(source), str(action)
        if not seen or not killable(host_id, None if guest_id == NO_GUEST_ID else guest_id, kind, action):
            continue
        if guest_id == NO_GUEST_ID:
            process_hosts.add(host_id)
            continue
        a = acc.setdefault((host_id, guest_id, "", kind), _Acc(since, ""))
        a.sources.add(source)
        if source == TRUE_COUNT_SOURCE:
            a.count = (a.count or 0) + counts.get(key, 0)
        else:
            a.sightings += seen
        a.killed = a.killed or action == "sigbus"
    if acc:
        _last_minutes(conn, acc, host_filter, since, until)
    if process_hosts:
        _host_processes(conn, acc, sorted(process_hosts), since, until, killable)

    order = sorted(acc.items(), key=lambda kv: (-kv[1].last.timestamp(), kv[0][0], kv[0][1] or 0, kv[0][2]))
    newest_per_host: set[int] = set()
    for rank, ((host_id, guest_id, _who, kind), a) in enumerate(order):
        if not a.exact and (rank < exact or host_id not in newest_per_host):
            _refine(conn, a, host_id, guest_id, kind, since, until)
        newest_per_host.add(host_id)
    names = guest_names_by_id(conn, (g for _, g, _, _ in acc if g is not None))
    out = [
        Offender(
            host=by_id[host_id].name,
            guest=None if guest_id is None else names.get(guest_id, f"(guest #{guest_id})"),
            comm=who or a.comm or None,
            kind=kind,
            last_trap_at=a.last,
            count=a.count,
            sightings=a.sightings,
            sources=sorted(a.sources),
            killed=a.killed,
        )
        for (host_id, guest_id, who, kind), a in acc.items()
    ]
    out.sort(key=lambda o: (-o.last_trap_at.timestamp(), o.host, o.guest or "", o.comm or ""))
    return out


def _last_minutes(
    conn: Connection,
    acc: dict[tuple[int, int | None, str, str], _Acc],
    host_id: int | None,
    since: dt.datetime,
    until: dt.datetime,
) -> None:
    """The last minute bucket of each guest offender, in two steps so a 30-day window never
    reads its ~700k minute rows: the last whole hour from rollup_1h, then rollup_1m only
    inside those hours and the window's partial first and last hours."""
    key = ("host_id", "guest_id", "kind")

    def last(table: Any, *ranges: tuple[dt.datetime, dt.datetime]) -> dict[tuple[int, int, str], dt.datetime]:
        spans = [(a, b) for a, b in ranges if a < b]
        if not spans:
            return {}
        c = table.c
        query = (
            select(*(c[k] for k in key), func.max(c.bucket))
            .where(or_(*(and_(c.bucket >= a, c.bucket < b) for a, b in spans)), c.guest_id != NO_GUEST_ID)
            .group_by(*(c[k] for k in key))
        )
        if host_id is not None:
            query = query.where(c.host_id == host_id)
        found: dict[tuple[int, int, str], dt.datetime] = {}
        for row in conn.execute(query):
            if row[3] is not None:
                found[(int(row[0]), int(row[1]), str(row[2]))] = row[3]
        return found

    first_minute = bucket_start(since, 60)
    h0 = bucket_start(since, 3600)
    h0 = h0 if h0 >= since else h0 + _HOUR
    h1 = bucket_start(until, 3600)
    hours = last(rollup_1h, (h0, h1)) if h0 < h1 else {}
    ranges = [(first_minute, min(h0, until)), (max(h1, first_minute), until)]
    ranges += [(at, at + _HOUR) for at in sorted(set(hours.values()))]
    for (h, g, kind), at in last(rollup_1m, *ranges).items():
        a = acc.get((h, g, "", kind))
        if a is not None:
            a.last = max(a.last, at, since)


def _refine(
    conn: Connection,
    a: _Acc,
    host_id: int,
    guest_id: int | None,
    kind: str,
    since: dt.datetime,
    until: dt.datetime,
) -> None:
    """The exact last trap within its minute, and its thread, from `event` (index on guest_id, time)."""
    e = event.c
    start, end = max(a.last, since), min(a.last + _MINUTE, until)
    row = conn.execute(
        select(e.time, e.comm)
        .where(e.guest_id == guest_id, e.host_id == host_id, e.kind == kind, e.time >= start, e.time < end)
        .order_by(e.time.desc(), e.id.desc())
        .limit(1)
    ).first()
    if row is not None:
        a.last, a.comm = row
    a.exact = True


def _host_processes(
    conn: Connection,
    acc: dict[tuple[int, int | None, str, str], _Acc],
    host_ids: list[int],
    since: dt.datetime,
    until: dt.datetime,
    killable: Any,
) -> None:
    e = event.c
    query = (
        select(
            e.host_id, e.comm, e.kind, e.source, e.action, func.max(e.time), func.sum(e.count), func.count()
        )
        .where(
            e.host_id.in_(host_ids),
            e.time >= since,
            e.time < until,
            e.guest_id.is_(None),
            e.action.not_in(["reflect", "oops"]),
        )
        .group_by(e.host_id, e.comm, e.kind, e.source, e.action)
    )
    for host_id, comm, kind, source, action, last, total, rows in conn.execute(query):
        if not killable(host_id, None, kind, action):
            continue
        a = acc.setdefault((host_id, None, comm, kind), _Acc(last, comm, exact=True))
        a.last = max(a.last, last)
        a.sources.add(source)
        if source == TRUE_COUNT_SOURCE:
            a.count = (a.count or 0) + int(total or 0)
        else:
            a.sightings += int(rows)
        a.killed = a.killed or action == "sigbus"


# --------------------------------------------------------------------------- §3 readiness


@dataclass(frozen=True, slots=True)
class HostReadiness:
    host: str
    mode: str | None
    offenders: int
    last_offence_at: dt.datetime | None
    readiness: Readiness


@dataclass(frozen=True, slots=True)
class FatalReadiness:
    offenders: list[Offender]
    more_offenders: int
    hosts: list[HostReadiness]
    more_hosts: int
    ready: int
    not_ready: int
    unknown: int


def _watching(span: Span) -> bool:
    if span.mode not in WATCHING_MODES or not span.sld_supported or span.kernel is None:
        return False
    return kernel_era(span.kernel, span.mitigate).era != "none"


def fatal_readiness(
    conn: Connection, hosts: Sequence[HostRow], *, since: dt.datetime, until: dt.datetime, limit: int
) -> FatalReadiness:
    offenders = read_offenders(conn, hosts, since=since, until=until, exact=limit)
    spans = state_spans(conn, [h.id for h in hosts], since, until)
    per_host: dict[str, list[Offender]] = defaultdict(list)
    for o in offenders:
        per_host[o.host].append(o)
    answers: list[HostReadiness] = []
    for h in hosts:
        mine = per_host.get(h.name, [])
        watched_since: dt.datetime | None = None
        for span in reversed(spans.get(h.id, [])):
            if not _watching(span):
                break
            watched_since = span.start
        last = max((o.last_trap_at for o in mine), default=None)
        # A host whose agent went quiet proves nothing after its last report.
        seen_until = min(until, h.last_seen_at)
        if watched_since is not None and watched_since >= seen_until:
            watched_since = None
        verdict = host_readiness(
            offenders=len(mine),
            last_offence_at=last,
            mode_now=h.mode,
            watched_since=watched_since,
            until=seen_until,
        )
        answers.append(HostReadiness(h.name, h.mode, len(mine), last, verdict))
    rank = {False: 0, None: 1, True: 2}
    answers.sort(key=lambda a: (rank[a.readiness.ready], -a.offenders, a.host))
    return FatalReadiness(
        offenders[:limit],
        max(0, len(offenders) - limit),
        answers[:limit],
        max(0, len(answers) - limit),
        sum(1 for a in answers if a.readiness.ready is True),
        sum(1 for a in answers if a.readiness.ready is False),
        sum(1 for a in answers if a.readiness.ready is None),
    )


# ---------------------------------------------------------------------------- §4 kernel eras


@dataclass(frozen=True, slots=True)
class OffenderRate:
    offender: Offender
    per_hour: float  # tracefs count per hour, else kernel-log lines per hour (a floor)
    basis: str  # "tracefs count" | "kernel-log sightings"
    # At least this many vCPU-seconds per hour misery mode would take (tracefs counts only).
    throttled_s_per_hour_after_upgrade: float | None


@dataclass(frozen=True, slots=True)
class HostEra:
    host: str
    kernel: str
    mode: str | None
    mitigate: int | None
    era: KernelEra


@dataclass(frozen=True, slots=True)
class UpgradeImpact:
    host: HostEra
    offenders: list[OffenderRate]
    more: int


@dataclass(frozen=True, slots=True)
class KernelEras:
    by_era: dict[str, int]
    hosts: list[HostEra]  # every host's era, by name
    more_hosts: int
    floors: list[HostEra]
    more_floors: int
    upgrade: list[UpgradeImpact]
    more_upgrade: int
    stuck_off: list[HostEra]
    more_stuck_off: int


def _below_misery(kernel: str) -> bool:
    release = parse_release(kernel)
    return release is not None and release.version < MISERY_SINCE


def kernel_eras(
    conn: Connection, hosts: Sequence[HostRow], *, since: dt.datetime, until: dt.datetime, limit: int
) -> KernelEras:
    eras = [HostEra(h.name, h.kernel, h.mode, h.mitigate, kernel_era(h.kernel, h.mitigate)) for h in hosts]
    by_era: dict[str, int] = defaultdict(int)
    for e in eras:
        by_era[e.era.era] += 1
    floors = [e for e in eras if e.era.counts_are_floors and e.mode == "warn"]
    stuck: list[HostEra] = [e for e in eras if e.era.stuck_off]
    # Below 5.19 in warn mode: an upgrade brings misery mode (mitigate defaults to 1).
    candidates = [h for h, e in zip(hosts, eras, strict=True) if h.mode == "warn" and _below_misery(h.kernel)]
    offenders = read_offenders(
        conn,
        candidates,
        since=since,
        until=until,
        kinds=("split_lock",),
        actions=THROTTLED_PATH_ACTIONS,
        exact=limit,
    )
    hours = max((until - since).total_seconds() / 3600, 1 / 60)
    per_host: dict[str, list[OffenderRate]] = defaultdict(list)
    for o in offenders:
        if o.count:
            rate = o.count / hours
            per_host[o.host].append(OffenderRate(o, rate, "tracefs count", rate * MISERY_SLEEP_MS / 1000))
        else:
            per_host[o.host].append(OffenderRate(o, o.sightings / hours, "kernel-log sightings", None))
    era_of = {e.host: e for e in eras}
    impacts = []
    for name, rates in per_host.items():
        rates.sort(key=lambda r: (-r.per_hour, r.offender.guest or "", r.offender.comm or ""))
        impacts.append(UpgradeImpact(era_of[name], rates[:limit], max(0, len(rates) - limit)))
    impacts.sort(key=lambda u: (-sum(r.per_hour for r in u.offenders), u.host.host))
    return KernelEras(
        {era: by_era[era] for era in sorted(by_era)},
        eras[:limit],
        max(0, len(eras) - limit),
        floors[:limit],
        max(0, len(floors) - limit),
        impacts[:limit],
        max(0, len(impacts) - limit),
        stuck[:limit],
        max(0, len(stuck) - limit),
    )


__all__ = [
    "Era",
    "FatalReadiness",
    "KernelEras",
    "Throttling",
    "fatal_readiness",
    "kernel_eras",
    "throttling",
]
