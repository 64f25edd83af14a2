"""Where write transactions run.

SQLite allows one writer at a time; many threads each opening a write transaction would
queue on busy_timeout and, past it, fail with "database is locked". So on SQLite there is
exactly ONE writer: a background thread takes jobs from a queue and runs them. Jobs waiting
together share one transaction (one fsync for several batches). They run first without a
SAVEPOINT each; if one fails, that transaction is rolled back and the group runs again with
each job inside its own SAVEPOINT, so a job that fails rolls back alone and the others still
commit; every job gets its own answer through its future.

WAL checkpoints (copying the WAL back into the database file, with an fsync) would
otherwise run inside whichever commit crosses 1000 WAL pages, stalling every batch queued
behind it; the writer's connection turns automatic checkpoints off and a helper thread
runs a PASSIVE checkpoint (it never blocks the writer) on its own connection every
CHECKPOINT_INTERVAL_S while there were commits.

On PostgreSQL, concurrent transactions are the engine's job: PG_WRITERS threads of their own
on PG_WRITERS connections of their own (issue 14: readers filling the threadpool and the read
pool never make ingest wait) each take the jobs waiting together into one transaction, and
if it fails run them again one transaction each, so a failing job fails alone.

On both engines, ingest batches that share a transaction are written together
(`run_jobs`, app/ingest/write.py write_group): one statement per table for the group (#13).

A job is `fn(conn) -> T`; `await writer.run(fn)` from async code, `writer.submit(fn)` (a
concurrent.futures.Future) from threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from app.ingest.write import BEFORE_LAST_EVENTS
from app.store.engine import is_sqlite, make_engine

T = TypeVar("T")
log = logging.getLogger("splitwatch.writer")

# Up to this many waiting jobs share one transaction.
MAX_GROUP = 16
# PostgreSQL: a group takes no more jobs once they hold this many events (a job's `events`,
# app/ingest/write.py BatchJob). Sharing a transaction saves statements and a commit per job,
# which matter for small batches; but one writer taking every large batch queued kept the
# others idle, and answered each batch only when all of its group had been written: with 8
# senders of 1000-event batches, p99 was 2.5-3.0x p50, 1.5-1.7x with this cap (bench/bench_ingest.py,
# #13; docs/benchmarks.md). SQLite's one writer has no other writer to hand work to: there a
# group stays whole (a batch waits for the others in the queue either way, and the group
# writes them for less).
GROUP_EVENTS = 1000
# PostgreSQL: concurrent write transactions per process (threads and connections of their own).
# Few, so requests wait together and share a transaction (#13): bench_fleet pg1 on 2 cores,
# state every 12th request: 8 writers 133 requests/s (2.2 ms of PostgreSQL CPU per request),
# 4 writers 206/s (1.8 ms), 2 writers 207/s (1.3 ms). Once a group cost a few statements, not
# a few per request, its size is what a request costs: 4 -> 2 writers, 1.42 -> 1.02 ms of the
# server's CPU and 1.02 -> 0.73 ms of PostgreSQL's per request at the same rate (bench_fleet
# --compare-src, loaded box). Two, not one, so a slow group (a large batch) holds up only half.
PG_WRITERS = 2
# PostgreSQL: a group of fewer events than this is written by one writer at a time (its turn,
# DirectWriter._loop) until only its event statement and COMMIT are left; a larger one lets the
# other writer take the next group at once. Two writers both taking small groups split the
# steady state's requests into groups half as big, each costing about the same statements:
# bench_fleet pg1, same run, two writers taking groups 0.77 + 0.58 ms of server + PostgreSQL
# CPU per request, one writer 0.62 + 0.40 ms at 664 against 629 requests/s (#13,
# docs/benchmarks.md "Sixth pass"). But a turn held through the whole write made the chain
# serial: one group in flight, 10.7 ms of wall for 9.3 requests, and the requests arriving
# meanwhile waited all of it. Handed on before the event statement (PostgreSQL's heaviest,
# 3.3 ms) and the COMMIT (0.6-1.8 ms), the next group is taken and written beside them: groups
# of 7.3 requests, 1.4 in flight on average, pg1 923 -> 1,097 requests/s in the same run on a
# quiet box at the same CPU per request ("Seventh pass"). A steady agent request holds a few
# events; 200 is where a round goes by COPY (write.py PG_COPY_EVENTS), a backlog's batch.
PG_SHARED_TURN_EVENTS = 200
CHECKPOINT_INTERVAL_S = 1.0
# The writer connection's SQLite page cache, in KiB (64 MiB; the default is 2 MiB).
WRITER_CACHE_KIB = 65536


class WriterStopped(RuntimeError):
    """The writer was stopped (server shutting down)."""


class Writer(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, fn: Callable[[Connection], T]) -> Future[T]: ...

    async def run(self, fn: Callable[[Connection], T]) -> T: ...


def make_writer(engine: Engine, pool_timeout_s: float = 10.0) -> Writer:
    if is_sqlite(str(engine.url)):
        return SQLiteWriter(engine)
    write_engine = make_engine(
        engine.url.render_as_string(hide_password=False),
        pool_size=PG_WRITERS,
        max_overflow=0,
        pool_timeout=pool_timeout_s,
    )
    return DirectWriter(write_engine, owns_engine=True)


class _LoopAnswer:
    """The answer to a job awaited on an event loop (`Writer.run`).

    The writer thread fills it like a Future; `_deliver` then hands every answer of a group to
    its loop in ONE call_soon_threadsafe: a concurrent Future wrapped for asyncio would wake the
    loop once per job (a self-pipe write, a callback), a measurable share of the loop's CPU
    at a few hundred requests a second (#13, bench/bench_edge.py).
    """

    __slots__ = ("future", "loop", "ok", "settled", "value")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.future = future
        self.settled = False
        self.ok = False
        self.value: Any = None

    def set_running_or_notify_cancel(self) -> bool:
        return not self.future.cancelled()  # a caller gone (client hung up): skip its job

    def done(self) -> bool:
        return self.settled

    def set_result(self, value: Any) -> None:
        self.ok, self.value, self.settled = True, value, True

    def set_exception(self, exc: BaseException) -> None:
        self.ok, self.value, self.settled = False, exc, True


def _settle(answers: list[_LoopAnswer]) -> None:
    """On the loop: each waiting caller gets its answer (one whose await was cancelled, none)."""
    for a in answers:
        if a.future.done():
            continue
        if a.ok:
            a.future.set_result(a.value)
        else:
            a.future.set_exception(a.value)


def _deliver(jobs: list[_Job]) -> None:
    """The settled answers of `jobs` awaited on event loops: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_LoopAnswer]] = {}
    for _fn, answer in jobs:
        if isinstance(answer, _LoopAnswer) and answer.settled:
            by_loop.setdefault(answer.loop, []).append(answer)
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, answers)


