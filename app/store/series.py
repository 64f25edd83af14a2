"""Counts over time from the rollups: the chart series and exact totals over any range.

Both read `rollup_1h` / `rollup_1m` (sums per bucket and host, guest, kind, action, source,
maintained at ingest), never a scan of `event`, so a 30-day chart reads ~720 rows per series
and host or guest whatever the number of events (docs/benchmarks.md). Hourly sums over the
whole fleet (no host or guest filter: the fleet chart by action or kind, the "(other)" line)
read `rollup_fleet_1h`, the same sums without host and guest, so their cost does not grow with
the fleet either.
Charts by guest or host rank every guest or host key by key on rollup_1h's indexes led by
guest_id and host_id (`key_totals`), then read the top ones' rows, a few index ranges.

- `read_series`: buckets of `step_s` seconds aligned to multiples of the step since the epoch
  (app/rollups/buckets.py), every bucket from the one holding `since` up to `until` present,
  zeros included. rollup_1h answers when the step is a multiple of 3600, else rollup_1m. The
  first bucket is whole: it may count events from before `since` (an aligned chart has no
  partial bars).
- `range_totals`: exact sum(event.count) over [since, until) grouped by some columns: whole
  hours from rollup_1h, whole minutes from rollup_1m, and only the sub-minute edges from
  `event` (index on time), so totals for lists and the summary stay cheap and exact.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    String,
    Subquery,
    Table,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.sql.elements import KeyedColumnElement

from agent.payload import Action, Kind
from app.rollups.buckets import bucket_count, bucket_start, rollup_step_for
from app.store.events import HOST_GUEST_KEY, NO_GUEST_ID, Resolved, event_conditions
from app.store.tables import event, guest, host, rollup_1h, rollup_1m, rollup_fleet_1h

GroupBy = Literal["action", "kind", "host", "guest"]
GROUP_BY: tuple[GroupBy, ...] = ("action", "kind", "host", "guest")
# Fields `range_totals` can group by: the dimensions shared by rollups and events.
Dimension = Literal["host_id", "guest_id", "kind", "action", "source"]
# What `range_totals` sums: event counts, or event rows (sightings; the rollups' `events`).
Measure = Literal["count", "events"]

MAX_BUCKETS = 10_000  # a chart wider than this is unreadable and its answer megabytes

# Keys of a closed vocabulary (docs/api.md contract words): summed per word in one pass.
_KNOWN_KEYS: dict[str, tuple[str, ...]] = {"action": tuple(map(str, Action)), "kind": tuple(map(str, Kind))}

_MINUTE = dt.timedelta(seconds=60)
_HOUR = dt.timedelta(seconds=3600)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# In the statement's text, not a parameter: PostgreSQL then plans date_part('epoch', ...) itself.
_EPOCH_FIELD: ColumnElement[str] = literal_column("'epoch'")


# The last series when keys beyond `top` were folded; `SeriesResult.others` > 0 tells it from a
# guest that happens to be called "(other)".
OTHER_KEY = "(other)"
DEFAULT_TOP = 10
MAX_TOP = 50


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    points: list[tuple[dt.datetime, int]]


@dataclass(frozen=True, slots=True)
class SeriesResult:
    step: int
    series: list[Series]
    others: int = 0  # keys folded into the "other" series


def _rollup_conditions(table: Table, resolved: Resolved) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = []
    if resolved.host_id is not None:
        terms.append(table.c.host_id == resolved.host_id)
    if resolved.guest_id is not None:
        terms.append(table.c.guest_id == resolved.guest_id)
    if resolved.host_ids is not None:
        terms.append(table.c.host_id.in_(resolved.host_ids))
    if resolved.guest_ids is not None:
        terms.append(table.c.guest_id.in_(resolved.guest_ids))
    for name, value in (("kind", resolved.kind), ("action", resolved.action), ("source", resolved.source)):
        if value is not None:
            terms.append(table.c[name] == value)
    return terms


def _epoch_seconds(conn: Connection, column: KeyedColumnElement[dt.datetime]) -> ColumnElement[int]:
    """Whole seconds since the epoch of a UtcDateTime column, in SQL."""
    if conn.dialect.name == "sqlite":
        # SQLite keeps these as 'YYYY-MM-DD HH:MM:SS.ffffff' text in UTC (tables.UtcDateTime).
        return cast(func.strftime("%s", column), BigInteger)
    # date_part is a float8, exact for whole seconds; EXTRACT is a numeric since PostgreSQL 14,
    # several times slower to compute and cast.
    return cast(func.date_part(_EPOCH_FIELD, column), BigInteger)


def _as_utc(raw: object) -> dt.datetime | None:
    """A bucket as the driver returned it (SQLite: UTC text, PostgreSQL: aware datetime)."""
    if isinstance(raw, str):
        return dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
    if isinstance(raw, dt.datetime):
        return raw.astimezone(dt.UTC) if raw.tzinfo else raw.replace(tzinfo=dt.UTC)
    return None


def _names(conn: Connection, table: Table, ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return dict(conn.execute(select(table.c.id, table.c.name).where(table.c.id.in_(wanted))).all())


def read_series(
    conn: Connection,
    resolved: Resolved,
    *,
    since: dt.datetime,
    until: dt.datetime,
    step_s: int,
    group_by: GroupBy,
    top: int = DEFAULT_TOP,
) -> SeriesResult:
    """Per-key bucket sums; the caller has checked step (multiple of 60) and bucket count.

    At most `top` keys, the largest totals over the range (ties: the lower id or word); the
    rest are summed into one last series, key OTHER_KEY (`others` says how many), so they still add
    up to the total. The keys are ranked in SQL first (`key_totals`: key by key on rollup_1h's
    key-led indexes, #13), so 100,000 guests cost one ranking statement and an answer of `top`
    + 1 series, not 100,000 series (#14).
    """
    rollup_s = rollup_step_for(step_s)
    first = bucket_start(since, step_s)
    n = bucket_count(since, until, step_s)
    end = first + dt.timedelta(seconds=step_s * n)
    if resolved.nothing or n == 0:
        return SeriesResult(step_s, [])
    first_epoch = int((first - _EPOCH).total_seconds())

    def index_of(table: Table) -> ColumnElement[Any]:
        """What the rows are grouped by: the bucket itself, or its number since `first`."""
        if step_s == rollup_s and conn.dialect.name == "sqlite":
            # One rollup bucket per chart bucket: group on the indexed column itself, fetched
            # as the driver gives it (text on SQLite): parsing thousands of equal timestamps
            # into datetimes cost half the call (bench/bench_series.py), so `position` parses
            # each distinct value once.
            return type_coerce(table.c.bucket, String)
        # PostgreSQL: a number, whatever the step. Fetched as timestamptz, each row's bucket
        # became an aware datetime, and loading then hashing those was half the Python time of
        # the 30-day fleet chart (py-spy, docs/benchmarks.md); PostgreSQL hash-aggregates on
        # the expression as cheaply as on the column.
        return (_epoch_seconds(conn, table.c.bucket) - first_epoch) // step_s

    def range_of(table: Table) -> tuple[ColumnElement[bool], ...]:
        return (table.c.bucket >= first, table.c.bucket < end, *_rollup_conditions(table, resolved))

    # Hourly sums over the whole fleet (no host or guest filter) come from rollup_fleet_1h, a
    # few dozen rows per hour, not the ~2,000 per hour of rollup_1h with 100,000 guests (#13).
    fleet_wide = rollup_s == 3600 and all(
        v is None for v in (resolved.host_id, resolved.guest_id, resolved.host_ids, resolved.guest_ids)
    )
    table = rollup_1h if rollup_s == 3600 else rollup_1m
    if fleet_wide and group_by in ("action", "kind"):
        table = rollup_fleet_1h
    key_column = table.c[{"host": "host_id", "guest": "guest_id"}.get(group_by, group_by)]
    index_column = index_of(table)
    where = range_of(table)
    others = 0
    folded = False
    if group_by in ("host", "guest"):
        per_key = key_totals(table, "host_id" if group_by == "host" else "guest_id", resolved, first, end)
        # One statement ranks the keys and counts them (the window runs over every key before
        # the LIMIT): a second pass only to count them cost as much again (#13).
        ranked = conn.execute(
            select(per_key.c.key, per_key.c.total, func.count().over())
            .where(per_key.c.total > 0)
            .order_by(per_key.c.total.desc(), per_key.c.key)
            .limit(top + 1)
        ).all()
        if len(ranked) > top:
            folded = True
            others = int(ranked[0][2]) - top
            where = (*where, key_column.in_([k for k, _, _ in ranked[:top]]))
    counts: dict[object, list[int]] = defaultdict(lambda: [0] * n)
    # Rows carry the bucket itself (step == rollup step) or its number since `first`.
    by_bucket = step_s == rollup_s and conn.dialect.name == "sqlite"
    slot = {first + dt.timedelta(seconds=step_s * i): i for i in range(n)} if by_bucket else None

    seen: dict[object, int] = {}

    def position(index: Any) -> int:
        if slot is None:
            return int(index)
        i = seen.get(index)
        if i is None:
            at = _as_utc(index)
            i = seen[index] = -1 if at is None else slot.get(at, -1)
        return i

    # group_by=action with a step of one rollup bucket is the order of the covering index
    # (bucket, action, ...: tables.SERIES_INDEX; rollup_fleet_1h's unique key), so SQLite
    # streams (bucket, action) groups out of it with no sort: the plain query below, ~2x
    # faster than the CASE sums.
    in_index_order = group_by == "action" and slot is not None
    known = _KNOWN_KEYS.get(group_by) if conn.dialect.name == "sqlite" and not in_index_order else None
    if known is not None:
        # Contract words are a closed set: one sum per word, grouped by bucket alone, lets
        # SQLite aggregate in the order of the (bucket, ...) index with no temp B-tree sort
        # (~30% faster, bench/bench_series.py). PostgreSQL hash-aggregates (bucket, key)
        # faster than it evaluates the CASEs, so it takes the plain query below.
        sums = [func.sum(case((key_column == word, table.c.count), else_=0)) for word in known]
        rows = conn.execute(select(index_column, *sums).where(*where).group_by(index_column)).all()
        for index, *totals in rows:
            i = position(index)
            if 0 <= i < n:
                for word, total in zip(known, totals, strict=True):
                    if total:
                        counts[word][i] += int(total)
    elif conn.dialect.name == "postgresql":
        counts.update(
            _pg_bucket_sums(
                conn, table, key_column, where, first_epoch, step_s, n, by_rollup_bucket=step_s == rollup_s
            )
        )
    else:
        query = select(index_column, key_column, func.sum(table.c.count)).where(*where)
        # One fetch of every row (a few thousand): far cheaper than a fetchone per row.
        for index, key, total in conn.execute(query.group_by(index_column, key_column)).all():
            i = position(index)
            if 0 <= i < n and total:
                counts[key][i] += int(total)

    if not folded and len(counts) > top:  # a closed vocabulary (action, kind) with a small top
        ranking = sorted(counts, key=lambda k: (-sum(counts[k]), str(k)))
        rest = [0] * n
        for key in ranking[top:]:
            for i, c in enumerate(counts.pop(key)):
                rest[i] += c
        others = len(ranking) - top
    elif folded:
        rest = [0] * n
        # Every key's sum per bucket, less the top keys' sums: the rest.
        whole = rollup_fleet_1h if fleet_wide else table
        if conn.dialect.name == "postgresql":
            by_rollup_bucket = step_s == rollup_s
            whole_sums = _pg_bucket_sums(
                conn, whole, None, range_of(whole), first_epoch, step_s, n, by_rollup_bucket=by_rollup_bucket
            )
            rest = whole_sums.get(None, rest)
        else:
            whole_index = index_of(whole)
            for index, total_ in conn.execute(
                select(whole_index, func.sum(whole.c.count)).where(*range_of(whole)).group_by(whole_index)
            ).all():
                i = position(index)
                if 0 <= i < n and total_:
                    rest[i] += int(total_)
        for values in counts.values():
            for i, c in enumerate(values):
                rest[i] -= c

    labels = _key_labels(conn, group_by, counts)
    starts = [first + dt.timedelta(seconds=step_s * i) for i in range(n)]
    series = [Series(labels[key], list(zip(starts, values, strict=True))) for key, values in counts.items()]
    # Largest first: a stacked chart puts the biggest contributor at the bottom; then by key.
    series.sort(key=lambda s: (-sum(c for _, c in s.points), s.key))
    if others:
        series.append(Series(OTHER_KEY, list(zip(starts, rest, strict=True))))
    return SeriesResult(step_s, series, others)


def _pg_bucket_sums(
    conn: Connection,
    table: Table,
    key_column: ColumnElement[Any] | None,
    where: Sequence[ColumnElement[bool]],
    first_epoch: int,
    step_s: int,
    n: int,
    *,
    by_rollup_bucket: bool,
) -> dict[object, list[int]]:
    """PostgreSQL: each key's sum per chart bucket (key None without `key_column`), only for
    keys with a non-zero sum in some bucket.

    The (bucket, key) sums come back as one row per key holding two arrays (bucket numbers,
    sums), not one row per bucket and key: loading 4,320 rows (30 days x 6 actions) in psycopg
    and SQLAlchemy, then looping over them, was most of the 30-day fleet chart's time in the
    server (py-spy, docs/benchmarks.md). With one rollup bucket per chart bucket the rows are
    grouped on the timestamp itself and only the groups are numbered, not every row read.
    """

    def number(column: ColumnElement[Any]) -> ColumnElement[int]:
        return (cast(func.date_part(_EPOCH_FIELD, column), BigInteger) - first_epoch) // step_s

    bucket = table.c.bucket if by_rollup_bucket else number(table.c.bucket)
    keys = [] if key_column is None else [key_column]
    grouped = (
        select(
            bucket.label("at"),
            *(k.label("key") for k in keys),
            cast(func.sum(table.c.count), BigInteger).label("total"),
        )
        .where(*where)
        .group_by(bucket, *keys)
        .subquery("grouped")
    )
    at = number(grouped.c.at) if by_rollup_bucket else grouped.c.at
    outer_keys = [] if key_column is None else [grouped.c.key]
    query = select(
        *outer_keys,
        func.array_agg(at),
        func.array_agg(grouped.c.total),
    ).group_by(*outer_keys)
    sums: dict[object, list[int]] = {}
    for *key, numbers, totals in conn.execute(query).all():
        values = [0] * n
        for i, total in zip(numbers or (), totals or (), strict=True):
            if 0 <= i < n:
                values[i] += total
        if any(values):
            sums[key[0] if key else None] = values
    return sums


KeyName = Literal["host_id", "guest_id"]


def key_totals(
    table: Table,
    key: KeyName,
    resolved: Resolved,
    start: dt.datetime,
    end: dt.datetime,
    measure: Measure = "count",
    *,
    read_twice: bool = True,
) -> Subquery | CTE:
    """(key, total): each host's or guest's sum of `measure` over [start, end) in `table`.

    On rollup_1h with nothing but the other key filtering, summed key by key on the index led
    by that key and the bucket (tables.GUEST_INDEX, HOST_INDEX): one index range per key and
    no sort. Grouping every row of the range instead sorted them all by key on SQLite (no hash
    aggregation): 1.5 million rows and a second per click with 100,000 guests over 30 days
    (#13). The keys are the `guest` ids and "no guest" (0), or the `host` ids: every key a
    rollup row holds, since ingest writes a host or guest row before its rollups and nothing
    deletes one. Keys whose total is 0 or null (no rows) are the caller's to drop.
    """
    range_and_filters = (table.c.bucket >= start, table.c.bucket < end, *_rollup_conditions(table, resolved))
    # kind, action, source and `events` are not in the key indexes: summing key by key would
    # visit the table for each row. A filter on the key itself names the few keys wanted.
    if (
        table is not rollup_1h
        or measure != "count"
        or any((resolved.kind, resolved.action, resolved.source))
        or getattr(resolved, key) is not None
        or getattr(resolved, f"{key}s") is not None
    ):
        column = table.c[key]
        total = func.sum(table.c[measure])
        return (
            select(column.label("key"), total.label("total"))
            .where(*range_and_filters)
            .group_by(column)
            .subquery()
        )
    ids = (
        select(host.c.id.label("id"))
        if key == "host_id"
        else union_all(select(guest.c.id.label("id")), select(literal(NO_GUEST_ID, Integer).label("id")))
    ).subquery("ids")
    # The other key's filter is in the index (its third column): still no table visit.
    # BIGINT: PostgreSQL's sum of a BIGINT is a numeric, loaded as a Decimal; for 100,000 keys
    # that loading and int() were a sixth of the ranked guest list's time.
    per_key = select(cast(func.sum(table.c.count), BigInteger)).where(
        table.c[key] == ids.c.id, *range_and_filters
    )
    totals = select(ids.c.id.label("key"), per_key.scalar_subquery().label("total"))
    if not read_twice:
        return totals.subquery("key_totals")
    # MATERIALIZED: a ranking reads `total` twice (filter, order); inlined, SQLite sums twice.
    return totals.cte("key_totals").prefix_with("MATERIALIZED")


def _key_labels(conn: Connection, group_by: GroupBy, keys: Iterable[object]) -> dict[object, str]:
    keys = list(keys)
    if group_by == "host":
        names = _names(conn, host, (int(str(k)) for k in keys))
        return {k: names.get(int(str(k)), f"(host #{k})") for k in keys}
    if group_by == "guest":
        ids = [int(str(k)) for k in keys]
        names = _names(conn, guest, (i for i in ids if i != NO_GUEST_ID))
        return {
            k: HOST_GUEST_KEY if int(str(k)) == NO_GUEST_ID else names.get(int(str(k)), f"(guest #{k})")
            for k in keys
        }
    return {k: str(k) for k in keys}


def _ceil(at: dt.datetime, step: dt.timedelta) -> dt.datetime:
    start = bucket_start(at, int(step.total_seconds()))
    return start if start == at else start + step


def range_totals(
    conn: Connection,
    resolved: Resolved,
    *,
    since: dt.datetime,
    until: dt.datetime,
    by: Sequence[Dimension],
    measure: Measure = "count",
) -> dict[tuple[object, ...], int]:
    """Exact sum(event.count) over since <= time < until per combination of `by`; with
    measure="events", the number of event rows (sightings) instead: a kernel-log line may
    carry a count of 0 (app/insights needs to know it was seen).

    guest_id is NO_GUEST_ID (0) for events without a guest, as in the rollups.
    """
    totals: dict[tuple[object, ...], int] = defaultdict(int)
    if resolved.nothing or since >= until:
        return totals
    m0, m1 = _ceil(since, _MINUTE), bucket_start(until, 60)
    if m0 >= m1:
        _add_events(conn, resolved, since, until, by, totals, measure)
        return dict(totals)
    h0, h1 = _ceil(m0, _HOUR), bucket_start(m1, 3600)
    if h0 < h1:
        _add_rollup(conn, rollup_1h, resolved, h0, h1, by, totals, measure)
        _add_rollup(conn, rollup_1m, resolved, m0, h0, by, totals, measure)
        _add_rollup(conn, rollup_1m, resolved, h1, m1, by, totals, measure)
    else:
        _add_rollup(conn, rollup_1m, resolved, m0, m1, by, totals, measure)
    _add_events(conn, resolved, since, m0, by, totals, measure)
    _add_events(conn, resolved, m1, until, by, totals, measure)
    return dict(totals)


def _add_rollup(
    conn: Connection,
    table: Table,
    resolved: Resolved,
    start: dt.datetime,
    end: dt.datetime,
    by: Sequence[Dimension],
    totals: dict[tuple[object, ...], int],
    measure: Measure,
) -> None:
    if start >= end:
        return
    if tuple(by) in (("guest_id",), ("host_id",)):
        # Every guest's (host's) total: the /guests list ranked by events (#13).
        per_key = key_totals(table, by[0], resolved, start, end, measure, read_twice=False)  # type: ignore[arg-type]
        # One fetch of ~100,000 rows: a fetchone per row cost a fifth of the /guests ranking.
        for key, total in conn.execute(select(per_key.c.key, per_key.c.total)).all():
            if total is not None:  # None: no row (a key with rows summing to 0 is kept, as before)
                totals[(key,)] += total
        return
    columns = [table.c[name] for name in by]
    query = (
        select(*columns, func.sum(table.c[measure]))
        .where(table.c.bucket >= start, table.c.bucket < end, *_rollup_conditions(table, resolved))
        .group_by(*columns)
    )
    for row in conn.execute(query):
        totals[tuple(row[:-1])] += int(row[-1] or 0)


def _add_events(
    conn: Connection,
    resolved: Resolved,
    start: dt.datetime,
    end: dt.datetime,
    by: Sequence[Dimension],
    totals: dict[tuple[object, ...], int],
    measure: Measure,
) -> None:
    if start >= end:
        return
    columns = [
        func.coalesce(event.c.guest_id, NO_GUEST_ID) if name == "guest_id" else event.c[name] for name in by
    ]
    query = (
        select(*columns, func.sum(event.c.count) if measure == "count" else func.count())
        .where(event.c.time >= start, event.c.time < end, *event_conditions(resolved))
        .group_by(*columns)
    )
    for row in conn.execute(query):
        totals[tuple(row[:-1])] += int(row[-1] or 0)


_COMPACT_FLEET = text(
    """
    WITH gone AS (
        DELETE FROM rollup_fleet_1h
        WHERE (bucket, action, kind, source, shard) IN (
            SELECT bucket, action, kind, source, shard FROM rollup_fleet_1h
            WHERE bucket < :before AND shard <> 0
            FOR UPDATE SKIP LOCKED
        )
        RETURNING bucket, action, kind, source, count, events
    )
    INSERT INTO rollup_fleet_1h AS f (bucket, action, kind, source, shard, count, events)
    SELECT bucket, action, kind, source, 0, sum(count), sum(events) FROM gone
    GROUP BY bucket, action, kind, source
    ORDER BY bucket, action, kind, source
    ON CONFLICT (bucket, action, kind, source, shard) DO UPDATE
    SET count = f.count + excluded.count, events = f.events + excluded.events
    """
)


def compact_fleet_rollup(conn: Connection, before: dt.datetime) -> int:
    """Fold the PostgreSQL writers' shards of rollup_fleet_1h hours before `before` into shard 0;
    the number of shard-0 rows written. Sums are unchanged; a fleet chart reads fewer rows.

    On PostgreSQL the triggers write one row per (bucket, action, kind, source) and writer
    connection (migrations/versions/2026_11_30_fleet_rollup.py): with 8 writers in each of 2
    replicas the 30-day chart sums ~16 times the rows. Rows a writer holds (a late event's
    hour) are skipped, not waited for, so ingest never deadlocks with this; they are folded by
    the next call. Each folded row's count is the one it had when deleted (RETURNING), so a
    concurrent increment is never lost. SQLite writes shard 0 only: nothing to do.
    """
    if conn.dialect.name != "postgresql":
        return 0
    return int(conn.execute(_COMPACT_FLEET, {"before": before}).rowcount or 0)
