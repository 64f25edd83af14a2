"""splitwatch_events_total's sums at fleet size (issue 13): closed hours kept, open ones re-read.

The sums are of all of rollup_1h per (host, guest, kind, action, source): at 10,000 hosts and
100,000 guests that is 1.5 M rows in 570,000 label sets, which took seconds of CPU and ~500 MB
to read into Python on every scrape. Now:

- The cut (app/metrics.py: past MAX_EVENT_SERIES label sets only the TOP_GUESTS busiest guests
  keep their name) is applied in SQL: the database returns the folded sums, ~150,000 rows at
  that size, never the 570,000.
- A `Base` holds the sums of the hours before `since` (the start of the previous hour): in ONE
  snapshot, all rows summed minus the rows from `since` on. Every scrape adds the rows from
  `since` on, read afresh (a few thousand: the bucket-led covering index finds them), so the
  counters move on every scrape. Rows of those older hours only change when events arrive
  late (an agent's backlog after an outage): the next Base counts them. A Base is re-read
  after EVENTS_CACHE_S when reading it is cheap (a small fleet: exact, as before), else every
  EVENTS_BASE_S, in the background (app/metrics.py).

Counters stay monotonic: a Base is exact for its hours at its snapshot, and rows only grow
(retention deleting hours past its horizon is a reset, as it always was).
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, case, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from app.rollups.buckets import bucket_start
from app.store.events import HOST_GUEST_KEY, NO_GUEST_ID
from app.store.insights import guest_names_by_id
from app.store.tables import rollup_1h

OTHER_GUEST_ID = -1  # the folded guests' key: guest="(other)"
Key = tuple[
    int, int, str, str, str
]  # host_id, guest id (or NO_GUEST_ID, OTHER_GUEST_ID), kind, action, source


@dataclass(frozen=True, slots=True)
class Base:
    since: dt.datetime  # sums holds the buckets before it; rows from it on are read live
    kept: frozenset[int] | None  # the guests that keep their name; None: all (under the cap)
    names: dict[int, str]  # guest id -> name, for the guests in sums
    sums: dict[Key, int]


def _guest_key(kept: frozenset[int] | None) -> ColumnElement[int]:
    g = rollup_1h.c.guest_id
    if kept is None:
        return g
    if not kept:
        return case((g == NO_GUEST_ID, literal(NO_GUEST_ID)), else_=literal(OTHER_GUEST_ID))
    return case(
        (g == NO_GUEST_ID, literal(NO_GUEST_ID)), (g.in_(sorted(kept)), g), else_=literal(OTHER_GUEST_ID)
    )


def folded_sums(conn: Connection, kept: frozenset[int] | None, since: dt.datetime | None) -> dict[Key, int]:
    """sum(count) per label set, guests outside `kept` folded; only buckets >= since if given."""
    r = rollup_1h
    g = _guest_key(kept).label("g")
    query = select(r.c.host_id, g, r.c.kind, r.c.action, r.c.source, func.sum(r.c.count))
    if since is not None:
        query = query.where(r.c.bucket >= since)
    query = query.group_by(r.c.host_id, g, r.c.kind, r.c.action, r.c.source)
    intern = sys.intern  # three words repeated 150,000 times: one string each
    return {
        (host_id, guest_id, intern(kind), intern(action), intern(source)): int(total or 0)
        for host_id, guest_id, kind, action, source, total in conn.execute(query)
    }


def label_sets_over(conn: Connection, limit: int) -> bool:
    """Whether rollup_1h holds more than `limit` label sets (counted no further than that)."""
    r = rollup_1h
    # In the column order of tables.METRICS_INDEX: SQLite streams the groups off it and stops.
    groups = (
        select(literal(1))
        .select_from(r)
        .group_by(r.c.host_id, r.c.guest_id, r.c.kind, r.c.action, r.c.source)
        .limit(limit + 1)
        .subquery()
    )
    return int(conn.execute(select(func.count()).select_from(groups)).scalar_one()) > limit


def busiest_guests(conn: Connection, n: int) -> frozenset[int]:
    r = rollup_1h
    total = func.sum(r.c.count)
    return frozenset(
        conn.execute(
            select(r.c.guest_id)
            .where(r.c.guest_id != NO_GUEST_ID)
            .group_by(r.c.guest_id)
            .order_by(total.desc(), r.c.guest_id)
            .limit(n)
        ).scalars()
    )


def read_base(conn: Connection, now: dt.datetime, max_series: int, top_guests: int) -> Base:
    """The sums of the hours before the previous one. The caller gives a connection whose reads
    see one snapshot (app/metrics.py: one transaction, REPEATABLE READ on PostgreSQL)."""
    since = bucket_start(now, 3600) - dt.timedelta(hours=1)
    kept = busiest_guests(conn, top_guests) if label_sets_over(conn, max_series) else None
    sums = folded_sums(conn, kept, None)
    for key, n in folded_sums(conn, kept, since).items():
        left = sums.get(key, 0) - n
        if left:
            sums[key] = left
        else:
            sums.pop(key, None)
    ids = {k[1] for k in sums} if kept is None else set(kept)
    return Base(since, kept, guest_names_by_id(conn, (i for i in ids if i > 0)), sums)


def live_sums(conn: Connection, base: Base) -> tuple[dict[Key, int], dict[int, str]]:
    """The rows from base.since on, folded as the base is; names of guests the base lacks."""
    sums = folded_sums(conn, base.kept, base.since)
    missing = {k[1] for k in sums if k[1] > 0 and k[1] not in base.names}
    return sums, guest_names_by_id(conn, missing) if missing else {}


def samples(
    base: Base, live: dict[Key, int], live_names: dict[int, str], host_names: dict[int, str]
) -> Iterator[tuple[tuple[str, str, str, str, str], float]]:
    """(host, guest, action, kind, source), value: the base and the live rows added up."""
    guests = {NO_GUEST_ID: HOST_GUEST_KEY, OTHER_GUEST_ID: "(other)", **live_names, **base.names}
    hosts = host_names
    for key, n in base.sums.items():
        host_id, guest_id, kind, action, source = key
        host_name = hosts.get(host_id, f"#{host_id}")
        guest_name = guests.get(guest_id, f"#{guest_id}")
        yield (host_name, guest_name, action, kind, source), float(n + live.get(key, 0))
    for key, n in live.items():
        if key not in base.sums:
            host_id, guest_id, kind, action, source = key
            host_name = hosts.get(host_id, f"#{host_id}")
            guest_name = guests.get(guest_id, f"#{guest_id}")
            yield (host_name, guest_name, action, kind, source), float(n)


__all__ = ["Base", "live_sums", "read_base", "samples"]
