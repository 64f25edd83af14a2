"""write_batch on a Core connection: idempotent, and its stored times read like SQLAlchemy's."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update

from agent.payload import Action, Kind
from app.ingest.rows import Rows, build_rows
from app.ingest.schema import parse_payload
from app.ingest.write import (
    EVENT_COLUMNS,
    PG_COPY_EVENTS,
    SQLITE_ROWS_PER_STATEMENT,
    _insert_events_postgresql,
    _power_of_two_chunks,
    _stored_keys,
    sqlite_time,
    write_batch,
    write_group,
)
from app.retention.plan import day_start
from app.store.tables import event, guest, guest_host, host, rollup_1h, rollup_1m
from tests.app.alerts.conftest import poll
from tests.app.conftest import waiting_on_locks
from tests.app.ingest.payloads import T0, host_info, payload, state
from tests.app.ingest.payloads import event as ev


def rows_of(*evs: object) -> object:
    return build_rows(parse_payload(payload(evs).to_json().encode()), T0 + timedelta(hours=1))  # type: ignore[arg-type]


def test_writing_the_same_rows_twice_inserts_once(engine: Engine) -> None:
    rows = rows_of(ev(1), ev(2))
    with engine.begin() as conn:
        first = write_batch(conn, rows)  # type: ignore[arg-type]
    with engine.begin() as conn:
        second = write_batch(conn, rows)  # type: ignore[arg-type]
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (second.accepted, second.duplicates) == (0, 2)
    with engine.connect() as conn:
        assert conn.execute(select(func.sum(rollup_1m.c.count))).scalar() == 2


def test_stored_event_times_compare_and_read_back_like_any_core_datetime(engine: Engine) -> None:
    with engine.begin() as conn:
        write_batch(
            conn, rows_of(ev(1, T0), ev(2, T0 + timedelta(microseconds=1)), ev(3, T0 + timedelta(minutes=1)))
        )  # type: ignore[arg-type]
    with engine.connect() as conn:
        at_t0 = conn.execute(select(event.c.seq).where(event.c.time == T0)).scalars().all()
        in_range = (
            conn.execute(
                select(event.c.seq).where(event.c.time >= T0, event.c.time < T0 + timedelta(minutes=1))
            )
            .scalars()
            .all()
        )
        times = conn.execute(select(event.c.time).order_by(event.c.seq)).scalars().all()
        received = conn.execute(select(event.c.received_at)).scalars().first()
        last_seen = conn.execute(select(host.c.last_seen_at)).scalar()
        if engine.dialect.name == "sqlite":
            raw_event = conn.execute(text("SELECT received_at FROM event LIMIT 1")).scalar()
            raw_host = conn.execute(text("SELECT last_seen_at FROM host")).scalar()
            assert raw_event == raw_host  # the same text SQLAlchemy writes
    assert at_t0 == [1]
    assert sorted(in_range) == [1, 2]
    assert times == [T0, T0 + timedelta(microseconds=1), T0 + timedelta(minutes=1)]
    assert received == last_seen == T0 + timedelta(hours=1)


def test_event_times_are_stored_as_the_text_sqlalchemy_stores_for_them(engine: Engine) -> None:
    """SQLite formats event times itself, a minute's text once (app/ingest/write.py, #13): every
    second, microsecond and minute, hour, day and year boundary is stored byte for byte as Core
    stores the same datetime (written back over it)."""
    times = [
        T0, T0 + timedelta(microseconds=1), T0 + timedelta(seconds=59, microseconds=999_999),
        T0 + timedelta(minutes=1), T0 + timedelta(minutes=1, seconds=7, microseconds=100),
        datetime(2026, 12, 31, 23, 59, 59, 990_000, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
        datetime(2027, 1, 1, 0, 0, 0, 10, tzinfo=UTC), datetime(2028, 2, 29, 9, 5, 3, tzinfo=UTC),
    ]  # fmt: skip
    with engine.begin() as conn:
        write_batch(conn, rows_of(*(ev(seq, at) for seq, at in enumerate(times, start=1))))  # type: ignore[arg-type]
    with engine.connect() as conn:
        stored = conn.execute(select(event.c.seq, event.c.time).order_by(event.c.seq)).all()
    assert [at for _seq, at in stored] == times
    if engine.dialect.name != "sqlite":
        return
    with engine.begin() as conn:
        before = conn.exec_driver_sql("SELECT seq, time FROM event ORDER BY seq").all()
        for seq, at in stored:
            conn.execute(update(event).where(event.c.seq == seq).values(time=at))
        assert conn.exec_driver_sql("SELECT seq, time FROM event ORDER BY seq").all() == before


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_time_text_written_on_the_cursor_is_the_text_core_writes_for_any_time(engine: Engine) -> None:
    """sqlite_time formats the host, guest and received times the DB-API statements bind (#13):
    the text Core stores for the same datetime, whatever its year, microseconds and offset."""
    from datetime import timezone

    from pydantic_core import TzInfo

    zones = [UTC, TzInfo(0), timezone(timedelta(hours=2)), timezone(timedelta(hours=-23, minutes=-59))]
    times = [
        datetime(year, 3, 1, 0, 0, 0, micro, tzinfo=tz)
        for year in (1, 999, 2026, 9999)
        for micro in (0, 1, 999_999)
        for tz in zones
        if not (year == 1 and tz.utcoffset(None) > timedelta(0))  # before year 1 in UTC
        and not (year == 9999 and tz.utcoffset(None) < timedelta(0))
    ]
    with engine.begin() as conn:
        write_batch(conn, rows_of(ev(1, T0)))  # type: ignore[arg-type]
    for at in times:
        with engine.begin() as conn:
            conn.execute(update(host).values(last_seen_at=at))
            core = conn.exec_driver_sql("SELECT last_seen_at FROM host").scalar()
        assert sqlite_time(at) == core, at


def test_batch_partly_stored_before_adds_only_its_new_events_to_the_rollups(engine: Engine) -> None:
    with engine.begin() as conn:
        write_batch(conn, rows_of(ev(1, count=5), ev(2, count=5)))  # type: ignore[arg-type]
    with engine.begin() as conn:
        again = write_batch(conn, rows_of(ev(1, count=5), ev(2, count=5), ev(3, count=7)))  # type: ignore[arg-type]
    assert (again.accepted, again.duplicates) == (1, 2)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event)).scalar() == 3
        assert conn.execute(select(func.sum(rollup_1m.c.count))).scalar() == 17
        assert conn.execute(select(func.sum(rollup_1m.c.events))).scalar() == 3


def _rows_at(*evs: object, boot_id: str = "boot-1") -> object:
    received = datetime.now(UTC)
    body = payload(evs, host=host_info(boot_id=boot_id)).to_json().encode()  # type: ignore[arg-type]
    return build_rows(parse_payload(body), received)


def test_an_event_resent_with_another_time_is_a_duplicate_even_in_another_day(engine: Engine) -> None:
    # The idempotency key is (host, boot_id, source, seq) whatever the time: an agent that reads
    # its kernel log again after the clock was stepped dates the same record anew. PostgreSQL
    # partitions event by day, so the three times here land in three partitions (today's,
    # tomorrow's and the default one for T0, days before the partitions made ahead).
    today = day_start(datetime.now(UTC))
    with engine.begin() as conn:
        first = write_batch(conn, _rows_at(ev(1, today + timedelta(hours=1)), ev(2, T0)))  # type: ignore[arg-type]
    resent = _rows_at(
        ev(1, today + timedelta(days=1, hours=1)), ev(2, today + timedelta(hours=2)), ev(3, T0), ev(4, T0)
    )
    with engine.begin() as conn:
        second = write_batch(conn, resent)  # type: ignore[arg-type]
    with engine.begin() as conn:
        third = write_batch(conn, resent)  # type: ignore[arg-type]
    assert (first.accepted, second.accepted, second.duplicates) == (2, 2, 2)
    assert (third.accepted, third.duplicates) == (0, 4)
    with engine.connect() as conn:
        stored = conn.execute(select(event.c.seq, event.c.time).order_by(event.c.seq)).all()
        assert conn.execute(select(func.sum(rollup_1m.c.count))).scalar() == 4
    assert [tuple(r) for r in stored] == [(1, today + timedelta(hours=1)), (2, T0), (3, T0), (4, T0)]


def test_a_late_batch_below_the_highest_stored_seq_is_stored_once(engine: Engine) -> None:
    # SEQs 1 and 4 first, then the batch with 2 and 3 that was delayed (PostgreSQL: below the
    # seq mark, so looked up rather than taken as new), then all of them again.
    with engine.begin() as conn:
        write_batch(conn, _rows_at(ev(1, T0), ev(4, T0)))  # type: ignore[arg-type]
    with engine.begin() as conn:
        late = write_batch(conn, _rows_at(ev(2, T0), ev(3, T0 + timedelta(days=3))))  # type: ignore[arg-type]
    with engine.begin() as conn:
        again = write_batch(conn, _rows_at(*(ev(s, T0 + timedelta(days=1)) for s in range(1, 6))))  # type: ignore[arg-type]
    with engine.begin() as conn:
        new_boot = write_batch(conn, _rows_at(ev(1, T0), ev(2, T0), boot_id="boot-2"))  # type: ignore[arg-type]
    assert (late.accepted, late.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (1, 4)  # only seq 5
    assert (new_boot.accepted, new_boot.duplicates) == (2, 0)  # another boot's seqs start again
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event)).scalar() == 7


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_two_first_batches_of_a_new_host_racing_store_its_events_once(engine: Engine) -> None:
    # A new host's first batch skips the lookup of stored keys (its transaction made the host).
    # Two writers racing with the first batch of one new host: the second waits for the first's
    # host row and must not take the host as its own, or the resend, dated anew (a clock step),
    # would be stored twice.
    n = PG_COPY_EVENTS + 10  # by COPY, as a backlog's batches go
    first = _rows_at(*(ev(s, T0 + timedelta(seconds=s)) for s in range(n)))
    again = _rows_at(*(ev(s, T0 + timedelta(days=1, seconds=s)) for s in range(n)))
    results: dict[str, Any] = {}

    def second_writer() -> None:
        with engine.begin() as conn:
            results["again"] = write_batch(conn, again)  # type: ignore[arg-type]

    with engine.connect() as conn:
        with conn.begin():
            results["first"] = write_batch(conn, first)  # type: ignore[arg-type]
            racer = threading.Thread(target=second_writer)
            racer.start()
            poll(lambda: waiting_on_locks(engine), "the second writer waiting for the first's host row", 10)
        racer.join(timeout=60)
    assert (results["first"].accepted, results["first"].duplicates) == (n, 0)
    assert (results["again"].accepted, results["again"].duplicates) == (0, n)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event)).scalar() == n
        assert conn.execute(select(func.count()).select_from(host)).scalar() == 1


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_event_lookup_and_insert_take_the_events_of_several_hosts_at_once(engine: Engine) -> None:
    # The grouped writer's contract: one lookup and one insert for the events of many hosts.
    b1, b2 = _rows_at(ev(1, T0), ev(2, T0)), _rows_at(ev(1, T0), boot_id="boot-2")
    hosts = {}
    for name, rows in (("host-1", b1), ("host-2", b2)):
        rows.host["name"] = name  # type: ignore[attr-defined]
        with engine.begin() as conn:
            hosts[name] = write_batch(conn, rows).host_id  # type: ignore[arg-type]
    h1, h2 = hosts["host-1"], hosts["host-2"]
    later = T0 + timedelta(days=2)
    with engine.begin() as conn:
        conn.execute(select(host.c.id).where(host.c.id.in_([h1, h2])).with_for_update())
        keys = [
            (h1, "boot-1", "kmsg", 1, later),  # stored, at another time
            (h1, "boot-1", "kmsg", 3, later),
            (h2, "boot-2", "kmsg", 1, T0),  # stored
            (h2, "boot-2", "kmsg", 2, T0),
            (h2, "boot-1", "kmsg", 1, T0),  # host-2 has no boot-1
        ]
        stored = _stored_keys(conn, keys)
        assert stored == {(h1, "boot-1", "kmsg", 1), (h2, "boot-2", "kmsg", 1)}
        template = dict(b1.events[0])  # type: ignore[attr-defined]
        fresh = [
            pg_row({**template, "host_id": h, "boot_id": boot, "source": source, "seq": seq, "time": at})
            for h, boot, source, seq, at in keys
            if (h, boot, source, seq) not in stored
        ]
        inserted = _insert_events_postgresql(conn, fresh)
        assert inserted == {(h1, "boot-1", "kmsg", 3), (h2, "boot-2", "kmsg", 2), (h2, "boot-1", "kmsg", 1)}
        assert _stored_keys(conn, keys) == {k[:4] for k in keys}
        marks = conn.execute(text("SELECT host_id, boot_id, source, max_seq FROM event_seq_mark")).all()
    assert sorted(tuple(m) for m in marks) == sorted(
        [(h1, "boot-1", "kmsg", 3), (h2, "boot-2", "kmsg", 2), (h2, "boot-1", "kmsg", 1)]
    )


def pg_row(e: dict[str, Any]) -> tuple[Any, ...]:
    """An event dict as _insert_events_postgresql takes it (no guest)."""
    return tuple({**e, "guest_id": None}[c] for c in EVENT_COLUMNS)


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_large_insert_by_copy_stores_every_event_and_moves_the_marks(engine: Engine) -> None:
    first = _rows_at(ev(1, T0))
    with engine.begin() as conn:
        host_id = write_batch(conn, first).host_id  # type: ignore[arg-type]
    template = {**dict(first.events[0]), "host_id": host_id}  # type: ignore[attr-defined]
    rows = [
        pg_row({**template, "seq": seq, "time": T0 + timedelta(seconds=seq)})
        for seq in range(2, 2 + PG_COPY_EVENTS)
    ]
    with engine.begin() as conn:
        conn.execute(select(host.c.id).where(host.c.id == host_id).with_for_update())
        assert _insert_events_postgresql(conn, rows) is None  # every one inserted
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event)).scalar() == 1 + PG_COPY_EVENTS
        assert conn.execute(text("SELECT max_seq FROM event_seq_mark")).scalar() == 1 + PG_COPY_EVENTS


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_large_insert_skips_a_stored_event_even_when_its_mark_is_behind(engine: Engine) -> None:
    """COPY meets the stored key; the insert falls back to ON CONFLICT and stores the others once."""
    first = _rows_at(ev(1, T0))
    with engine.begin() as conn:
        host_id = write_batch(conn, first).host_id  # type: ignore[arg-type]
        conn.execute(text("DELETE FROM event_seq_mark"))  # a mark behind what is stored
    template = {**dict(first.events[0]), "host_id": host_id}  # type: ignore[attr-defined]
    seqs = range(1, 1 + PG_COPY_EVENTS)  # seq 1 at T0 is stored
    rows = [pg_row({**template, "seq": seq, "time": T0 + timedelta(seconds=seq - 1)}) for seq in seqs]
    with engine.begin() as conn:
        conn.execute(select(host.c.id).where(host.c.id == host_id).with_for_update())
        inserted = _insert_events_postgresql(conn, rows)
    assert inserted == {(host_id, "boot-1", "kmsg", seq) for seq in seqs if seq != 1}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(event)).scalar() == PG_COPY_EVENTS
        assert conn.execute(text("SELECT max_seq FROM event_seq_mark")).scalar() == PG_COPY_EVENTS


def test_host_and_guest_rows_read_back_as_sent_and_as_sqlalchemy_would_store_them(engine: Engine) -> None:
    """SQLite writes the host and guest rows on the DB-API cursor with its own conversions
    (app/ingest/write.py, #13): they read back through Core as sent, and each row's stored
    values are those SQLAlchemy stores for the same Python values (written back over it)."""
    health = {"dropped": 2, "rss_kib": 5120, "ok": True, "note": "é", "none": None}
    details: dict[str, object] = {"cpus": [1, 3], "why": None}
    first = replace(
        payload(
            [ev(1, T0, guest="vm-a", action=Action.SIGBUS), ev(2, T0 + timedelta(seconds=1), guest="vm-b")],
            state(T0, verdict="drift", details=details, sld_on=(True, False)),
        ),
        health=health,
    )
    second = replace(payload([ev(3, T0 + timedelta(seconds=20), guest="vm-a")]), health=None)
    received = T0 + timedelta(hours=1)
    for p, at in ((first, received), (second, received + timedelta(seconds=10))):
        with engine.begin() as conn:
            write_batch(conn, build_rows(parse_payload(p.to_json().encode()), at))
    with engine.connect() as conn:
        h = conn.execute(select(host)).one()._asdict()
        guests = {r.name: r._asdict() for r in conn.execute(select(guest))}
        sightings = [r._asdict() for r in conn.execute(select(guest_host).order_by(guest_host.c.guest_id))]
    assert h["health"] == health  # the batch without health keeps the one held
    assert h["verdict_details"] == details and h["verdict"] == "drift"
    assert h["last_seen_at"] == received + timedelta(seconds=10) and h["last_seen_at"].tzinfo is not None
    assert h["verdict_since"] == T0 and h["state_observed_at"] == T0
    assert (h["agent_reported"], h["sld_supported"], h["cpus_on"], h["cpus_off"]) == (True, True, 1, 1)
    assert guests["vm-a"]["killed_at"] == T0 and guests["vm-a"]["last_seen_at"] == T0 + timedelta(seconds=20)
    assert guests["vm-b"]["killed_at"] is None and guests["vm-b"]["first_seen_at"] == T0 + timedelta(
        seconds=1
    )
    assert [s["last_seen_at"] for s in sightings] == [T0 + timedelta(seconds=20), T0 + timedelta(seconds=1)]
    if engine.dialect.name != "sqlite":
        return

    def raw(conn: Any, table: Any) -> list[tuple[Any, ...]]:
        quoted = ", ".join(f"typeof({c.name}) || ':' || quote({c.name})" for c in table.c)
        return list(conn.exec_driver_sql(f"SELECT {quoted} FROM {table.name} ORDER BY 1, 2"))

    with engine.begin() as conn:
        before = {t.name: raw(conn, t) for t in (host, guest, guest_host)}
        conn.execute(update(host).where(host.c.id == h["id"]).values(h))
        for g in guests.values():
            conn.execute(update(guest).where(guest.c.id == g["id"]).values(g))
        for s in sightings:
            key = (guest_host.c.host_id == s["host_id"]) & (guest_host.c.guest_id == s["guest_id"])
            conn.execute(update(guest_host).where(key).values(s))
        assert {t.name: raw(conn, t) for t in (host, guest, guest_host)} == before


def _stored_sums(engine: Engine, step: timedelta) -> dict[tuple[object, ...], tuple[int, int]]:
    """(bucket, host, guest or 0, kind, action, source) -> (sum of count, events), from the events
    stored: what the rollup tables must hold."""
    sums: dict[tuple[object, ...], tuple[int, int]] = {}
    with engine.connect() as conn:
        stored = conn.execute(
            select(event.c.time, event.c.host_id, event.c.guest_id, event.c.kind, event.c.action,
                   event.c.source, event.c.count)
        ).all()  # fmt: skip
    for at, host_id, guest_id, kind, action, source, count in stored:
        bucket = datetime.fromtimestamp(at.timestamp() // step.total_seconds() * step.total_seconds(), UTC)
        key = (bucket, host_id, guest_id or 0, kind, action, source)
        total, n = sums.get(key, (0, 0))
        sums[key] = (total + count, n + 1)
    return sums


def _rollup(engine: Engine, table: Any) -> dict[tuple[object, ...], tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.bucket, table.c.host_id, table.c.guest_id, table.c.kind, table.c.action,
                   table.c.source, table.c.count, table.c.events)
        ).all()  # fmt: skip
    return {tuple(r[:6]): (r[6], r[7]) for r in rows}


def test_rollups_hold_the_stored_events_summed_per_minute_and_hour_through_groups_and_resends(
    engine: Engine,
) -> None:
    # Two hosts in one group, events over four hours (minutes and hours cross), guests and host
    # processes, two kinds and actions: first all new (SQLite sums them as it flattens the
    # events), then a resend with new events among them (only the new ones count).
    def batch(name: str, seqs: range) -> Rows:
        evs = [
            ev(s, T0 + timedelta(seconds=97 * s), guest=None if s % 3 == 0 else f"vm-{s % 4}",
               action=Action.THROTTLE if s % 5 == 0 else Action.WARN,
               kind=Kind.BUS_LOCK if s % 2 else Kind.SPLIT_LOCK, count=1 + s % 4)
            for s in seqs
        ]  # fmt: skip
        body = payload(evs, host=host_info(name=name)).to_json().encode()
        return build_rows(parse_payload(body), T0 + timedelta(hours=4))

    with engine.begin() as conn:
        first = write_group(conn, [batch("host-a", range(0, 120)), batch("host-b", range(0, 80))])
    with engine.begin() as conn:
        again = write_group(conn, [batch("host-a", range(100, 140)), batch("host-b", range(0, 80))])
    assert [r.accepted for r in first] == [120, 80]
    assert [(r.accepted, r.duplicates) for r in again] == [(20, 20), (0, 80)]
    minutes = _stored_sums(engine, timedelta(minutes=1))
    hours = _stored_sums(engine, timedelta(hours=1))
    assert len({k[0] for k in hours}) == 4
    assert _rollup(engine, rollup_1m) == minutes
    assert _rollup(engine, rollup_1h) == hours


def test_rollups_of_more_buckets_than_one_statement_takes_are_all_stored(engine: Engine) -> None:
    # One event a minute: past SQLITE_ROWS_PER_STATEMENT rollup_1m rows in one round, all new
    # (summed while flattening) and then partly resent (summed by rollups()).
    def batch(seqs: range) -> Rows:
        evs = [ev(s, T0 + timedelta(minutes=s), guest=f"vm-{s % 2}" if s % 3 else None) for s in seqs]
        return build_rows(parse_payload(payload(evs).to_json().encode()), T0 + timedelta(days=2))

    with engine.begin() as conn:
        first = write_batch(conn, batch(range(0, SQLITE_ROWS_PER_STATEMENT + 100)))
    with engine.begin() as conn:
        again = write_batch(conn, batch(range(1050, 2150)))
    assert (first.accepted, again.accepted, again.duplicates) == (1100, 1050, 50)
    assert _rollup(engine, rollup_1m) == _stored_sums(engine, timedelta(minutes=1))
    assert _rollup(engine, rollup_1h) == _stored_sums(engine, timedelta(hours=1))


def test_sqlite_rollup_rows_go_in_power_of_two_chunks_covering_them_in_order() -> None:
    # A bounded set of statement texts (sqlite3 caches 128 prepared statements per connection).
    assert _power_of_two_chunks(0) == []
    assert _power_of_two_chunks(72) == [(0, 64), (64, 8)]
    assert _power_of_two_chunks(1100) == [(0, 512), (512, 512), (1024, 64), (1088, 8), (1096, 4)]
    for n in range(1, 1200):
        chunks = _power_of_two_chunks(n)
        assert [start for start, _ in chunks] == [
            sum(size for _, size in chunks[:i]) for i in range(len(chunks))
        ]
        assert sum(size for _, size in chunks) == n
        assert all(size & (size - 1) == 0 and size <= 512 for _, size in chunks)


def test_rollup_buckets_are_utc_minutes_and_hours_whatever_the_session_time_zone(engine: Engine) -> None:
    # PostgreSQL sums the rollups in the event statement (date_trunc): a session in a zone
    # half an hour off UTC must still get UTC hours, as rollups() and SQLite make them.
    evs = [ev(s, T0 + timedelta(minutes=13 * s), count=s) for s in range(1, 12)]
    rows = build_rows(parse_payload(payload(evs).to_json().encode()), T0 + timedelta(hours=3))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL TimeZone = 'Asia/Kolkata'")
        assert write_batch(conn, rows).accepted == 11
    hours = _stored_sums(engine, timedelta(hours=1))
    assert len(hours) == 3
    assert _rollup(engine, rollup_1h) == hours
    assert _rollup(engine, rollup_1m) == _stored_sums(engine, timedelta(minutes=1))
