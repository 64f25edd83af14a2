"""write_group: the requests that queue together are written as if one after the other (#13).

The writer hands write_group every ingest batch that waited for the same transaction, and
write_group writes each table once for all of them. Whatever the mix (several batches of one
host, hosts sharing a guest name, resends, partial resends, a state change, an older state
sample, a new host), the database must end exactly as with write_batch called batch by batch:
compared here table by table, by natural keys (row ids may be handed out in another order).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from agent.payload import Action, Event, Payload
from app.errors import PayloadTooLarge
from app.ingest import write as write_module
from app.ingest.rows import Rows, build_rows
from app.ingest.schema import parse_payload
from app.ingest.write import PG_COPY_EVENTS, BatchJob, GuestLimits, WriteResult, write_batch, write_group
from app.ingest.writer import GROUP_EVENTS, PG_WRITERS, make_writer
from app.retention.partitions import SEQ_MARK_TABLE
from app.store.engine import make_engine
from app.store.tables import event, gap, guest, guest_host, host, host_state, rollup_1h, rollup_1m
from tests.app.alerts.conftest import poll
from tests.app.conftest import _Postgres, upgrade, waiting_on_locks
from tests.app.ingest.payloads import T0, host_info, payload, state
from tests.app.ingest.payloads import event as ev
from tests.app.ingest.payloads import gap as gp

Batch = Callable[[], Rows]  # a fresh Rows each call: build_rows consumes its payload


def batch(p: Payload, received: timedelta = timedelta(hours=1)) -> Batch:
    body = p.to_json().encode()
    return lambda: build_rows(parse_payload(body), T0 + received)


def mixed_batches(seed: int) -> list[Batch]:
    """Batches of 5 hosts in a shuffled order: the cases a group meets in a real fleet."""
    rnd = random.Random(seed)
    out: list[Batch] = []
    for n in range(5):
        name = f"host-{n}"
        shared = "vm-shared" if n % 2 else f"vm-{n}"  # hosts 1 and 3 report a guest of the same name
        for k in range(3):
            at = T0 + timedelta(seconds=10 * k)
            evs = [
                ev(100 * k + i, at + timedelta(seconds=i), guest=rnd.choice([shared, f"vm-{n}-b", None]),
                   action=rnd.choice([Action.WARN, Action.SIGBUS]))
                for i in range(rnd.randint(0, 4))
            ]  # fmt: skip
            st = state(T0 + timedelta(seconds=10 * k), sld_on=(True, k != 2, True, True)) if k != 1 else None
            gaps = [gp(1000 + k, 1001 + k)] if k == 2 else []
            out.append(batch(payload(evs, st, gaps, host=host_info(name, boot_id=f"boot-{n}"))))
            if rnd.random() < 0.5:
                out.append(out[-1])  # a resend
        # An older sample arriving late, and a batch partly stored before.
        me = host_info(name, boot_id=f"boot-{n}")
        out.append(batch(payload([], state(T0 - timedelta(minutes=5), sld_on=(False,) * 4), host=me)))
        out.append(batch(payload([ev(0, T0), ev(999, T0 + timedelta(minutes=1))], host=me)))
    rnd.shuffle(out)
    return out


def dump(engine: Engine) -> dict[str, Any]:
    """Every ingest table by natural keys, ids replaced by the names they stand for."""
    with engine.connect() as conn:
        hosts = {r.id: r.name for r in conn.execute(select(host.c.id, host.c.name))}
        guests = {r.id: r.name for r in conn.execute(select(guest.c.id, guest.c.name))}
        guests[0] = None  # rollups key "no guest" as 0

        def rows(table: Any, order: Sequence[str]) -> list[dict[str, Any]]:
            out = []
            for r in conn.execute(select(table)):
                m = dict(r._mapping)
                m.pop("id", None)
                for key, names in (("host_id", hosts), ("last_host_id", hosts), ("guest_id", guests)):
                    if key in m and m[key] is not None:
                        m[key] = names[m[key]]
                out.append(m)
            return sorted(out, key=lambda m: tuple(str(m[k]) for k in order))

        return {
            "host": rows(host, ["name"]),
            "host_state": rows(host_state, ["host_id", "observed_at"]),
            "guest": rows(guest, ["name"]),
            "guest_host": rows(guest_host, ["host_id", "guest_id"]),
            "event": rows(event, ["host_id", "boot_id", "source", "seq"]),
            "rollup_1m": rows(rollup_1m, ["bucket", "host_id", "guest_id", "kind", "action", "source"]),
            "rollup_1h": rows(rollup_1h, ["bucket", "host_id", "guest_id", "kind", "action", "source"]),
            "gap": rows(gap, ["host_id", "boot_id", "source", "first_seq", "reason"]),
        }


@pytest.fixture
def second_engine(engine: Engine, tmp_path: Path, _postgres: _Postgres) -> Iterator[Engine]:
    """An empty database of the same kind as `engine`, for the one-by-one reference."""
    sqlite = engine.dialect.name == "sqlite"
    url = f"sqlite:///{tmp_path / 'reference.db'}" if sqlite else _postgres.create()
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()
    if not sqlite:
        _postgres.drop(url)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_group_leaves_the_database_as_its_batches_written_one_by_one(
    engine: Engine, second_engine: Engine, seed: int
) -> None:
    batches = mixed_batches(seed)
    one_by_one: list[WriteResult] = []
    for b in batches:
        with second_engine.begin() as conn:
            one_by_one.append(write_batch(conn, b()))
    grouped: list[WriteResult] = []
    for start in range(0, len(batches), 16):  # groups of the writer's size
        with engine.begin() as conn:
            grouped.extend(write_group(conn, [b() for b in batches[start : start + 16]]))
    assert [(r.accepted, r.duplicates) for r in grouped] == [(r.accepted, r.duplicates) for r in one_by_one]
    assert sum(r.accepted for r in grouped) > 0 and sum(r.duplicates for r in grouped) > 0
    assert dump(engine) == dump(second_engine)


def test_a_batch_over_its_new_guest_limit_fails_the_group_and_alone_after(engine: Engine) -> None:
    """The writer's fallback: the group raises, then each batch runs alone and only that one fails."""
    limits = GuestLimits(per_host=100, new_per_batch=2)
    ok = batch(payload([ev(1, guest="vm-a")], host=host_info("ok-host")))
    over = batch(payload([ev(i, guest=f"vm-{i}") for i in range(3)], host=host_info("busy-host")))
    with pytest.raises(PayloadTooLarge), engine.begin() as conn:
        write_group(conn, [ok(), over()], limits)
    with engine.connect() as conn:
        assert conn.execute(select(host.c.name)).scalars().all() == []  # the group wrote nothing


