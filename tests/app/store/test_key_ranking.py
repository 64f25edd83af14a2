"""Charts and totals by guest or host (ranked key by key on rollup_1h's key-led indexes, #13)
against the same answer computed here from every rollup_1h row, on random data.

The rows are written straight into rollup_1h (with their host and guest rows, as ingest
leaves them) so that many keys, ties, zero counts and "no guest" rows are cheap to have.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict

import pytest
from sqlalchemy import Connection, Engine, select

from app.rollups.buckets import bucket_count, bucket_start
from app.store.events import HOST_GUEST_KEY, NO_GUEST_ID, Resolved
from app.store.series import OTHER_KEY, GroupBy, Series, SeriesResult, range_totals, read_series
from app.store.tables import guest, host, rollup_1h
from tests.app.conftest import upgrade
from tests.app.fill import HOUR, T0

HOSTS = 7  # the last one and the last guest: rows, all of count 0
GUESTS = 31
HOURS = 12
KINDS = ("split_lock", "bus_lock")
ACTIONS = ("warn", "throttle", "sigbus")
SOURCES = ("kmsg", "tracefs")


@pytest.fixture
def rows(engine: Engine) -> list[dict[str, object]]:
    rng = random.Random(13)
    cells: dict[tuple[object, ...], int] = {}
    for _ in range(700):
        key = (
            T0 + rng.randrange(HOURS) * HOUR,
            rng.randint(1, HOSTS - 1),
            rng.choice((NO_GUEST_ID, *range(1, GUESTS))),
            rng.choice(KINDS),
            rng.choice(ACTIONS),
            rng.choice(SOURCES),
        )
        # Small counts, zeros included: ties in the ranking, keys whose rows sum to 0.
        cells[key] = rng.choice((0, 1, 1, 2, 3, 5, 8))
    for hour in (2, 5):
        cells[(T0 + hour * HOUR, HOSTS, GUESTS, "split_lock", "warn", "kmsg")] = 0
    written = [
        {
            "bucket": b,
            "host_id": h,
            "guest_id": g,
            "kind": k,
            "action": a,
            "source": s,
            "count": c,
            "events": 1,
        }
        for (b, h, g, k, a, s), c in cells.items()
    ]
    seen = {"first_seen_at": T0, "last_seen_at": T0 + HOURS * HOUR}
    with engine.begin() as conn:
        conn.execute(
            host.insert(),
            [
                {
                    "id": h,
                    "name": f"h{h:02d}",
                    "boot_id": "b",
                    "kernel": "k",
                    "cpu_model": "c",
                    "agent_version": "0",
                }
                | seen
                for h in range(1, HOSTS + 1)
            ],
        )
        conn.execute(
            guest.insert(),
            [{"id": g, "name": f"vm-{g:02d}", "vmm": "qemu"} | seen for g in range(1, GUESTS + 1)],
        )
        conn.execute(rollup_1h.insert(), written)
    return written


def expected(
    conn: Connection,
    rows: list[dict[str, object]],
    *,
    group_by: GroupBy,
    since: dt.datetime,
    until: dt.datetime,
    step_s: int,
    top: int,
    keep: dict[str, object],
) -> SeriesResult:
    """read_series's answer (docs/api.md) from every row: rank, top keys, the rest as "(other)"."""
    first = bucket_start(since, step_s)
    n = bucket_count(since, until, step_s)
    end = first + dt.timedelta(seconds=step_s * n)
    key = f"{group_by}_id"
    sums: dict[int, list[int]] = defaultdict(lambda: [0] * n)
    for row in rows:
        at = row["bucket"]
        assert isinstance(at, dt.datetime)
        if first <= at < end and all(row[k] == v for k, v in keep.items()):
            k = row[key]
            assert isinstance(k, int)
            sums[k][int((at - first).total_seconds()) // step_s] += int(str(row["count"]))
    ranked = sorted((k for k in sums if sum(sums[k]) > 0), key=lambda k: (-sum(sums[k]), k))
    table = host if group_by == "host" else guest
    names = dict(conn.execute(select(table.c.id, table.c.name)).all())
    names[NO_GUEST_ID] = HOST_GUEST_KEY
    starts = [first + dt.timedelta(seconds=step_s * i) for i in range(n)]
    series = [(names[k], sums[k]) for k in ranked[:top]]
    series.sort(key=lambda s: (-sum(s[1]), s[0]))
    others = max(0, len(ranked) - top)
    if others:
        rest = [sum(sums[k][i] for k in ranked[top:]) for i in range(n)]
        series.append((OTHER_KEY, rest))

    return SeriesResult(
        step_s, [Series(name, list(zip(starts, points, strict=True))) for name, points in series], others
    )


@pytest.mark.parametrize("group_by", ["guest", "host"])
@pytest.mark.parametrize("top", [1, 3, 50])
@pytest.mark.parametrize("step_s", [3600, 3 * 3600])
def test_charts_by_guest_and_host_equal_a_direct_computation_from_the_hourly_rollup(
    engine: Engine, rows: list[dict[str, object]], group_by: GroupBy, top: int, step_s: int
) -> None:
    since, until = T0 + 30 * dt.timedelta(minutes=1), T0 + (HOURS - 2) * HOUR
    other_key = {"host_id": 2} if group_by == "guest" else {"guest_id": 7}
    with engine.connect() as conn:
        for resolved, keep in (
            (Resolved(), {}),  # every key summed key by key on its index
            (Resolved(**other_key), other_key),  # the other key's filter is in the index too
            (Resolved(host_ids=(1, 3, 5)) if group_by == "guest" else Resolved(guest_ids=(0, 4, 9)), None),
            (Resolved(kind="bus_lock"), {"kind": "bus_lock"}),  # a filter outside the index: grouped
        ):
            if keep is None:  # a set of the other key
                ids = resolved.host_ids if group_by == "guest" else resolved.guest_ids
                assert ids is not None
                col = "host_id" if group_by == "guest" else "guest_id"
                subset = [r for r in rows if r[col] in ids]
                want = expected(
                    conn, subset, group_by=group_by, since=since, until=until, step_s=step_s, top=top, keep={}
                )
            else:
                want = expected(
                    conn, rows, group_by=group_by, since=since, until=until, step_s=step_s, top=top, keep=keep
                )
            got = read_series(
                conn, resolved, since=since, until=until, step_s=step_s, group_by=group_by, top=top
            )
            assert got == want, (resolved, top)
            assert got.series  # the data has keys in every one of these charts


@pytest.mark.parametrize("key", ["guest_id", "host_id"])
def test_range_totals_per_guest_or_host_equal_the_hourly_rollup_summed(
    engine: Engine, rows: list[dict[str, object]], key: str
) -> None:
    since, until = T0 + HOUR, T0 + 9 * HOUR  # whole hours: rollup_1h alone answers
    want: dict[tuple[object, ...], int] = defaultdict(int)
    for row in rows:
        at = row["bucket"]
        assert isinstance(at, dt.datetime)
        if since <= at < until:
            want[(row[key],)] += int(str(row["count"]))  # keys whose rows sum to 0 included
    with engine.connect() as conn:
        got = range_totals(conn, Resolved(), since=since, until=until, by=(key,))  # type: ignore[arg-type]
    assert got == dict(want)
    assert 0 in got.values()  # a key with rows summing to 0 stays, as with a grouped sum


def test_the_migration_adds_the_key_led_indexes_to_a_filled_database_and_its_downgrade_drops_them(
    db_url: str,
) -> None:
    from sqlalchemy import inspect

    from app.store.engine import make_engine

    upgrade(db_url, "2026_11_30_fleet_rollup")
    engine = make_engine(db_url)
    try:
        row = {"kind": "split_lock", "action": "warn", "source": "kmsg", "events": 1}
        seen = {"first_seen_at": T0, "last_seen_at": T0}
        with engine.begin() as conn:  # as ingest leaves them: host and guest rows, then rollups
            host_row = {
                "id": 1,
                "name": "h1",
                "boot_id": "b",
                "kernel": "k",
                "cpu_model": "c",
                "agent_version": "0",
            }
            conn.execute(host.insert(), [host_row | seen])
            conn.execute(guest.insert(), [{"id": g, "name": f"vm-{g}", "vmm": "qemu"} | seen for g in (1, 2)])
            conn.execute(
                rollup_1h.insert(),
                [
                    {**row, "bucket": T0 + h * HOUR, "host_id": 1, "guest_id": h % 3, "count": h}
                    for h in range(6)
                ],
            )
        upgrade(db_url, "head")

        def names() -> set[str]:
            return {str(i["name"]) for i in inspect(engine).get_indexes("rollup_1h")}

        key_led = {"ix_rollup_1h_guest_id_bucket_host_id_count", "ix_rollup_1h_host_id_bucket_guest_id_count"}
        assert key_led <= names()
        with engine.connect() as conn:  # the rows stored before the migration are ranked on them
            got = range_totals(conn, Resolved(), since=T0, until=T0 + 6 * HOUR, by=("guest_id",))
        assert got == {(0,): 0 + 3, (1,): 1 + 4, (2,): 2 + 5}
        engine.dispose()
        upgrade(db_url, "2026_11_30_fleet_rollup", down=True)
        assert not key_led & names()
    finally:
        engine.dispose()
