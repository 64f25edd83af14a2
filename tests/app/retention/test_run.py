"""Retention against a real server on both engines: what goes, what stays, what charts show.

Events go in through the real ingest endpoint (rollups written at ingest, as in production);
a retention run is then made "as of" a chosen instant through the server's own writer, so a
day 40 days old can be dropped without waiting 40 days.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, func, select, text

from app.retention import run
from app.retention.plan import day_start, partition_name
from app.retention.run import RetentionReport, run_retention
from app.settings import Settings
from app.store.tables import event as event_table
from app.store.tables import gap, rollup_1h, rollup_1m, rollup_fleet_1h
from tests.app.conftest import Server, Tokens, auth
from tests.app.fill import DAY, HOUR, MINUTE, Filler, ev, lost

# One clock for the module: the events' days and the `now` each run is given, so a run that
# crosses midnight (a CI run at 23:56 did) still puts the horizon where the tests put it.
NOW = dt.datetime.now(dt.UTC)
TODAY = day_start(NOW)
OLD = TODAY - 40 * DAY  # past the default 30 days


def _started(server: Server) -> None:
    """The startup run of the server's own retention task is over (no DDL race with ours)."""
    deadline = time.monotonic() + 30
    while server.app.state.retention.runs < 1:
        assert time.monotonic() < deadline, "the startup retention run did not finish"
        time.sleep(0.02)


def retain(server: Server, now: dt.datetime, settings: Settings | None = None) -> RetentionReport:
    return asyncio.run(run_retention(server.app.state.writer, settings or server.settings, now))


def count(engine: Engine, table: Any, since: dt.datetime, until: dt.datetime, column: str = "time") -> int:
    with engine.connect() as conn:
        c = table.c[column]
        return int(conn.execute(select(func.count()).where(c >= since, c < until)).scalar() or 0)


def total(engine: Engine, table: Any, since: dt.datetime, until: dt.datetime) -> int:
    with engine.connect() as conn:
        c = table.c.bucket
        return int(conn.execute(select(func.sum(table.c.count)).where(c >= since, c < until)).scalar() or 0)


def partition_of(engine: Engine, seq: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT tableoid::regclass::text FROM event WHERE seq = :s"), {"s": seq}
            ).scalar()
        )


