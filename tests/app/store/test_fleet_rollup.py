"""rollup_fleet_1h: rollup_1h summed over hosts and guests, kept by triggers, read by the fleet chart.

Events go in through the real ingest endpoint; retention-like deletes and a re-keyed row are
plain SQL on rollup_1h, as any writer would do them. The fleet-wide charts are compared with
the same charts read from rollup_1h (a filter on every host makes read_series read it).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from sqlalchemy import Engine, func, inspect, select

from agent.payload import Event
from app.store.engine import make_engine
from app.store.events import Filters, Resolved, resolve_filters
from app.store.series import GroupBy, compact_fleet_rollup, read_series
from app.store.tables import host, rollup_1h, rollup_fleet_1h
from tests.app.conftest import Server, Tokens, upgrade
from tests.app.fill import HOUR, MINUTE, T0, Filler, ev

KINDS = ("split_lock", "bus_lock")
ACTIONS = ("warn", "throttle", "sigbus")
SOURCES = ("kmsg", "tracefs")
BEFORE = "2026_11_30_event_marks"  # the revision before rollup_fleet_1h


def events(rng: random.Random, n: int) -> list[Event]:
    return [
        ev(
            T0 + rng.randrange(4 * 60) * MINUTE,
            guest=rng.choice((None, "vm-a", "vm-b", "vm-c")),
            kind=rng.choice(KINDS),
            action=rng.choice(ACTIONS),
            source=rng.choice(SOURCES),
            count=rng.randint(0, 9),
        )
        for _ in range(n)
    ]


@pytest.fixture
def filled(server: Server, tokens: Tokens) -> Filler:
    """Three hosts, 4 hours; each host sends twice, so rollup rows are inserted then updated."""
    rng = random.Random(3)
    fill = Filler(server.url, tokens)
    for _ in range(2):
        for name in ("h1", "h2", "h3"):
            fill.send(name, events=events(rng, 60))
    return fill


def summed_hourly(engine: Engine) -> Counter[tuple[object, ...]]:
    key = (rollup_1h.c.bucket, rollup_1h.c.action, rollup_1h.c.kind, rollup_1h.c.source)
    with engine.connect() as conn:
        rows = conn.execute(
            select(*key, func.sum(rollup_1h.c.count), func.sum(rollup_1h.c.events)).group_by(*key)
        ).all()
    return Counter(
        {(*k, "count"): int(c) for *k, c, _ in rows} | {(*k, "events"): int(e) for *k, _, e in rows}
    )


def fleet(engine: Engine) -> Counter[tuple[object, ...]]:
    """The fleet rollup, its shards summed, zeros left out (a deleted hour leaves zero rows)."""
    table = rollup_fleet_1h
    key = (table.c.bucket, table.c.action, table.c.kind, table.c.source)
    with engine.connect() as conn:
        rows = conn.execute(
            select(*key, func.sum(table.c.count), func.sum(table.c.events)).group_by(*key)
        ).all()
    found = Counter(
        {(*k, "count"): int(c) for *k, c, _ in rows} | {(*k, "events"): int(e) for *k, _, e in rows}
    )
    return +found


def test_the_fleet_rollup_is_the_hourly_rollup_summed_through_ingest_resends_updates_and_deletes(
    filled: Filler, engine: Engine
) -> None:
    assert fleet(engine) == +summed_hourly(engine) and fleet(engine)

    resent = [ev(T0 + 5 * MINUTE, guest="vm-a", count=4, seq=1)]  # seq 1 of h1 is stored: no change
    before = fleet(engine)
    filled.send("h1", events=resent)
    assert fleet(engine) == before

    with engine.begin() as conn:
        # Retention drops whole hours; a row moved to another key (no writer does it today).
        conn.execute(rollup_1h.delete().where(rollup_1h.c.bucket == T0))
        conn.execute(
            rollup_1h.update()
            .where(rollup_1h.c.bucket == T0 + HOUR, rollup_1h.c.action == "sigbus")
            .values(action="warn", bucket=T0 + 9 * HOUR)
        )
    assert fleet(engine) == +summed_hourly(engine)
    assert not any(k[0] == T0 for k in fleet(engine))


@pytest.mark.parametrize("group_by", ["action", "kind", "guest", "host"])
@pytest.mark.parametrize("step_s", [3600, 7200])
@pytest.mark.parametrize("only", [Filters(), Filters(kind="bus_lock"), Filters(action="warn", source="kmsg")])
def test_fleet_wide_charts_equal_the_same_charts_read_from_every_host(
    filled: Filler, engine: Engine, group_by: GroupBy, step_s: int, only: Filters
) -> None:
    with engine.connect() as conn:
        every_host = tuple(conn.execute(select(host.c.id)).scalars())
        fleet_wide = resolve_filters(conn, only)
        assert fleet_wide.host_ids is None and fleet_wide.host_id is None
        hosts = Resolved(
            kind=fleet_wide.kind, action=fleet_wide.action, source=fleet_wide.source, host_ids=every_host
        )
        since, until = T0, T0 + 4 * HOUR
        # top=1: guest and host charts fold into "(other)", whose sums read the fleet rollup.
        a = read_series(conn, fleet_wide, since=since, until=until, step_s=step_s, group_by=group_by, top=1)
        b = read_series(conn, hosts, since=since, until=until, step_s=step_s, group_by=group_by, top=1)
    assert a == b
    assert sum(c for s in a.series for _, c in s.points) > 0
    if group_by in ("guest", "host"):
        assert a.others > 0 and a.series[-1].key == "(other)"


def test_the_migration_fills_the_fleet_rollup_from_the_stored_hours_and_its_downgrade_removes_it(
    db_url: str,
) -> None:
    upgrade(db_url, BEFORE)
    engine = make_engine(db_url)
    try:
        row = {"bucket": T0, "guest_id": 0, "kind": "split_lock", "source": "kmsg", "events": 1}
        with engine.begin() as conn:
            conn.execute(
                rollup_1h.insert(),
                [
                    {**row, "host_id": 1, "action": "warn", "count": 3},
                    {**row, "host_id": 2, "action": "warn", "count": 4},
                    {**row, "host_id": 2, "action": "sigbus", "count": 1, "bucket": T0 + HOUR},
                ],
            )
        upgrade(db_url, "head")
        assert fleet(engine) == +summed_hourly(engine)
        assert fleet(engine)[(T0, "warn", "split_lock", "kmsg", "count")] == 7
        with engine.begin() as conn:  # the triggers take over from there
            conn.execute(
                rollup_1h.insert(), [{**row, "host_id": 1, "action": "warn", "count": 5, "guest_id": 9}]
            )
        assert fleet(engine)[(T0, "warn", "split_lock", "kmsg", "count")] == 12

        engine.dispose()
        upgrade(db_url, BEFORE, down=True)
        assert "rollup_fleet_1h" not in inspect(engine).get_table_names()
        with engine.begin() as conn:  # no trigger left behind that names the dropped table
            conn.execute(
                rollup_1h.insert(), [{**row, "host_id": 1, "action": "warn", "count": 1, "guest_id": 8}]
            )
    finally:
        engine.dispose()


def test_compaction_folds_the_writers_shards_of_past_hours_into_one_row_per_key_keeping_every_sum(
    filled: Filler, engine: Engine
) -> None:
    cut = T0 + 2 * HOUR
    before = fleet(engine)
    with engine.connect() as conn:
        chart = read_series(conn, Resolved(), since=T0, until=T0 + 4 * HOUR, step_s=3600, group_by="action")
    with engine.begin() as conn:
        written = compact_fleet_rollup(conn, cut)
        distinct_shards = select(func.count(func.distinct(rollup_fleet_1h.c.shard)))
        shards = {
            True: conn.execute(distinct_shards.where(rollup_fleet_1h.c.bucket < cut)).scalar_one(),
            False: conn.execute(distinct_shards.where(rollup_fleet_1h.c.bucket >= cut)).scalar_one(),
        }
    assert fleet(engine) == before
    with engine.connect() as conn:
        assert (
            read_series(conn, Resolved(), since=T0, until=T0 + 4 * HOUR, step_s=3600, group_by="action")
            == chart
        )
    if engine.dialect.name == "sqlite":  # one writer, shard 0 only: nothing to fold
        assert written == 0 and shards == {True: 1, False: 1}
    else:  # the server's writer connections wrote shards of their own; past hours: shard 0 only
        assert written > 0 and shards[True] == 1
        with engine.connect() as conn:
            left = select(func.count()).where(rollup_fleet_1h.c.bucket < cut, rollup_fleet_1h.c.shard != 0)
            assert conn.execute(left).scalar_one() == 0


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_the_fleet_rollup_keeps_the_hourly_sums_across_the_per_statement_triggers_downgrade_and_upgrade(
    db_url: str,
) -> None:
    """PostgreSQL: 2026_11_30_pg_event_refs keeps rollup_fleet_1h by statement-level triggers
    (transition tables) instead of the row trigger; its downgrade puts the row trigger back.
    Ingest (INSERT ... ON CONFLICT: rows inserted and rows updated in one statement), a
    multi-row update that moves rows to another key, and deletes, on either side."""
    from app.ingest.rows import build_rows
    from app.ingest.schema import parse_payload
    from app.ingest.write import write_batch
    from tests.app.ingest.payloads import host_info, payload

    rng = random.Random(7)
    upgrade(db_url)
    engine = make_engine(db_url)
    sent = 0

    def ingest(name: str) -> None:
        nonlocal sent
        sent += 1
        numbered = [dataclasses.replace(e, seq=sent * 1000 + i) for i, e in enumerate(events(rng, 80))]
        body = payload(numbered, None, host=host_info(name)).to_json().encode()
        with engine.begin() as conn:
            write_batch(conn, build_rows(parse_payload(body), T0 + sent * MINUTE))

    def rework(hour: int) -> None:
        with engine.begin() as conn:
            conn.execute(
                rollup_1h.update()
                .where(rollup_1h.c.bucket == T0 + hour * HOUR, rollup_1h.c.action == "sigbus")
                .values(action="warn", bucket=T0 + (hour + 9) * HOUR)
            )
            conn.execute(rollup_1h.delete().where(rollup_1h.c.bucket == T0 + (hour + 1) * HOUR))

    try:
        for name in ("h1", "h2", "h1"):  # h1 twice: its rollup rows are inserted, then updated
            ingest(name)
        assert fleet(engine) == +summed_hourly(engine) and fleet(engine)
        rework(0)
        assert fleet(engine) == +summed_hourly(engine)

        engine.dispose()
        upgrade(db_url, "2026_11_30_rollup_key_indexes", down=True)  # the row trigger
        for name in ("h2", "h3"):
            ingest(name)
        rework(2)
        assert fleet(engine) == +summed_hourly(engine)

        engine.dispose()
        upgrade(db_url)  # the statement triggers again
        for name in ("h3", "h1"):
            ingest(name)
        assert fleet(engine) == +summed_hourly(engine)
        with engine.begin() as conn:
            conn.execute(rollup_1h.delete())
        assert fleet(engine) == Counter()
    finally:
        engine.dispose()
