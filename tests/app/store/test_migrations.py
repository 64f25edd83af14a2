"""Migrations create exactly app/store/tables.py, from an empty database, on both engines."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from app.retention.partitions import include_name, include_object
from app.store.engine import make_engine
from app.store.schema_check import head_revision, schema_status
from app.store.tables import guest_host, metadata
from tests.app.conftest import upgrade


def test_upgrade_from_empty_creates_every_table_and_matches_the_metadata(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert set(metadata.tables) <= set(inspect(conn).get_table_names())
            # The comparison skips PostgreSQL's day partitions of event and event's unique key
            # there (it holds the partition key): the partitioning tests below check those.
            context = MigrationContext.configure(
                conn,
                opts={"compare_type": True, "include_name": include_name, "include_object": include_object},
            )
            diffs = compare_metadata(context, metadata)
        assert diffs == []
    finally:
        engine.dispose()


def test_upgrade_twice_is_harmless_and_leaves_the_database_at_head(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        status = schema_status(engine)
        assert status.ok and status.current == head_revision()
    finally:
        engine.dispose()


def test_empty_database_is_reported_behind_with_the_command_to_run(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        status = schema_status(engine)
    finally:
        engine.dispose()
    assert not status.ok
    assert "is at revision none" in status.message
    assert head_revision() in status.message
    assert "splitwatch db upgrade" in status.message


def test_unreachable_database_is_reported_not_raised() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")
    try:
        status = schema_status(engine)
    finally:
        engine.dispose()
    assert not status.ok
    assert "cannot be reached" in status.message


def test_hardening_carries_each_hosts_sightings_of_existing_guests_into_guest_host(db_url: str) -> None:
    # #14: guest_host did not exist; guests and their events did. Each host gets its own view.
    upgrade(db_url, "2026_11_25_initial")
    engine = make_engine(db_url)
    t0, t1, t2 = "2026-11-24 12:00:00", "2026-11-24 13:00:00", "2026-11-24 14:00:00"
    try:
        with engine.begin() as conn:
            for host_id, name in ((1, "h1"), (2, "h2")):
                conn.execute(
                    text(
                        "INSERT INTO host (id, name, boot_id, kernel, cpu_model, agent_version,"
                        " first_seen_at, last_seen_at, cpu_off_streak, cpus)"
                        " VALUES (:id, :name, 'b', '6.8', 'x', '0.1', :t, :t, '{}', '[]')"
                    ),
                    {"id": host_id, "name": name, "t": t0},
                )
            conn.execute(
                text(
                    "INSERT INTO guest (id, name, uuid, vmm, first_seen_at, last_seen_at, last_host_id,"
                    " last_action, killed_at) VALUES (1, 'web', 'u-1', 'qemu', :t0, :t2, 2, 'sigbus', :t2)"
                ),
                {"t0": t0, "t2": t2},
            )
            for seq, host_id, at, action in ((1, 1, t0, "warn"), (2, 1, t1, "warn"), (3, 2, t2, "sigbus")):
                conn.execute(
                    text(
                        "INSERT INTO event (host_id, boot_id, source, seq, time, received_at, kind, comm,"
                        " tid, count, action, guest_id)"
                        " VALUES (:h, 'b', 'kmsg', :seq, :at, :at, 'split_lock', 'CPU 0/KVM',"
                        " 1, 1, :action, 1)"
                    ),
                    {"h": host_id, "seq": seq, "at": at, "action": action},
                )
    finally:
        engine.dispose()
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    guest_host.c.host_id,
                    guest_host.c.uuid,
                    guest_host.c.first_seen_at,
                    guest_host.c.last_seen_at,
                    guest_host.c.last_action,
                    guest_host.c.killed_at,
                ).order_by(guest_host.c.host_id)
            ).all()
    finally:
        engine.dispose()
    at = [dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC) for t in (t0, t1, t2)]
    assert [tuple(r) for r in rows] == [
        (1, "u-1", at[0], at[1], None, None),
        (2, "u-1", at[2], at[2], "sigbus", at[2]),
    ]


def test_host_truth_drops_the_drift_streaks_in_place_and_keeps_every_event(db_url: str) -> None:
    # #16: on SQLite a batch copy of `host` would drop it, and with foreign keys on that drop
    # cascades into event and host_state. The columns are altered in place instead.
    upgrade(db_url, "2026_11_30_hardening")
    t0 = "2026-11-24 12:00:00"
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO host (id, name, boot_id, kernel, cpu_model, agent_version,"
                    " first_seen_at, last_seen_at, cpu_off_streak, cpus)"
                    " VALUES (1, 'h1', 'b', '6.8', 'x', '0.1', :t, :t, :streak, '[]')"
                ),
                {"t": t0, "streak": '{"3": 2}'},
            )
            conn.execute(
                text(
                    "INSERT INTO host_state (host_id, observed_at, boot_id, kernel, mode, sld_supported,"
                    " bld_supported, cpus_on, cpus_off, cpus_error, drift, cpus)"
                    " VALUES (1, :t, 'b', '6.8', 'warn', true, true, 3, 1, 0, true, '[]')"
                ),
                {"t": t0},
            )
            conn.execute(
                text(
                    "INSERT INTO event (host_id, boot_id, source, seq, time, received_at, kind, comm,"
                    " tid, count, action)"
                    " VALUES (1, 'b', 'kmsg', 1, :t, :t, 'split_lock', 'java', 7, 1, 'warn')"
                ),
                {"t": t0},
            )
    finally:
        engine.dispose()
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            h = conn.execute(text("SELECT agent_reported, verdict FROM host")).one()
            states = conn.execute(text("SELECT verdict FROM host_state")).all()
            events = conn.execute(text("SELECT count(*) FROM event")).scalar_one()
            columns = {c["name"] for c in inspect(conn).get_columns("host")}
    finally:
        engine.dispose()
    assert (bool(h.agent_reported), h.verdict) == (True, None)  # an agent reported it: alive as before
    assert [tuple(s) for s in states] == [(None,)] and events == 1
    assert "cpu_off_streak" not in columns


def _store_events(url: str) -> None:
    """Two hosts' events through ingest, each with a guest of its own (and one without)."""
    from app.ingest.rows import build_rows
    from app.ingest.schema import parse_payload
    from app.ingest.write import write_batch
    from tests.app.ingest.payloads import T0, host_info, payload
    from tests.app.ingest.payloads import event as ev

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for name in ("h1", "h2"):
                p = payload(
                    [ev(1, T0, guest=f"{name}-vm"), ev(2, T0, guest=f"{name}-vm"), ev(3, T0, guest=None)],
                    None,
                    host=host_info(name),
                )
                write_batch(conn, build_rows(parse_payload(p.to_json().encode()), T0))
    finally:
        engine.dispose()