def test_the_writer_groups_waiting_batches_and_a_failing_one_fails_alone(engine: Engine) -> None:
    writer = make_writer(engine)
    writer.start()
    gate = threading.Event()
    try:
        # Busy writers (every PostgreSQL writer thread, the one SQLite thread) let the batches queue.
        blockers = [
            writer.submit(lambda conn: gate.wait(10))
            for _ in range(PG_WRITERS if engine.dialect.name != "sqlite" else 1)
        ]
        limits = GuestLimits(per_host=100, new_per_batch=2)
        names = [f"host-{i}" for i in range(6)]
        jobs = [BatchJob(batch(payload([ev(1), ev(2)], host=host_info(n)))(), limits) for n in names]
        jobs.insert(
            3,
            BatchJob(
                batch(payload([ev(i, guest=f"vm-{i}") for i in range(3)], host=host_info("over")))(), limits
            ),
        )
        futures = [writer.submit(job) for job in jobs]
        gate.set()
        for b in blockers:
            assert b.result(10) is True
        with pytest.raises(PayloadTooLarge):
            futures[3].result(10)
        answers = [f.result(10) for i, f in enumerate(futures) if i != 3]
        assert [(a.accepted, a.duplicates) for a in answers] == [(2, 0)] * 6
    finally:
        writer.stop()
    with engine.connect() as conn:
        assert sorted(conn.execute(select(host.c.name)).scalars()) == names


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_small_jobs_queued_while_a_small_group_is_written_share_the_next_transaction(engine: Engine) -> None:
    """PostgreSQL: small groups are written one at a time (PG_SHARED_TURN_EVENTS), so the jobs
    arriving meanwhile wait together for the next group; the other writer does not take them
    one by one, each a transaction of its own."""
    gate, started = threading.Event(), threading.Event()

    def block(conn: Connection) -> bool:
        started.set()
        return gate.wait(10)

    def probe(conn: Connection) -> tuple[bool, Any]:  # ran after the blocker's group?, transaction
        return gate.is_set(), conn.exec_driver_sql("SELECT txid_current()").scalar()

    writer = make_writer(engine)
    writer.start()
    try:
        blocker = writer.submit(block)
        assert started.wait(10)  # a group of its own
        probes = [writer.submit(probe) for _ in range(3)]
        time.sleep(0.2)  # time for another writer to take them, were it free to (no timing asserted)
        gate.set()
        assert blocker.result(10) is True
        answers = [f.result(10) for f in probes]
        assert all(after for after, _txid in answers)
        assert len({txid for _after, txid in answers}) == 1
    finally:
        writer.stop()


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_batch_waiting_on_a_row_lock_holds_up_no_other_hosts_batch(engine: Engine) -> None:
    """PostgreSQL: once a small group has only its event statement and COMMIT left, the other
    writer takes the next group (the writers' turn is handed on there, #13): a batch whose
    event statement waits on a lock does not hold up the batches of other hosts behind it."""

    def job(name: str, *events: Event) -> BatchJob:
        return BatchJob(batch(payload(list(events), host=host_info(name)))(), GuestLimits())

    writer = make_writer(engine)
    writer.start()
    try:
        assert writer.submit(job("held-host", ev(1))).result(10).accepted == 1
        with engine.connect() as conn, conn.begin():
            # The held host's seq mark, which its next event statement moves: it waits for us.
            conn.exec_driver_sql(f"SELECT max_seq FROM {SEQ_MARK_TABLE} FOR UPDATE")
            stuck = writer.submit(job("held-host", ev(2)))
            poll(lambda: waiting_on_locks(engine), "the held host's event statement waiting for its mark", 10)
            # Its own guest: a guest row the held batch has upserted would be a lock to wait for.
            behind = writer.submit(job("other-host", ev(1, guest="vm-2")))
            assert behind.result(10).accepted == 1
            assert not stuck.done()
        assert stuck.result(10).accepted == 1
    finally:
        writer.stop()


