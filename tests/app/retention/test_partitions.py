"""PostgreSQL: the scale migration partitions an existing event table by day, rows kept.

(SQLite keeps its plain event table: tests/app/store/test_migrations.py compares it.)
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from app.retention.plan import day_start, partition_name
from app.store.engine import make_engine
from tests.app.conftest import upgrade

pytestmark = pytest.mark.postgres

TODAY = day_start(dt.datetime.now(dt.UTC))
DAY = dt.timedelta(days=1)


def _insert_event(conn: object, seq: int, at: dt.datetime) -> None:
    conn.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO event (host_id, boot_id, source, seq, time, received_at, kind, comm, tid, count,"
            " action) VALUES (1, 'b', 'kmsg', :seq, :at, :at, 'split_lock', 'gcc', 1, 1, 'warn')"
        ),
        {"seq": seq, "at": at},
    )


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_existing_events_are_copied_into_day_partitions_and_ids_continue(db_url: str) -> None:
    upgrade(db_url, "2026_11_30_enrollment")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO host (id, name, boot_id, kernel, cpu_model, agent_version, first_seen_at,"
                    " last_seen_at, cpus)"
                    " VALUES (1, 'h1', 'b', '6.8', 'x', '0.1', now(), now(), '[]')"
                )
            )
            _insert_event(conn, 1, TODAY - 10 * DAY + dt.timedelta(hours=3))
            _insert_event(conn, 2, TODAY - 3 * DAY)
            _insert_event(conn, 3, TODAY + dt.timedelta(minutes=1))
        upgrade(db_url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT partstrat FROM pg_partitioned_table")).scalars().all() == ["r"]
            where = dict(conn.execute(text("SELECT seq, tableoid::regclass::text FROM event")).all())
            assert where == {
                1: partition_name(TODAY - 10 * DAY),
                2: partition_name(TODAY - 3 * DAY),
                3: partition_name(TODAY),
            }
            # Made ahead: a week of tomorrows; and the default partition for any other time.
            assert conn.execute(
                text("SELECT to_regclass(:n)"), {"n": partition_name(TODAY + 7 * DAY)}
            ).scalar()
            assert conn.execute(text("SELECT to_regclass('event_default')")).scalar()
            # The unique key holds the partition key, and a resend of the same event is refused by it.
            key = conn.execute(
                text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conname = 'uq_event_host_id_boot_id_source_seq'"
                )
            ).scalar()
            assert key == 'UNIQUE (host_id, boot_id, source, seq, "time")'
            _insert_event(conn, 4, TODAY + dt.timedelta(minutes=2))
            ids = dict(conn.execute(text("SELECT seq, id FROM event")).all())
            assert ids[4] > max(ids[1], ids[2], ids[3])  # the old sequence goes on
        upgrade(db_url, "2026_11_30_enrollment", down=True)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_partitioned_table")).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM event")).scalar() == 4
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_event_marks_start_at_the_highest_seq_already_stored_so_old_events_stay_duplicates(
    db_url: str,
) -> None:
    from app.ingest.rows import build_rows
    from app.ingest.schema import parse_payload
    from app.ingest.write import write_batch
    from tests.app.ingest.payloads import event, host_info, payload

    upgrade(db_url, "2026_11_30_scale")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO host (id, name, boot_id, kernel, cpu_model, agent_version, first_seen_at,"
                    " last_seen_at, cpus)"
                    " VALUES (1, 'host-1', 'b', '6.8', 'x', '0.1', now(), now(), '[]')"
                )
            )
            for seq in (1, 5, 3):
                _insert_event(conn, seq, TODAY - 2 * DAY)
        upgrade(db_url)
        with engine.begin() as conn:
            marks = conn.execute(text("SELECT host_id, boot_id, source, max_seq FROM event_seq_mark")).all()
            assert [tuple(m) for m in marks] == [(1, "b", "kmsg", 5)]
        # Stored before the marks existed, resent now with another time: still duplicates.
        at = TODAY + dt.timedelta(hours=1)
        body = payload([event(s, at) for s in (3, 4, 5, 6)], host=host_info(boot_id="b")).to_json()
        with engine.begin() as conn:
            result = write_batch(conn, build_rows(parse_payload(body.encode()), at))
        assert (result.accepted, result.duplicates) == (2, 2)
        upgrade(db_url, "2026_11_30_scale", down=True)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('event_seq_mark')")).scalar() is None
            assert conn.execute(text("SELECT count(*) FROM event")).scalar() == 5
    finally:
        engine.dispose()