def _events_by_host(url: str) -> list[tuple[str, int, str | None]]:
    """(host name, seq, guest name) of every stored event."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT host.name, event.seq, guest.name FROM event JOIN host ON host.id = event.host_id"
                    " LEFT JOIN guest ON guest.id = event.guest_id ORDER BY host.name, event.seq"
                )
            ).all()
    finally:
        engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


def _delete(url: str, sql: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def _assert_deletes_reach_events(url: str) -> None:
    """A deleted host takes its events with it; a deleted guest's events stay, without it."""
    _store_events(url)
    assert _events_by_host(url) == [
        ("h1", 1, "h1-vm"), ("h1", 2, "h1-vm"), ("h1", 3, None),
        ("h2", 1, "h2-vm"), ("h2", 2, "h2-vm"), ("h2", 3, None),
    ]  # fmt: skip
    _delete(url, "DELETE FROM guest WHERE name = 'h2-vm'")
    _delete(url, "DELETE FROM host WHERE name = 'h1'")
    assert _events_by_host(url) == [("h2", 1, None), ("h2", 2, None), ("h2", 3, None)]
    engine = make_engine(url)
    try:
        with engine.connect() as conn:  # no event left behind the join above
            assert conn.execute(text("SELECT count(*) FROM event")).scalar_one() == 3
    finally:
        engine.dispose()


def test_deleting_a_host_or_a_guest_reaches_its_events_on_both_engines(db_url: str) -> None:
    # PostgreSQL: triggers on host and guest, not foreign keys on event (2026_11_30_pg_event_refs);
    # SQLite: the foreign keys' ON DELETE actions.
    upgrade(db_url)
    _assert_deletes_reach_events(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            referenced = {fk["referred_table"] for fk in inspect(conn).get_foreign_keys("event")}
    finally:
        engine.dispose()
    assert referenced == (set() if db_url.startswith("postgresql") else {"host", "guest"})


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_pg_event_refs_downgrade_restores_the_foreign_keys_and_upgrade_the_triggers(db_url: str) -> None:
    upgrade(db_url)
    _store_events(db_url)
    upgrade(db_url, "2026_11_30_rollup_key_indexes", down=True)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            referenced = {fk["referred_table"] for fk in inspect(conn).get_foreign_keys("event")}
            triggers = conn.execute(
                text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'event_%_deleted'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert referenced == {"host", "guest"} and triggers == 0
    _delete(db_url, "DELETE FROM event")
    _delete(db_url, "DELETE FROM guest_host")
    _delete(db_url, "DELETE FROM guest")
    _delete(db_url, "DELETE FROM host")
    _assert_deletes_reach_events(db_url)  # the foreign keys' actions, as before
    _delete(db_url, "DELETE FROM host")
    upgrade(db_url)
    _assert_deletes_reach_events(db_url)  # the triggers again
