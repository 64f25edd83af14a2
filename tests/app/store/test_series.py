"""app/store/series.py: exact range totals and bucketed series, against a brute-force count.

Events go in through the real ingest endpoint (which writes the rollups); the expected
figures are computed here from the same list of events, by hand.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event

from agent.payload import Event
from app.store.events import Filters, Resolved, resolve_filters
from app.store.series import GroupBy, range_totals, read_series
from tests.app.conftest import Server, Tokens
from tests.app.fill import HOUR, MINUTE, SECOND, T0, Filler, ev

GUESTS = (None, "vm-a", "vm-b")
ACTIONS = ("warn", "throttle", "sigbus")


@pytest.fixture
def scattered(server: Server, tokens: Tokens) -> list[tuple[str, Event]]:
    """~300 events over 5 hours on two hosts, many on or next to minute and hour edges."""
    rng = random.Random(7)
    fill = Filler(server.url, tokens)
    sent: list[tuple[str, Event]] = []
    for host in ("h1", "h2"):
        events = []
        for _ in range(150):
            base = T0 + rng.randrange(5 * 60) * MINUTE
            offset = rng.choice([dt.timedelta(0), -dt.timedelta(microseconds=1), rng.random() * MINUTE])
            events.append(
                ev(
                    base + offset,
                    guest=rng.choice(GUESTS),
                    action=rng.choice(ACTIONS),
                    count=rng.randint(1, 9),
                )
            )
        fill.send(host, events=events)
        sent += [(host, e) for e in events]
    fill.close()
    return sent


def brute(sent: list[tuple[str, Event]], since: dt.datetime, until: dt.datetime) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for host, e in sent:
        if since <= e.time < until:
            totals[(host, str(e.action))] += e.count
    return totals


def test_range_totals_are_exact_for_any_range_whatever_its_edges(
    scattered: list[tuple[str, Event]], engine: Engine
) -> None:
    rng = random.Random(11)
    ranges = [
        (T0, T0 + 5 * HOUR),  # whole hours
        (T0 + 30 * SECOND, T0 + 30 * SECOND + 10 * SECOND),  # inside one minute
        (T0 + MINUTE, T0 + 2 * HOUR),  # whole minutes, then whole hours
        (T0 - HOUR, T0 + 6 * HOUR),
    ]
    for _ in range(20):
        a, b = sorted(T0 + dt.timedelta(seconds=rng.uniform(-600, 5 * 3600 + 600)) for _ in range(2))
        ranges.append((a, b))
    with engine.connect() as conn:
        ids = {
            "h1": resolve_filters(conn, Filters(host="h1")).host_id,
            "h2": resolve_filters(conn, Filters(host="h2")).host_id,
        }
        names = {v: k for k, v in ids.items()}
        for since, until in ranges:
            got = range_totals(conn, Resolved(), since=since, until=until, by=("host_id", "action"))
            as_names = Counter({(names[h], a): n for (h, a), n in got.items() if n})
            assert as_names == brute(scattered, since, until), (since, until)


def test_range_totals_honour_filters(scattered: list[tuple[str, Event]], engine: Engine) -> None:
    since, until = T0 + 17 * MINUTE + 3 * SECOND, T0 + 3 * HOUR + 42 * MINUTE
    expected = sum(e.count for h, e in scattered if h == "h2" and e.guest is None and since <= e.time < until)
    with engine.connect() as conn:
        resolved = resolve_filters(conn, Filters(host="h2", guest="(host)"))
        got = range_totals(conn, resolved, since=since, until=until, by=("guest_id",))
    assert got == {(0,): expected}


@pytest.mark.parametrize("step_s", [60, 300, 3600, 7200])
def test_every_bucket_sum_equals_the_hand_count_of_its_events(
    scattered: list[tuple[str, Event]], engine: Engine, step_s: int
) -> None:
    since, until = T0, T0 + 5 * HOUR
    with engine.connect() as conn:
        result = read_series(conn, Resolved(), since=since, until=until, step_s=step_s, group_by="guest")
    expected: Counter[tuple[str, dt.datetime]] = Counter()
    for _, e in scattered:
        start = T0 + ((e.time - T0) // dt.timedelta(seconds=step_s)) * dt.timedelta(seconds=step_s)
        if since <= start < until:
            expected[(e.guest.name if e.guest else "(host)", start)] += e.count
    got = Counter({(s.key, at): n for s in result.series for at, n in s.points if n})
    assert got == expected
    assert all(len(s.points) == -(-5 * 3600 // step_s) for s in result.series)  # the last may overhang


@pytest.mark.parametrize("step_s", [60, 3600, 7200])
@pytest.mark.parametrize("group_by", ["guest", "action"])
def test_the_top_key_and_other_line_add_up_to_the_hand_count_of_each_bucket(
    scattered: list[tuple[str, Event]], engine: Engine, step_s: int, group_by: GroupBy
) -> None:
    since, until = T0, T0 + 5 * HOUR
    with engine.connect() as conn:
        result = read_series(
            conn, Resolved(), since=since, until=until, step_s=step_s, group_by=group_by, top=1
        )
    step = dt.timedelta(seconds=step_s)
    per_key: Counter[str] = Counter()
    per_bucket: Counter[dt.datetime] = Counter()
    for _, e in scattered:
        key = str(e.action) if group_by == "action" else (e.guest.name if e.guest else "(host)")
        per_key[key] += e.count
        per_bucket[T0 + ((e.time - T0) // step) * step] += e.count
    top_key = min(per_key, key=lambda k: (-per_key[k], k)) if group_by == "action" else None
    assert [s.key for s in result.series][1:] == ["(other)"] and result.others == len(per_key) - 1
    if top_key is not None:  # guests rank by id, actions by word: the word is known here
        assert result.series[0].key == top_key
    assert sum(n for _, n in result.series[0].points) == per_key[result.series[0].key]
    summed: Counter[dt.datetime] = Counter()
    for line in result.series:
        for at, n in line.points:
            summed[at] += n
    assert +summed == per_bucket


def test_unknown_filter_name_resolves_to_nothing_and_reads_nothing(engine: Engine) -> None:
    with engine.connect() as conn:
        resolved = resolve_filters(conn, Filters(host="nobody"))
        assert resolved.nothing
        assert range_totals(conn, resolved, since=T0, until=T0 + HOUR, by=("action",)) == {}
        assert (
            read_series(conn, resolved, since=T0, until=T0 + HOUR, step_s=60, group_by="action").series == []
        )


def test_hourly_chart_by_action_matches_the_hand_count_of_each_hour(
    scattered: list[tuple[str, Event]], engine: Engine
) -> None:
    since, until = T0 + 20 * MINUTE, T0 + 5 * HOUR  # the first bucket is the whole hour T0
    with engine.connect() as conn:
        result = read_series(conn, Resolved(), since=since, until=until, step_s=3600, group_by="action")
    expected: Counter[tuple[str, dt.datetime]] = Counter()
    for _, e in scattered:
        expected[(str(e.action), T0 + ((e.time - T0) // HOUR) * HOUR)] += e.count
    got = Counter({(s.key, at): n for s in result.series for at, n in s.points if n})
    assert got == +Counter({k: n for k, n in expected.items() if T0 <= k[1] < until})
    assert [at for at, _ in result.series[0].points] == [T0 + i * HOUR for i in range(5)]


def plans(engine: Engine, call: Callable[[Connection], object]) -> list[str]:
    """SQLite's query plan of every rollup statement `call` runs."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Connection, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if "rollup_" in sql:
            statements.append((sql, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            call(conn)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    with engine.connect() as conn:
        return [
            " / ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in statements
        ]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_hourly_fleet_chart_by_action_reads_only_the_fleet_rollup_in_its_key_order(
    scattered: list[tuple[str, Event]], engine: Engine
) -> None:
    found = plans(
        engine,
        lambda conn: read_series(
            conn, Resolved(), since=T0, until=T0 + 5 * HOUR, step_s=3600, group_by="action"
        ),
    )
    assert len(found) == 1
    assert "SEARCH rollup_fleet_1h USING PRIMARY KEY" in found[0]
    assert "TEMP B-TREE" not in found[0]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_hourly_chart_of_one_host_reads_the_hourly_rollup_not_the_fleet_one(
    scattered: list[tuple[str, Event]], engine: Engine
) -> None:
    with engine.connect() as conn:
        h1 = resolve_filters(conn, Filters(host="h1"))
    found = plans(
        engine,
        lambda conn: read_series(conn, h1, since=T0, until=T0 + 5 * HOUR, step_s=3600, group_by="action"),
    )
    assert len(found) == 1
    assert "SEARCH rollup_1h " in found[0] and "rollup_fleet_1h" not in found[0]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
# Not group_by=host: SQLite rightly prefers the (bucket, host_id, ...) unique index there, whose
# order saves the sort that costs more than its row lookups (bench/bench_series.py, dense fleet).
@pytest.mark.parametrize("group_by", ["kind", "guest"])
@pytest.mark.parametrize("step_s", [60, 3600])
def test_charts_by_any_key_read_rows_from_the_covering_index_not_the_table(
    scattered: list[tuple[str, Event]], engine: Engine, group_by: GroupBy, step_s: int
) -> None:
    found = plans(
        engine,
        lambda conn: read_series(
            conn, Resolved(), since=T0, until=T0 + 5 * HOUR, step_s=step_s, group_by=group_by
        ),
    )
    # group_by=guest ranks the guests first (the `top` ones): a second read of the same index.
    assert len(found) == (2 if group_by == "guest" else 1)
    # Hourly sums of the whole fleet by kind: the fleet rollup, its rows in its key's B-tree.
    fleet_wide = group_by == "kind" and step_s == 3600
    expected = "rollup_fleet_1h USING PRIMARY KEY" if fleet_wide else "USING COVERING INDEX ix_rollup_1"
    assert all(expected in plan for plan in found), found