_Job = tuple[Callable[[Connection], Any], "Future[Any] | _LoopAnswer"]


def _next_group(
    jobs: queue.SimpleQueue[_Job | None], max_events: int | None = None
) -> tuple[list[_Job], bool]:
    """The next job and those queued behind it, up to MAX_GROUP jobs and, when given, until
    they hold `max_events` events (they share a transaction); True when the stop marker came
    (the jobs taken before it still run)."""
    job = jobs.get()
    if job is None:
        return [], True
    group = [job]
    events = _events(job)
    while len(group) < MAX_GROUP and (max_events is None or events < max_events):
        try:
            more = jobs.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return group, True
        group.append(more)
        events += _events(more)
    return group, False


def _events(job: _Job) -> int:
    """The events a job writes, when it says (an ingest batch does); 0 otherwise."""
    events = getattr(job[0], "events", 0)
    return events if isinstance(events, int) else 0


def _refuse_queued(jobs: queue.SimpleQueue[_Job | None]) -> None:
    """Every job still queued gets WriterStopped: answered, not dropped silently."""
    while True:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return
        if job is not None:
            job[1].set_exception(WriterStopped("the database writer stopped (server shutting down)"))
            _deliver([job])


async def _await_answer(queue_: queue.SimpleQueue[_Job | None], fn: Callable[[Connection], T]) -> T:
    loop = asyncio.get_running_loop()
    answer = _LoopAnswer(loop, loop.create_future())
    queue_.put((fn, answer))
    result: T = await answer.future
    return result