def series(server: Server, tokens: Tokens, since: dt.datetime, until: dt.datetime, **params: Any) -> Any:
    r = httpx.get(
        f"{server.url}/api/v1/series",
        params={"since": since.isoformat(), "until": until.isoformat(), **params},
        headers=auth(tokens.viewer()),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_a_dropped_day_leaves_the_chart_answering_from_rollups_with_the_same_figures(
    server: Server, tokens: Tokens, engine: Engine
) -> None:
    _started(server)
    # A run as of 40 days ago makes that day's partitions (PostgreSQL) as it did back then.
    retain(server, OLD + 12 * HOUR)
    fill = Filler(server.url, tokens)
    sent = [
        ev(OLD + h * HOUR + m * MINUTE, guest="vm-a" if m % 2 else None, count=m + 1)
        for h in range(30)
        for m in (0, 7, 31)
    ]
    recent = [ev(TODAY + 5 * MINUTE, count=4)]
    fill.send("h1", events=sent[:45])
    fill.send("h2", events=sent[45:] + recent)
    fill.close()
    window = (OLD, OLD + 2 * DAY)
    before = {
        (by, step): series(server, tokens, *window, group_by=by, step=step)
        for by in ("action", "host", "guest")
        for step in (3600, 86400)
    }
    assert sum(p[1] for s in before[("host", 86400)]["series"] for p in s["points"]) == sum(
        e.count for e in sent
    )
    assert count(engine, event_table, *window) == len(sent)

    report = retain(server, NOW)

    if engine.dialect.name == "postgresql":
        assert partition_name(OLD) in report.partitions_dropped
        assert partition_name(OLD + DAY) in report.partitions_dropped
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass(:n)"), {"n": partition_name(OLD)}).scalar() is None
    assert count(engine, event_table, *window) == 0  # raw events gone
    assert count(engine, event_table, TODAY, TODAY + DAY) == 1  # today's kept
    assert count(engine, rollup_1m, *window, column="bucket") == 0  # minute rollups go with them
    assert total(engine, rollup_1h, *window) == sum(e.count for e in sent)  # hourly rollups intact
    after = {key: series(server, tokens, *window, group_by=key[0], step=key[1]) for key in before}
    assert after == before


def test_deletion_goes_in_bounded_chunks_and_removes_old_events_only(
    server: Server, tokens: Tokens, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite deletes from event itself; PostgreSQL from the default partition, where events
    of days without a partition land (these 40-day-old ones: no run made their day)."""
    _started(server)
    monkeypatch.setattr(run, "CHUNK_ROWS", 7)
    fill = Filler(server.url, tokens)
    old = [ev(OLD + i * MINUTE, count=2) for i in range(50)]
    edge = [ev(TODAY - 30 * DAY - MINUTE), ev(TODAY - 30 * DAY)]  # either side of the horizon
    fill.send("h1", events=old + edge)
    fill.close()
    deletes: list[int] = []

    def watch(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE") and "event" in statement:
            deletes.append(cursor.rowcount)

    # Every engine of this process (the writer has its own on PostgreSQL).
    event.listen(Engine, "after_cursor_execute", watch)
    try:
        report = retain(server, NOW)
    finally:
        event.remove(Engine, "after_cursor_execute", watch)

    assert report.deleted["event"] == 51
    assert deletes and max(deletes) <= 7 and len(deletes) >= 8  # 51 rows, 7 at a time
    with engine.connect() as conn:
        left = conn.execute(select(event_table.c.time)).scalars().all()
    assert left == [TODAY - 30 * DAY]
    assert total(engine, rollup_1h, OLD, OLD + DAY) == 100


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_retention_respects_the_settings(server: Server, tokens: Tokens, engine: Engine) -> None:
    _started(server)
    fill = Filler(server.url, tokens)
    week_old = TODAY - 7 * DAY + HOUR
    fill.send("h1", events=[ev(week_old, count=3)], gaps=[lost(5)])
    fill.close()
    now = NOW

    retain(server, now, server.settings.model_copy(update={"retention_days": 10}))
    assert count(engine, event_table, week_old, week_old + HOUR) == 1

    retain(server, now, server.settings.model_copy(update={"retention_days": 5, "rollup_retention_days": 7}))
    assert count(engine, event_table, week_old, week_old + HOUR) == 0
    assert count(engine, rollup_1m, week_old, week_old + HOUR, column="bucket") == 0
    assert total(engine, rollup_1h, week_old, week_old + HOUR) == 3  # 7 days of rollups: kept

    retain(server, now, server.settings.model_copy(update={"retention_days": 5, "rollup_retention_days": 6}))
    assert total(engine, rollup_1h, week_old, week_old + HOUR) == 0
    assert count(engine, gap, now - DAY, now + DAY, column="received_at") == 1  # received today

    retain(
        server,
        now + 8 * DAY,
        server.settings.model_copy(update={"retention_days": 5, "rollup_retention_days": 6}),
    )
    assert count(engine, gap, now - DAY, now + DAY, column="received_at") == 0


def test_an_event_older_than_retention_arriving_late_is_stored_counted_then_expired(
    server: Server, tokens: Tokens, engine: Engine
) -> None:
    _started(server)
    retain(server, NOW)  # the 40-day-old partitions, if any, are gone
    fill = Filler(server.url, tokens)
    answer = fill.send("h1", events=[ev(OLD + HOUR, count=6, seq=77)])
    assert answer["accepted"] == 1
    again = fill.send("h1", events=[ev(OLD + HOUR, count=6, seq=77)])  # a resend: a duplicate
    assert again["accepted"] == 0 and again["duplicates"] == 1
    # Same key, another time (today's partition on PostgreSQL): still the same event.
    moved = fill.send("h1", events=[ev(TODAY + HOUR, count=6, seq=77)])
    assert moved["accepted"] == 0 and moved["duplicates"] == 1
    if engine.dialect.name == "postgresql":
        assert partition_of(engine, 77) == "event_default"
    retain(server, NOW)
    assert count(engine, event_table, OLD, OLD + DAY) == 0
    assert total(engine, rollup_1h, OLD, OLD + DAY) == 6  # the chart still counts it
    fill.close()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_far_off_event_lands_in_the_default_partition_and_moves_when_its_day_is_made(
    server: Server, tokens: Tokens, engine: Engine
) -> None:
    _started(server)
    fill = Filler(server.url, tokens)
    ahead = TODAY + 10 * DAY + HOUR  # past the 7 days made ahead
    answer = fill.send(
        "h1", events=[ev(ahead, seq=1, count=2), ev(dt.datetime(2100, 1, 1, tzinfo=dt.UTC), seq=2)]
    )
    assert answer["accepted"] == 2
    assert partition_of(engine, 1) == "event_default"
    assert partition_of(engine, 2) == "event_default"

    report = retain(server, TODAY + 5 * DAY)  # five days on, day +10 is made
    assert (TODAY + 10 * DAY).strftime("%Y-%m-%d") in report.partitions_made
    assert partition_of(engine, 1) == partition_name(ahead)
    assert partition_of(engine, 2) == "event_default"
    again = fill.send("h1", events=[ev(ahead, seq=1, count=2)])  # resent after the move: duplicate
    assert again["accepted"] == 0 and again["duplicates"] == 1
    fill.close()
    with engine.begin() as conn:  # leave no future partition to the next test on this database
        for day in range(1, 13):
            conn.execute(text(f"DROP TABLE IF EXISTS {partition_name(TODAY + day * DAY)}"))


def seq_marks(engine: Engine) -> dict[tuple[str, str], int]:
    """(host, boot) -> max_seq of the kmsg seq marks (PostgreSQL)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT h.name, m.boot_id, m.max_seq FROM event_seq_mark m JOIN host h ON h.id = m.host_id"
                " WHERE m.source = 'kmsg'"
            )
        ).all()
    return {(name, boot): seq for name, boot, seq in rows}


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_dropping_days_purges_the_seq_marks_of_past_boots_with_no_event_left_and_keeps_the_others(
    server: Server, tokens: Tokens, engine: Engine
) -> None:
    _started(server)
    retain(server, OLD + 12 * HOUR)  # the old days' partitions, as they were made back then
    fill = Filler(server.url, tokens)
    fill.send("h1", boot_id="h1-gone", events=[ev(OLD + HOUR), ev(OLD + 2 * HOUR)])
    fill.send("h1", boot_id="h1-kept", events=[ev(OLD + HOUR), ev(TODAY + MINUTE)])  # one event stays
    fill.send("h1", boot_id="h1-now", events=[ev(OLD + 3 * HOUR)])  # the current boot: all old
    fill.send("h2", boot_id="h2-gone", events=[ev(OLD + HOUR)])
    fill.send("h2", boot_id="h2-now", events=[ev(TODAY + MINUTE)])
    assert set(seq_marks(engine)) == {
        ("h1", "h1-gone"),
        ("h1", "h1-kept"),
        ("h1", "h1-now"),
        ("h2", "h2-gone"),
        ("h2", "h2-now"),
    }

    report = retain(server, NOW)

    assert partition_name(OLD) in report.partitions_dropped
    assert report.seq_marks_purged == 2
    marks = seq_marks(engine)
    # Past boots with nothing stored go; a past boot with an event left and every host's current
    # boot (whose next batch is due any moment) keep theirs.
    assert marks == {("h1", "h1-kept"): 2, ("h1", "h1-now"): 1, ("h2", "h2-now"): 1}
    # What ingest relies on: no stored seq is above its mark.
    with engine.connect() as conn:
        above = conn.execute(
            text(
                "SELECT count(*) FROM event e JOIN event_seq_mark m ON (m.host_id, m.boot_id, m.source)"
                " = (e.host_id, e.boot_id, e.source) WHERE e.seq > m.max_seq"
            )
        ).scalar()
    assert above == 0
    # The kept boot's stored event is still recognised when resent.
    again = fill.send("h1", boot_id="h1-kept", events=[ev(TODAY + MINUTE, seq=2)])
    assert again == {"accepted": 0, "duplicates": 1}
    # A second run drops nothing and purges nothing more.
    assert retain(server, NOW).seq_marks_purged == 0
    fill.close()


