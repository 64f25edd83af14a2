"""write_batch on a Core connection: idempotent, and its stored times read like SQLAlchemy's."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, select, text

from app.ingest.rows import build_rows
from app.ingest.schema import parse_payload
from app.ingest.write import write_batch
from app.store.tables import event, host, rollup_1m
from tests.app.ingest.payloads import T0, payload
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