@pytest.fixture
def guest_host_errors(engine: Engine) -> Iterator[Callable[[str, int], None]]:
    """PostgreSQL: `fail(sqlstate, times)` makes the next `times` writes of guest_host rows
    raise `sqlstate` (a statement sent in one round trip with the host update and the seq
    marks' lookup: write.py _Ahead). A sequence counts them: it is not rolled back."""
    ddl = (
        "CREATE SEQUENCE test_guest_host_writes",
        "CREATE TABLE test_guest_host_fail (sqlstate TEXT, times INTEGER)",
        "CREATE FUNCTION test_guest_host_fail() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "DECLARE f RECORD; BEGIN SELECT * INTO f FROM test_guest_host_fail; "
        "IF f IS NOT NULL AND nextval('test_guest_host_writes') <= f.times THEN "
        "RAISE EXCEPTION 'test failure' USING ERRCODE = f.sqlstate; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER test_guest_host_fail BEFORE INSERT OR UPDATE ON guest_host "
        "FOR EACH ROW EXECUTE FUNCTION test_guest_host_fail()",
    )

    def fail(sqlstate: str, times: int) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO test_guest_host_fail VALUES (%(s)s, %(n)s)", {"s": sqlstate, "n": times}
            )

    with engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement)
    try:
        yield fail
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER test_guest_host_fail ON guest_host")
            conn.exec_driver_sql("DROP FUNCTION test_guest_host_fail()")
            conn.exec_driver_sql("DROP TABLE test_guest_host_fail")
            conn.exec_driver_sql("DROP SEQUENCE test_guest_host_writes")


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_deadlock_in_the_statements_sent_together_is_retried_and_the_batch_stored_once(
    engine: Engine, guest_host_errors: Callable[[str, int], None]
) -> None:
    guest_host_errors("40P01", 1)  # deadlock_detected: the writer retries the transaction
    writer = make_writer(engine)
    writer.start()
    try:
        answer = writer.submit(BatchJob(batch(payload([ev(1), ev(2)], host=host_info("h")))(), GuestLimits()))
        assert (answer.result(10).accepted, answer.result(10).duplicates) == (2, 0)
    finally:
        writer.stop()
    with engine.connect() as conn:
        assert conn.execute(select(event.c.seq).order_by(event.c.seq)).scalars().all() == [1, 2]
        assert conn.exec_driver_sql("SELECT last_value FROM test_guest_host_writes").scalar() == 2


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_an_error_in_the_statements_sent_together_fails_its_batch_alone_and_stores_nothing_of_it(
    engine: Engine, guest_host_errors: Callable[[str, int], None]
) -> None:
    """The database's error reaches the batch as SQLAlchemy's (the API answers 503 for a full
    disk); the writer's connection is then clean for the next batch."""
    guest_host_errors("53100", 1)  # disk_full
    writer = make_writer(engine)
    writer.start()
    try:
        failed = writer.submit(BatchJob(batch(payload([ev(1)], host=host_info("full")))(), GuestLimits()))
        with pytest.raises(DBAPIError) as caught:
            failed.result(10)
        assert getattr(caught.value.orig, "sqlstate", None) == "53100"
        after = [
            writer.submit(BatchJob(batch(payload([ev(1)], host=host_info(f"next-{i}")))(), GuestLimits()))
            for i in range(4)
        ]
        assert [f.result(10).accepted for f in after] == [1] * 4
    finally:
        writer.stop()
    with engine.connect() as conn:
        assert sorted(conn.execute(select(host.c.name)).scalars()) == [f"next-{i}" for i in range(4)]


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_large_batch_is_answered_without_waiting_for_the_batches_queued_behind_it(engine: Engine) -> None:
    """PostgreSQL: its own transaction (GROUP_EVENTS), its sender not held up by the others."""
    writer = make_writer(engine)
    writer.start()
    gate = threading.Event()
    try:
        blockers = [writer.submit(lambda conn: gate.wait(10)) for _ in range(PG_WRITERS)]
        events = [ev(i) for i in range(GROUP_EVENTS)]
        big = BatchJob(batch(payload(events, host=host_info("big")))(), GuestLimits())
        answered = writer.submit(big)
        # Queued behind it: a job that needs the large batch answered first. In the same
        # transaction it would wait for itself.
        behind = writer.submit(lambda conn: answered.exception(timeout=10) is None)
        gate.set()
        for b in blockers:
            assert b.result(10) is True
        assert answered.result(10).accepted == GROUP_EVENTS
        assert behind.result(20) is True
    finally:
        writer.stop()