def fleet_rows(engine: Engine, since: dt.datetime, until: dt.datetime) -> tuple[int, int]:
    """(rows, summed count) of rollup_fleet_1h in [since, until)."""
    with engine.connect() as conn:
        c = rollup_fleet_1h.c.bucket
        rows, summed = conn.execute(
            select(func.count(), func.coalesce(func.sum(rollup_fleet_1h.c.count), 0)).where(
                c >= since, c < until
            )
        ).one()
    return int(rows), int(summed)


def test_the_fleet_rollup_is_folded_to_one_row_per_hour_and_key_and_expires_with_the_hourly_rollups(
    server: Server, tokens: Tokens, engine: Engine
) -> None:
    """The fleet chart's own table: PostgreSQL writers each add their own shard row for an hour;
    a run folds past hours into one row per key, the sums unchanged; past the rollup horizon
    its rows go with rollup_1h's."""
    _started(server)
    hour = TODAY - 2 * DAY + 5 * HOUR
    old_hour = TODAY - 20 * DAY
    fill = Filler(server.url, tokens)
    for n in range(6):  # batches of several hosts: on PostgreSQL, several writer connections
        fill.send(f"h{n}", events=[ev(hour + n * MINUTE, count=2), ev(old_hour, count=1)])
    fill.close()
    before = fleet_rows(engine, hour, hour + HOUR)
    assert before[1] == 12 == total(engine, rollup_1h, hour, hour + HOUR)

    retain(server, NOW)
    # One (action, kind, source) in that hour: one row, however many writers wrote it; same sum.
    assert fleet_rows(engine, hour, hour + HOUR) == (1, 12)
    assert fleet_rows(engine, old_hour, old_hour + HOUR)[1] == 6

    settings = server.settings.model_copy(update={"retention_days": 5, "rollup_retention_days": 10})
    report = retain(server, NOW, settings)
    assert total(engine, rollup_1h, old_hour, old_hour + HOUR) == 0
    assert fleet_rows(engine, old_hour, old_hour + HOUR) == (0, 0)  # zeroed by the triggers, then deleted
    assert report.deleted["rollup_fleet_1h"] >= 1
    assert fleet_rows(engine, hour, hour + HOUR) == (1, 12)