class SQLiteWriter:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stopping = False
        self._stopped = threading.Event()
        self._commits = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._stopped.clear()
        self._thread = threading.Thread(target=self._loop, name="splitwatch-sqlite-writer", daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="splitwatch-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        self._stopped.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None

    def _checkpoint_loop(self) -> None:
        seen = 0
        while not self._stopped.wait(CHECKPOINT_INTERVAL_S):
            if self._commits == seen:
                continue
            seen = self._commits
            self._checkpoint("PASSIVE")
        self._checkpoint("TRUNCATE")  # a clean, small WAL when the server stops

    def _checkpoint(self, mode: str) -> None:
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")
        except Exception as exc:  # a failed checkpoint loses nothing: the WAL keeps the data
            log.warning("sqlite WAL checkpoint (%s) failed: %s", mode, exc)

    def submit(self, fn: Callable[[Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        if self._thread is None or self._stopping:
            future.set_exception(WriterStopped("the database writer is not running (server shutting down)"))
            return future
        self._queue.put((fn, future))
        return future

    async def run(self, fn: Callable[[Connection], T]) -> T:
        if self._thread is None or self._stopping:
            raise WriterStopped("the database writer is not running (server shutting down)")
        return await _await_answer(self._queue, fn)

    def _loop(self) -> None:
        with self._engine.connect() as conn:
            # Before any transaction (SQLite refuses to change it inside one), so on the DB-API
            # connection: Core's execute would begin one. The multi-row event INSERT and its
            # SAVEPOINT keep a statement journal of every page they change; past 64 KiB it
            # spilled to a temporary file, written and read back for each batch: 3-4 ms of a
            # 1000-event batch's ~20 (docs/benchmarks.md, #13). In memory it is bounded by the
            # pages one group changes.
            conn.connection.dbapi_connection.execute("PRAGMA temp_store = MEMORY")  # type: ignore[union-attr]
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 0")  # see the module docstring
            # The event table's unique key and three indexes outgrow the default 2 MB page
            # cache within a day of a busy fleet; a miss costs a read per index per row.
            conn.exec_driver_sql(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            conn.commit()
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            while True:
                jobs, stop = _next_group(self._queue)
                if jobs:
                    try:
                        self._run_group(conn, jobs)
                    finally:
                        _deliver(jobs)
                if stop:
                    break
        _refuse_queued(self._queue)  # anything queued after the stop marker

    def _run_group(self, conn: Connection, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if j[1].set_running_or_notify_cancel()]
        if not jobs:
            return
        if len(jobs) > 1 and self._run_together(conn, jobs):
            return
        results: list[tuple[Future[Any] | _LoopAnswer, bool, Any]] = []
        try:
            with conn.begin():
                if len(jobs) == 1:
                    fn, future = jobs[0]
                    results.append((future, True, fn(conn)))
                else:
                    for fn, future in jobs:
                        try:
                            with conn.begin_nested():
                                results.append((future, True, fn(conn)))
                        except Exception as exc:
                            results.append((future, False, exc))
        except Exception as exc:
            # The transaction itself failed (commit, or a lone job): every job of the group
            # gets the error; none was committed.
            if len(jobs) == 1 and not results:
                jobs[0][1].set_exception(exc)
                return
            log.error("sqlite write transaction failed: %s", exc)
            for _fn, future in jobs:
                if not future.done():
                    future.set_exception(exc)
            return
        self._commits += 1
        for future, ok, value in results:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _run_together(self, conn: Connection, jobs: list[_Job]) -> bool:
        """The whole group in one transaction without a SAVEPOINT per job (#13: two statements
        per job saved). A job that fails rolls everything back and the group runs again, each
        job in its own SAVEPOINT (_run_group), so it still fails alone; jobs only write to the
        database (the Writer contract), so running one twice after a rollback changes nothing.
        """
        try:
            with conn.begin():
                values = run_jobs(conn, [fn for fn, _future in jobs])
        except Exception:
            return False
        self._commits += 1
        for (_fn, future), value in zip(jobs, values, strict=True):
            future.set_result(value)
        return True


def run_jobs(conn: Connection, fns: list[Callable[[Connection], Any]]) -> list[Any]:
    """Each job's value, all on `conn`. Jobs that carry a `run_together(conn, jobs)` (an ingest
    batch: app/ingest/write.py BatchJob) run as one call for all of that kind, so the group
    costs a statement per table rather than per request (#13); the others run one by one."""
    values: list[Any] = [None] * len(fns)
    kinds: dict[Callable[..., list[Any]], list[int]] = {}
    for i, fn in enumerate(fns):
        together = getattr(fn, "run_together", None)
        if together is None:
            values[i] = fn(conn)
        else:
            kinds.setdefault(together, []).append(i)
    for together, members in kinds.items():
        if len(members) == 1:
            values[members[0]] = fns[members[0]](conn)
            continue
        for i, value in zip(members, together(conn, [fns[i] for i in members]), strict=True):
            values[i] = value
    return values


class _Turn:
    """A writer's hold on DirectWriter's turn, handed on at most once: when the group is large,
    or once its statements have run and only its COMMIT is left (DirectWriter._run_tx)."""

    __slots__ = ("_lock", "held")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.held = True

    def hand_on(self) -> None:
        if self.held:
            self.held = False
            self._lock.release()


class DirectWriter:
    """PostgreSQL: PG_WRITERS threads, each taking the jobs queued together (up to MAX_GROUP,
    or GROUP_EVENTS events) into one transaction (group commit: one commit and, for ingest
    batches, one statement per table for all of them); small groups taken one at a time, and
    written so until only their event statement and COMMIT are left, a large one beside the
    next (PG_SHARED_TURN_EVENTS). If that transaction fails, each of
    its jobs runs again in a transaction of its own, so only a failing job fails. Retried on
    deadlock."""

    RETRIES = 3

    def __init__(self, engine: Engine, owns_engine: bool = False) -> None:
        self._engine = engine
        self._owns_engine = owns_engine
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running = False
        # Held by the writer taking a group from the queue and, for a small group, while it
        # writes it up to its event statement (PG_SHARED_TURN_EVENTS; write.py calls
        # conn.info's BEFORE_LAST_EVENTS there, _run_tx before COMMIT for other jobs): the
        # requests arriving meanwhile wait together for the next group instead of the other
        # writer taking them one or two at a time, and that group is written while PostgreSQL
        # runs this one's last statements.
        self._turn = threading.Lock()

    def start(self) -> None:
        if self._threads:
            return
        self._threads = [
            threading.Thread(target=self._loop, name=f"splitwatch-writer-{i}", daemon=True)
            for i in range(PG_WRITERS)
        ]
        for t in self._threads:
            t.start()
        self._running = True

    def stop(self) -> None:
        if not self._threads:
            if self._owns_engine:
                self._engine.dispose()
            return
        self._running = False
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()  # jobs queued before the stop are finished first
        self._threads = []
        _refuse_queued(self._queue)  # one submitted while stopping
        if self._owns_engine:
            self._engine.dispose()

    def _loop(self) -> None:
        while True:
            self._turn.acquire()
            turn = _Turn(self._turn)
            try:
                jobs, stop = _next_group(self._queue, GROUP_EVENTS)
                if sum(_events(j) for j in jobs) >= PG_SHARED_TURN_EVENTS:
                    turn.hand_on()  # a large group: the other writer goes on meanwhile
                if jobs:
                    try:
                        live = [j for j in jobs if j[1].set_running_or_notify_cancel()]
                        self._run_group(live, turn.hand_on)
                    finally:
                        _deliver(jobs)
            finally:
                turn.hand_on()
            if stop:
                return

    def _run_group(self, jobs: list[_Job], before_commit: Callable[[], None]) -> None:
        if len(jobs) > 1:
            try:
                fns = [fn for fn, _future in jobs]
                values = self._run_tx(lambda conn: run_jobs(conn, fns), before_commit)
            except Exception:
                pass  # each job again on its own, below: only a failing one fails
            else:
                for (_fn, future), value in zip(jobs, values, strict=True):
                    future.set_result(value)
                return
        for fn, future in jobs:
            try:
                future.set_result(self._run_tx(fn, before_commit))
            except Exception as exc:
                future.set_exception(exc)

    def _run_tx(self, fn: Callable[[Connection], T], before_commit: Callable[[], None] = lambda: None) -> T:
        """fn's value, in a transaction of its own; `before_commit` is called once fn has
        returned, before the COMMIT (its round trip and WAL flush: the turn is handed on there)."""
        for attempt in range(self.RETRIES):
            try:
                with self._engine.begin() as conn:
                    conn.info[BEFORE_LAST_EVENTS] = before_commit
                    try:
                        value = fn(conn)
                    finally:
                        conn.info.pop(BEFORE_LAST_EVENTS, None)
                    before_commit()
                    return value
            except DBAPIError as exc:
                # 40P01 deadlock_detected, 40001 serialization_failure: safe to retry, the
                # transaction rolled back entirely.
                sqlstate = getattr(exc.orig, "sqlstate", None)
                if sqlstate in ("40P01", "40001") and attempt + 1 < self.RETRIES:
                    continue
                raise
        raise AssertionError("unreachable")

    def submit(self, fn: Callable[[Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        if not self._running:
            future.set_exception(WriterStopped("the database writer is not running (server shutting down)"))
            return future
        self._queue.put((fn, future))
        return future

    async def run(self, fn: Callable[[Connection], T]) -> T:
        if not self._running:
            raise WriterStopped("the database writer is not running (server shutting down)")
        return await _await_answer(self._queue, fn)