def test_large_batches_leave_the_database_as_small_ones(
    engine: Engine, second_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stores a round of PG_COPY_EVENTS new events or more by COPY: the same rows and
    answers as its INSERT ... ON CONFLICT for fewer, with a partial and a whole resend."""
    me = host_info("big-host")
    n = PG_COPY_EVENTS + 100

    def evs(first: int) -> list[Any]:
        guests = ["vm-a", "vm-b", None]
        return [ev(first + i, T0 + timedelta(seconds=first + i), guest=guests[i % 3]) for i in range(n)]

    batches = [
        batch(payload(evs(0), host=me)),
        batch(payload(evs(200), host=me)),
        batch(payload(evs(0), host=me)),
    ]
    by_copy: list[WriteResult] = []
    for b in batches:
        with engine.begin() as conn:
            by_copy.append(write_batch(conn, b()))
    monkeypatch.setattr(write_module, "PG_COPY_EVENTS", 10**9)  # the reference: never COPY
    by_insert: list[WriteResult] = []
    for b in batches:
        with second_engine.begin() as conn:
            by_insert.append(write_batch(conn, b()))
    assert [(r.accepted, r.duplicates) for r in by_copy] == [(n, 0), (200, n - 200), (0, n)]
    assert [(r.accepted, r.duplicates) for r in by_copy] == [(r.accepted, r.duplicates) for r in by_insert]
    assert dump(engine) == dump(second_engine)
