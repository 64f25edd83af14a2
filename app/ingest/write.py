"""Batches into the database: SQLAlchemy Core, one transaction, idempotent.

write_group writes the batches that queued together for one transaction (app/ingest/writer.py)
as if one after the other, but each step below is one statement for all of them (#13): a
small steady-state batch costs statements, not rows. write_batch is a group of one. On
PostgreSQL the statements take one array per column (INSERT/UPDATE ... FROM unnest), so their
text never changes with the group's size and psycopg prepares each once, and steps share a
statement where they can: the hosts' lock and the guests they reported before (step 1, for
step 3), guest and guest_host (step 3); a steady group of agent requests is then BEGIN, the
hosts, the host update (one per set of changed columns), the seq marks, the guests, the
events with their rollups and COMMIT, however many requests it holds; and statements whose
results the next one does not need share a round trip (psycopg's pipeline mode, _Ahead):
BEGIN with the hosts, the host update with the seq marks and the guests, so four round trips.

Order inside the transaction (the caller owns it), per round of the group (_rounds):
1. host: created if new, then locked (PostgreSQL: FOR UPDATE, in name order) and updated — identity (not
   from a batch of `splitwatch import` events only: old logs), last_seen_at, health, and the
   current state when the batch's state is newer than the one held (an older or the same
   sample changes no state: resends and out-of-order batches are harmless), with the
   agent's consistency verdict (`verdict_since` moves only when the verdict changes). A
   host created by an import-only batch is `agent_reported` false until an agent reports (#16).
2. host_state: a row only when the state differs from the one in force at its time.
3. guest: upserted by name with min/max times, so a resend changes nothing; only sightings
   of the same guest (name and uuid, `_guest_upsert`) move its last host, action and kill.
   guest_host: the host's own view of each guest, upserted the same way. Guests beyond the
   host's caps (GuestLimits): 413 for too many new in one batch; past the total, the events
   are stored without their guest and counted as a `guest_cap` gap (step 5).
4. event: INSERT ... ON CONFLICT (host_id, boot_id, source, seq) DO NOTHING RETURNING the
   keys actually inserted. PostgreSQL partitions event by day and its unique key also holds
   `time` (PARTITIONED_EVENT_KEY): the keys already stored are looked up first, whatever their
   time, and only the others inserted (_stored_keys, which skips the lookup for seqs above the
   highest one stored: SEQ_MARK_TABLE), so the contract holds there too; those go in one
   INSERT ... SELECT FROM unnest(one array per column), which also moves the marks, one
   statement and round trip per round (#13); from PG_COPY_EVENTS new events in a round, by
   binary COPY and a marks upsert instead (in C on both sides: a backlog's large batches).
   SQLite: the Core statement, compiled once, with its VALUES group repeated per row and the
   rows' values flattened (times formatted as SQLAlchemy stores them), run on the DB-API
   cursor of the same Core connection and transaction: SQLAlchemy's per-row parameter and
   result processing cost more CPU than SQLite's own insert (bench/bench_ingest.py). The
   rollup upserts go the same way on SQLite; on PostgreSQL, the event statement sums and
   upserts them from the rows it inserted (_pg_rollup_sql), or after COPY one INSERT ...
   SELECT FROM unnest per rollup table.
5. rollup_1m and rollup_1h: count += ... for those inserted rows only, so a resent batch
   adds nothing; keys sorted, so concurrent PostgreSQL transactions lock in one order.
   SQLite sums them in the pass that flattens the events for step 4, keyed by the time text's
   minute, and uses those sums when every event of the round was new (the usual case).
   Inserted events that lost their guest to the cap: one `guest_cap` gap per source, keyed
   by the first such seq, so a resend counts nothing twice.
6. gap: ON CONFLICT DO NOTHING.
The same statements run on SQLite and PostgreSQL (each dialect's insert construct). On SQLite,
the statements of a steady-state request (hosts, known guests, guests, guest_host, events,
rollups) run as SQL text built once, on the DB-API cursor of the Core connection's transaction,
with values converted as the column types would (_sqlite_binder, _SQLITE_RESULTS): SQLAlchemy's
execution machinery had cost the single writer thread more CPU than SQLite's own work (#13).
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.errors import UniqueViolation
from sqlalchemy import Boolean, Connection, Table, and_, bindparam, case, func, not_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import JSON

from app.errors import PayloadTooLarge
from app.ingest.pg_arrays import Int8Array, TextArray, array_for
from app.ingest.rows import (
    NO_GUEST,
    Rows,
    cpu_counts,
    cpu_dicts,
    fold_sums,
    rollups,
    state_signature,
)
from app.retention.partitions import SEQ_MARK_TABLE
from app.store.tables import ROLLUPS, UtcDateTime, event, gap, guest, guest_host, host, host_state

EVENT_KEY = ("host_id", "boot_id", "source", "seq")
# PostgreSQL's event table is partitioned by day on `time`, and a unique key of a partitioned
# table must hold the partition key (migrations/versions/2026_11_30_scale.py, #13): the same
# event resent carries the same time, so it is still a duplicate.
PARTITIONED_EVENT_KEY = (*EVENT_KEY, "time")
ROLLUP_KEY = ("bucket", "host_id", "guest_id", "kind", "action", "source")
GAP_KEY = ("host_id", "boot_id", "source", "first_seq", "reason")


@dataclass(frozen=True, slots=True)
class WriteResult:
    accepted: int
    duplicates: int
    host_id: int


@dataclass(frozen=True, slots=True)
class BatchJob:
    """write_batch as a writer job (app/ingest/writer.py): the jobs that queue together run as
    one write_group, through `run_together`."""

    rows: Rows
    limits: GuestLimits

    @property
    def events(self) -> int:
        """How many events the batch brings: the writer groups jobs by it too."""
        return len(self.rows.events)

    def __call__(self, conn: Connection) -> WriteResult:
        return write_batch(conn, self.rows, self.limits)

    @staticmethod
    def run_together(conn: Connection, jobs: Sequence[BatchJob]) -> list[WriteResult]:
        limits = {job.limits for job in jobs}
        if len(limits) > 1:  # one server has one setting; a mix is written batch by batch
            return [job(conn) for job in jobs]
        return write_group(conn, [job.rows for job in jobs], limits.pop())


def _nothing() -> None:
    pass


def _insert_for(conn: Connection) -> Callable[[Table], Any]:
    if conn.dialect.name == "postgresql":
        return postgresql.insert
    if conn.dialect.name == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"ingest supports sqlite and postgresql, not {conn.dialect.name}")


def write_batch(conn: Connection, rows: Rows, limits: GuestLimits | None = None) -> WriteResult:
    """One batch: write_group of one."""
    return write_group(conn, [rows], limits)[0]


def write_group(
    conn: Connection, batches: Sequence[Rows], limits: GuestLimits | None = None
) -> list[WriteResult]:
    """Several batches in the caller's transaction, as if written one after the other (#13).

    The writer hands over the requests that queued together; each table then gets one
    statement for all of them (one host SELECT, one executemany per table, one event INSERT)
    instead of one per request: statements, not rows, are what a small batch costs. Batches
    of the same host, or naming the same guest, go in successive rounds (`_rounds`), so each
    round touches each host and guest row once and the result is that of writing the batches
    in order. A batch that cannot be stored (too many new guests: PayloadTooLarge) raises for
    the whole group: the writer then runs each batch alone, in its own SAVEPOINT
    (app/ingest/writer.py), where only that one fails.
    """
    insert = _insert_for(conn)
    if insert is sqlite.insert and not conn.in_transaction():
        # What the first Core statement's autobegin did: the statements on the DB-API cursor
        # (_dbapi_cursor) must run inside the caller's transaction, not in autocommit.
        conn.begin()
    limits = limits or GuestLimits()
    results: list[WriteResult | None] = [None] * len(batches)
    try:
        rounds = _rounds(batches)
        for k, members in enumerate(rounds):
            last = k == len(rounds) - 1
            for i, result in zip(
                members, _write_round(conn, insert, [batches[i] for i in members], limits, last), strict=True
            ):
                results[i] = result
    except (sqlite3.Error, psycopg.Error) as exc:
        raise sqlalchemy_error(exc) from exc
    return [r for r in results if r is not None]


def sqlalchemy_error(exc: sqlite3.Error | psycopg.Error) -> Exception:
    """A driver error of a statement run on the DB-API cursor (the hot statements here skip
    SQLAlchemy's execute) as SQLAlchemy raises it from any other statement: its
    OperationalError, IntegrityError, ... by the driver error's class. So the writer's deadlock
    retry and the API's answers (503 "database could not store the batch" for a full disk or a
    lost connection, app/errors.py) treat it as they treat any database error, not as a bug."""
    base: type[Exception] = sqlite3.Error if isinstance(exc, sqlite3.Error) else psycopg.Error
    wrapped = DBAPIError.instance(None, None, exc, base)
    return wrapped if isinstance(wrapped, Exception) else exc


def _rounds(batches: Sequence[Rows]) -> list[list[int]]:
    """Indexes of `batches` in rounds where no host name or guest name repeats; a batch comes
    in a later round than every earlier batch it shares a host or a guest with."""
    last: dict[tuple[str, str], int] = {}
    rounds: list[list[int]] = []
    for i, rows in enumerate(batches):
        names = [("h", rows.host["name"]), *(("g", g["name"]) for g in rows.guests)]
        k = max((last[n] + 1 for n in names if n in last), default=0)
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
        for n in names:
            last[n] = k
    return rounds


# conn.info key: what the writer wants called once a group has only its event statement and
# COMMIT left (app/ingest/writer.py hands its turn on there).
BEFORE_LAST_EVENTS = "splitwatch.before_last_events"


def _write_round(
    conn: Connection,
    insert: Callable[[Table], Any],
    batches: list[Rows],
    limits: GuestLimits,
    last: bool = True,
) -> list[WriteResult]:
    if insert is sqlite.insert:
        host_ids, known, created = _write_hosts(conn, insert, batches)
        guest_ids = _write_guests(conn, batches, host_ids, limits, known)
        accepted = _write_events(conn, insert, batches, host_ids, guest_ids, created)
    else:
        # The host updates, the seq marks' lookup and the guests go in one round trip (_Ahead):
        # none needs another's result, and the events need the last two's (#13).
        ahead = _Ahead(conn)
        host_ids, known, created = _write_hosts(conn, insert, batches, ahead)
        keys = _pg_event_keys(batches, host_ids)
        marks = _queue_marks(ahead, keys, created)
        guest_ids = _write_guests(conn, batches, host_ids, limits, known, ahead)
        if last:
            conn.info.pop(BEFORE_LAST_EVENTS, _nothing)()
        accepted = _write_events(conn, insert, batches, host_ids, guest_ids, created, marks, keys)
        ahead.flush()  # the host updates, when no guests or events took them along
    gaps = [{**g, "host_id": hid} for rows, hid in zip(batches, host_ids, strict=True) for g in rows.gaps]
    if gaps:
        conn.execute(insert(gap).on_conflict_do_nothing(index_elements=list(GAP_KEY)), gaps)
    return [
        WriteResult(accepted=n, duplicates=rows.received - n, host_id=hid)
        for rows, hid, n in zip(batches, host_ids, accepted, strict=True)
    ]


def _write_hosts(
    conn: Connection, insert: Callable[[Table], Any], batches: list[Rows], ahead: _Ahead | None = None
) -> tuple[list[int], set[tuple[int, str]] | None, set[int]]:
    """Each batch's host id; the hosts created, locked (PostgreSQL) and updated. PostgreSQL:
    also which of the round's guests each host reported before, (host_id, guest name), read
    with the hosts (_write_guests looks them up itself otherwise), and the ids of the hosts
    this round's insert made (none of their events can be stored yet: _stored_keys). With
    `ahead` (PostgreSQL), the host updates are queued on it, sent with the next statements."""
    dialect = conn.dialect.name
    names = sorted(rows.host["name"] for rows in batches)  # one lock order for every transaction
    guest_names = sorted({g["name"] for rows in batches for g in rows.guests})
    held = _held_hosts(conn, names, guest_names)
    missing = sorted(
        (rows for rows in batches if rows.host["name"] not in held), key=lambda r: r.host["name"]
    )
    created: set[int] = set()
    if missing:
        # New hosts (an import creates one too, with the identity it has). Two first batches
        # racing on PostgreSQL: the second insert waits for the first and does nothing.
        # An import-only batch creates the host as not reported by any agent (#16).
        new_hosts = insert(host).on_conflict_do_nothing(index_elements=["name"])
        if dialect == "postgresql":
            # RETURNING names only the rows this statement inserted, not a racing batch's.
            new_hosts = new_hosts.returning(host.c.id)
        found = conn.execute(
            new_hosts,
            [
                {
                    **rows.host,
                    "first_seen_at": rows.received_at,
                    "last_seen_at": rows.received_at,
                    "agent_reported": not rows.import_only,
                    "cpus": [],
                }
                for rows in missing
            ],
        )
        if dialect == "postgresql":
            created = {int(r[0]) for r in found}
        held.update(_held_hosts(conn, [rows.host["name"] for rows in missing], guest_names))
    known = None
    if dialect == "postgresql":
        known = {(h["id"], name) for h in held.values() for name in h.pop("known_guests")}
    newer = [
        held[rows.host["name"]]
        for rows in batches
        if rows.state is not None
        and (held[rows.host["name"]]["state_observed_at"] is None
             or rows.state.observed_at > held[rows.host["name"]]["state_observed_at"])
    ]  # fmt: skip
    if newer:
        # The per-CPU JSON is read only for hosts whose state may change: decoding it for
        # every request cost more than the rest of the host's row (#13).
        by_id = {h["id"]: h for h in newer}
        if dialect == "sqlite":
            ids_ = sorted(by_id)
            for id_, cpus, details in _sqlite_fetch(conn, _sqlite_host_state_sql(len(ids_)), ids_):
                by_id[id_].update(cpus=_json_result(cpus), verdict_details=_json_result(details))
        else:
            for r in conn.execute(_HOST_STATE_COLUMNS, {"ids_": sorted(by_id)}):
                by_id[r.id].update(cpus=r.cpus, verdict_details=r.verdict_details)
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    sqlite_updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}  # rows of values, as bound
    ids: list[int] = []
    samples: list[tuple[Rows, int, list[dict[str, Any]]]] = []
    for rows in batches:
        current = held[rows.host["name"]]
        host_id = int(current["id"])
        ids.append(host_id)
        values, record = host_changes(current, rows)
        if record is not None:
            samples.append((rows, host_id, record))
        if values:
            if dialect == "sqlite":
                keys = tuple(sorted(values))
                sqlite_updates.setdefault(keys, []).append(_sqlite_host_values(keys, values, host_id))
            else:
                updates.setdefault(tuple(sorted(values)), []).append({**values, "host_id_": host_id})
    if samples:
        _record_states(conn, samples, {h["id"] for h in newer})
    for keys, params in updates.items():
        if ahead is not None:
            ahead.add(_postgresql_host_update_sql(keys), _host_update_params(keys, params))
        else:
            _update_hosts_postgresql(conn, keys, params)
    if sqlite_updates:
        cursor = _dbapi_cursor(conn)
        try:
            for keys, rows_ in sqlite_updates.items():
                cursor.executemany(_sqlite_host_update_sql(keys), rows_)
        finally:
            cursor.close()
    return ids, known, created


def _held_hosts(conn: Connection, names: list[str], guest_names: list[str]) -> dict[str, dict[str, Any]]:
    """The hosts' rows by name (_HOST_LIGHT), locked on PostgreSQL in name order, where each
    also holds `known_guests`: the names of `guest_names` it reported before."""
    if conn.dialect.name != "postgresql":
        return _held_hosts_sqlite(conn, names)
    # Through _Ahead: the transaction's BEGIN, which psycopg sends as a statement of its own
    # before the first one, goes in the same round trip (#13).
    ahead = _Ahead(conn)
    found = ahead.add(_postgresql_hosts_sql(), {"names": TextArray(names), "guests": TextArray(guest_names)})
    rows = [dict(zip(_HOSTS_SQL_COLUMNS, r, strict=True)) for r in ahead.result(found)]
    for r in rows:  # as UtcDateTime reads them (psycopg gives the session's time zone)
        for c in _HOST_TIMES:
            if r[c] is not None:
                r[c] = r[c].astimezone(UTC)
    return {r["name"]: r for r in rows}


def host_changes(held: Mapping[str, Any], rows: Rows) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """What a batch changes on its host's row, and the CPUs of a state sample to record.

    Pure: `held` is the host's row as stored (its `cpus` and `verdict_details` only where the
    batch's state is newer than the one held). Returns (the columns whose value changes, the
    sample's per-CPU dicts when it goes to host_state or None).
    """
    received_at = rows.received_at
    values: dict[str, Any] = {}
    if not rows.import_only:
        # last_seen_at is the agent's liveness (status silent): old logs replayed by
        # `splitwatch import` must not make a silent host look alive.
        values["last_seen_at"] = max(held["last_seen_at"], received_at)
        values["agent_reported"] = True
    if rows.health is not None:
        values["health"] = rows.health
    state = rows.state
    held_at: datetime | None = held["state_observed_at"]
    h = rows.host
    if not rows.import_only and (state is None or held_at is None or state.observed_at > held_at):
        # A batch with no state or a newer one: its identity (boot, kernel, agent) is current.
        # An import's is not: it replays old logs (maybe another boot's) through the CLI.
        values.update(h)
    record: list[dict[str, Any]] | None = None
    if state is not None and (held_at is None or state.observed_at > held_at):
        counts = cpu_counts(state.cpus)
        record = cpu_dicts(state.cpus)
        judged = state.consistency
        verdict = judged.verdict if judged is not None else None
        since = held["verdict_since"] if verdict == held["verdict"] and verdict is not None else None
        values.update(
            verdict=verdict,
            verdict_reason=judged.reason if judged is not None else None,
            verdict_details=dict(judged.details) if judged is not None else None,
            verdict_since=since or (state.observed_at if verdict is not None else None),
            state_observed_at=state.observed_at,
            mode=state.mode,
            ratelimit=state.ratelimit,
            mitigate=state.mitigate,
            sld_supported=state.sld_supported,
            bld_supported=state.bld_supported,
            cpus_total=counts.total,
            cpus_on=counts.on,
            cpus_off=counts.off,
            cpus_error=counts.error,
            cpus=record,
        )
    elif state is not None and state.observed_at < held_at:  # type: ignore[operator]
        # Out of order: history only; the host's current verdict follows the newest sample.
        record = cpu_dicts(state.cpus)
    # Only what changed is written (#13): in steady state an agent's sample repeats the held
    # state, so the update is last_seen_at and state_observed_at, not the per-CPU JSON again.
    return {k: v for k, v in values.items() if k not in held or held[k] != v}, record


# The host's row without its two JSON columns of the state (see _write_hosts), by name.
_HOST_LIGHT = [c for c in host.c if c.name not in ("cpus", "verdict_details")]


_HOST_TIMES = [c.name for c in _HOST_LIGHT if isinstance(c.type, UtcDateTime)]


@functools.cache
def _postgresql_hosts_sql() -> str:
    """_hosts_select for PostgreSQL, with the known-guests lookup of _write_guests folded in
    (an array per host): one statement and round trip instead of two, and no IN list for
    SQLAlchemy to expand per request (#13). The arrays go through a (SELECT ...), so the
    generic plan is kept (see _lookup_sql)."""
    columns = ", ".join(f"host.{c.name}" for c in _HOST_LIGHT)
    known = (
        "SELECT guest.name FROM guest_host JOIN guest ON guest.id = guest_host.guest_id "
        "WHERE guest_host.host_id = host.id AND guest.name = ANY((SELECT %(guests)b::TEXT[])::TEXT[])"
    )
    return (
        f"SELECT {columns}, ARRAY({known}) AS known_guests FROM host "
        "WHERE host.name = ANY((SELECT %(names)b::TEXT[])::TEXT[]) ORDER BY host.name FOR UPDATE OF host"
    )


_HOSTS_SQL_COLUMNS = (*(c.name for c in _HOST_LIGHT), "known_guests")  # _postgresql_hosts_sql's


_HOST_STATE_COLUMNS = select(host.c.id, host.c.cpus, host.c.verdict_details).where(
    host.c.id.in_(bindparam("ids_", expanding=True))
)


# SQLite: the host statements of a request as SQL text run on the DB-API cursor (#13). Through
# SQLAlchemy, the execution machinery (cache key, expanding IN, a bind or result processor per
# value) cost the writer thread more CPU than SQLite's own work for these one-row statements
# (docs/benchmarks.md, bench/bench_fleet.py). Values are converted exactly as the columns'
# types would (_sqlite_binder, _SQLITE_RESULTS), so the rows stored and read are the same.


def _dbapi_cursor(conn: Connection) -> Any:
    """The DB-API cursor of this Core connection, inside its transaction (write_group
    begins it on SQLite when the caller has not): the hot statements of both engines skip
    SQLAlchemy's execute; their driver errors become SQLAlchemy's in write_group."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


class _Ahead:
    """PostgreSQL: statements of the write sent together, in one round trip (psycopg's pipeline
    mode), when the first of their results is wanted (`result`) or on `flush`. A steady group
    waited on seven round trips; each is a wake-up of the server's backend and then of the
    writer thread, which must take the GIL back from the event loop: with one group in flight
    at a time, they were most of a group's wall time (#13, docs/benchmarks.md "Seventh pass").

    Only statements run here on the DB-API cursor may be queued: SQLAlchemy's execute reads a
    result's description right after sending, which pipeline mode gives only once fetched, so
    a Core statement must not run while statements are queued (flush first). An error of any
    queued statement is raised by the flush (and the transaction is then aborted, as it would
    be had they run one by one)."""

    __slots__ = ("_conn", "_queued", "_results")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queued: list[tuple[str, Mapping[str, Any]]] = []
        self._results: list[list[Any] | None] = []

    def add(self, sql: str, params: Mapping[str, Any]) -> int:
        """Queue a statement; its index, for `result`."""
        self._queued.append((sql, params))
        return len(self._results) + len(self._queued) - 1

    def result(self, index: int) -> list[Any]:
        """The rows of the statement queued at `index` (sending what is queued first)."""
        self.flush()
        rows = self._results[index]
        assert rows is not None, "result() of a statement that returns no rows"
        return rows

    def flush(self) -> None:
        if not self._queued:
            return
        dbapi = self._conn.connection.dbapi_connection
        assert dbapi is not None
        queued, self._queued = self._queued, []
        cursors = [dbapi.cursor() for _ in queued]
        try:
            if len(queued) == 1 and dbapi.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                cursors[0].execute(*queued[0])  # one statement, no BEGIN to bring along: no pipeline
            else:
                with dbapi.pipeline():
                    for cursor, (sql, params) in zip(cursors, queued, strict=True):
                        cursor.execute(sql, params)
            self._results.extend(list(c.fetchall()) if c.description is not None else None for c in cursors)
        finally:
            for cursor in cursors:
                cursor.close()


def _sqlite_fetch(conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    cursor = _dbapi_cursor(conn)
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()  # type: ignore[no-any-return]
    finally:
        cursor.close()


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _sqlite_time_or_none(at: datetime | None) -> str | None:
    return None if at is None else sqlite_time(at)


def _as_is(value: Any) -> Any:
    return value


def _sqlite_binder(column: Any) -> Callable[[Any], Any]:
    """A value of `column` as SQLAlchemy binds it on SQLite: UtcDateTime as SQLITE_TIME_FORMAT
    text, JSON as json.dumps gives it (None too: JSON null, not SQL NULL); Boolean and the
    rest as they are (sqlite3 stores True as 1, as SQLAlchemy's int conversion does)."""
    if isinstance(column.type, UtcDateTime):
        return _sqlite_time_or_none
    if isinstance(column.type, JSON):
        return json.dumps
    return _as_is


def _time_result(text: str) -> datetime:
    """A SQLite time as UtcDateTime reads it: the naive text's time, in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _json_result(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _result_converter(column: Any) -> Callable[[Any], Any] | None:
    """How SQLAlchemy's result processor reads a non-NULL value of `column` from SQLite."""
    if isinstance(column.type, UtcDateTime):
        return _time_result
    if isinstance(column.type, JSON):
        return json.loads
    if isinstance(column.type, Boolean):
        return bool
    return None


# The host columns _write_hosts and host_changes read (all of _HOST_LIGHT but first_seen_at).
_HOST_HELD = [c for c in _HOST_LIGHT if c.name != "first_seen_at"]
_HOST_HELD_NAMES = tuple(c.name for c in _HOST_HELD)
_SQLITE_RESULTS = [(c.name, conv) for c in _HOST_HELD if (conv := _result_converter(c)) is not None]


@functools.lru_cache(maxsize=64)
def _sqlite_hosts_sql(n_names: int) -> str:
    return f"SELECT {', '.join(_HOST_HELD_NAMES)} FROM host WHERE name IN ({_marks(n_names)})"


def _held_hosts_sqlite(conn: Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    held: dict[str, dict[str, Any]] = {}
    for r in _sqlite_fetch(conn, _sqlite_hosts_sql(len(names)), names):
        row = dict(zip(_HOST_HELD_NAMES, r, strict=True))
        for name, convert in _SQLITE_RESULTS:
            value = row[name]
            if value is not None:
                row[name] = convert(value)
        held[row["name"]] = row
    return held


@functools.lru_cache(maxsize=64)
def _sqlite_host_state_sql(n_ids: int) -> str:
    return f"SELECT id, cpus, verdict_details FROM host WHERE id IN ({_marks(n_ids)})"


@functools.lru_cache(maxsize=64)
def _sqlite_host_update_sql(keys: tuple[str, ...]) -> str:
    """UPDATE host SET `keys` of one host, by id (its last parameter)."""
    return f"UPDATE host SET {', '.join(f'{k} = ?' for k in keys)} WHERE id = ?"


@functools.lru_cache(maxsize=64)
def _sqlite_host_binders(keys: tuple[str, ...]) -> tuple[Callable[[Any], Any], ...]:
    return tuple(_sqlite_binder(host.c[k]) for k in keys)


def _sqlite_host_values(keys: tuple[str, ...], values: Mapping[str, Any], host_id: int) -> tuple[Any, ...]:
    """_sqlite_host_update_sql's parameters: `values` of `keys` as bound, then the id."""
    return (
        *(bind(values[k]) for bind, k in zip(_sqlite_host_binders(keys), keys, strict=True)),
        host_id,
    )


@functools.lru_cache(maxsize=64)
def _postgresql_host_update_sql(keys: tuple[str, ...]) -> str:
    """UPDATE host SET `keys` FROM unnest(one array per key, and the ids): the hosts whose
    changes have these keys, in one statement (an executemany sent one per host, #13). JSON
    columns travel as text, cast on the server. Few key sets occur (the changes of a steady
    agent are last_seen_at, its state's time and its health figures), each text prepared once.
    """
    arrays = ", ".join(
        f"(SELECT %({k})b::TEXT[]::JSON[])"
        if isinstance(host.c[k].type, JSON)
        else f"(SELECT {_pg_arrays((k,), host)})"
        for k in keys
    )
    # Each array through a (SELECT ...), as in _lookup_sql: with its length known, the plan
    # for the parameters' values looked cheaper than the generic one, and PostgreSQL planned
    # the update at every execution (0.15 ms, more than it ran). The generic plan, blind to
    # the length, hash-joined a scan of every host: `id = ANY(ids)` makes it an index probe.
    ids = "(SELECT %(host_id_)b::INTEGER[])"
    return (
        f"UPDATE host SET {', '.join(f'{k} = u.{k}' for k in keys)} "
        f"FROM unnest({ids}, {arrays}) AS u(host_id_, {', '.join(keys)}) "
        f"WHERE host.id = u.host_id_ AND host.id = ANY({ids}::INTEGER[])"
    )


def _update_hosts_postgresql(conn: Connection, keys: tuple[str, ...], params: list[dict[str, Any]]) -> None:
    cursor = _dbapi_cursor(conn)
    try:
        cursor.execute(_postgresql_host_update_sql(keys), _host_update_params(keys, params))
    finally:
        cursor.close()


def _host_update_params(keys: tuple[str, ...], params: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """_postgresql_host_update_sql's arrays for the hosts' changes `params` (with `host_id_`)."""
    values: dict[str, list[Any]] = {"host_id_": Int8Array(p["host_id_"] for p in params)}
    for k in keys:
        column = [p[k] for p in params]
        if isinstance(host.c[k].type, JSON):
            # The text SQLAlchemy's JSON type sends (json.dumps, None as JSON null, not SQL
            # NULL): `json` keeps it as is, so the row is the one SQLAlchemy would store.
            column = [json.dumps(v) for v in column]
        values[k] = array_for(host.c[k])(column)
    return values


def _record_states(
    conn: Connection, samples: list[tuple[Rows, int, list[dict[str, Any]]]], newer: set[int]
) -> None:
    """A host_state row for each sample that differs from the state in force at its time.

    The state in force at a sample newer than the host's held state is the host's latest
    host_state row (every row is at or before the held state's time): one query for the
    round. An older sample (out of order) looks up its own.
    """
    latest: dict[int, Any] = {}
    if any(host_id in newer for _rows, host_id, _cpus in samples):
        found = conn.execute(_LATEST_STATES, {"host_ids_": sorted(newer)})
        latest = {int(r.host_id): r for r in found}
    inserts: list[dict[str, Any]] = []
    for rows, host_id, cpus in samples:
        state = rows.state
        assert state is not None
        h = rows.host
        verdict = state.consistency.verdict if state.consistency is not None else None
        if host_id in newer:
            in_force = latest.get(host_id)
        else:
            in_force = conn.execute(_IN_FORCE, {"host_id_": host_id, "at_": state.observed_at}).first()
        new = state_signature(
            h["boot_id"], h["kernel"], state.mode, state.ratelimit, state.mitigate,
            state.sld_supported, state.bld_supported, cpus, verdict,
        )  # fmt: skip
        if in_force is not None and state_signature(*in_force[:9]) == new:
            continue
        counts = cpu_counts(state.cpus)
        inserts.append(
            dict(
                host_id=host_id,
                observed_at=state.observed_at,
                boot_id=h["boot_id"],
                kernel=h["kernel"],
                mode=state.mode,
                ratelimit=state.ratelimit,
                mitigate=state.mitigate,
                sld_supported=state.sld_supported,
                bld_supported=state.bld_supported,
                cpus_on=counts.on,
                cpus_off=counts.off,
                cpus_error=counts.error,
                verdict=verdict,
                cpus=cpus,
            )
        )
    if inserts:
        conn.execute(_STATE_INSERT, inserts)


# The state sample in force at a time (the newest at or before it); built once (see _host_select).
_IN_FORCE = (
    select(
        host_state.c.boot_id,
        host_state.c.kernel,
        host_state.c.mode,
        host_state.c.ratelimit,
        host_state.c.mitigate,
        host_state.c.sld_supported,
        host_state.c.bld_supported,
        host_state.c.cpus,
        host_state.c.verdict,
    )
    .where(host_state.c.host_id == bindparam("host_id_"), host_state.c.observed_at <= bindparam("at_"))
    .order_by(host_state.c.observed_at.desc(), host_state.c.id.desc())
    .limit(1)
)
_STATE_INSERT = host_state.insert()
# The latest host_state row of each of these hosts (the same columns as _IN_FORCE, then host_id).
_older = host_state.alias("older")
_latest_id = (
    select(_older.c.id)
    .where(_older.c.host_id == host.c.id)
    .order_by(_older.c.observed_at.desc(), _older.c.id.desc())
    .limit(1)
    .scalar_subquery()
)
_LATEST_STATES = select(*_IN_FORCE.selected_columns, host_state.c.host_id).where(
    host_state.c.id.in_(select(_latest_id).where(host.c.id.in_(bindparam("host_ids_", expanding=True))))
)


@dataclass(frozen=True, slots=True)
class GuestLimits:
    """How many guest names one host may bring (#14: one agent token created 40,000).

    `per_host`: guests a host may have reported in total (its `guest_host` rows); the events
    of a guest over it are stored without their guest and counted as a `guest_cap` gap.
    `new_per_batch`: guests new to the host in one batch; over it the batch is refused with
    413, which the agent answers by sending it in smaller parts (agent/transport.py).
    """

    per_host: int = 1000
    new_per_batch: int = 256


GUEST_CAP_REASON = "guest_cap"
_IN_CHUNK = 1000  # names per IN (...): SQLite binds at most 32766 parameters per statement


# Which of these guests these hosts reported before; built once (see _hosts_select).
_KNOWN_GUESTS = (
    select(guest_host.c.host_id, guest.c.name)
    .select_from(guest_host.join(guest, guest.c.id == guest_host.c.guest_id))
    .where(
        guest_host.c.host_id.in_(bindparam("host_ids_", expanding=True)),
        guest.c.name.in_(bindparam("names_", expanding=True)),
    )
)


@functools.lru_cache(maxsize=256)
def _sqlite_known_guests_sql(n_hosts: int, n_names: int) -> str:
    """_KNOWN_GUESTS as SQLite text: host ids first, then names."""
    return (
        "SELECT guest_host.host_id, guest.name FROM guest_host JOIN guest ON guest.id = guest_host.guest_id "
        f"WHERE guest_host.host_id IN ({_marks(n_hosts)}) AND guest.name IN ({_marks(n_names)})"
    )


_GUESTS_HELD = (
    select(guest_host.c.host_id, func.count())
    .where(guest_host.c.host_id.in_(bindparam("host_ids_", expanding=True)))
    .group_by(guest_host.c.host_id)
)


def _write_guests(
    conn: Connection,
    batches: list[Rows],
    host_ids: list[int],
    limits: GuestLimits,
    known: set[tuple[int, str]] | None = None,
    ahead: _Ahead | None = None,
) -> list[dict[str, int]]:
    """Per batch, guest ids by name for its guests; a guest over its host's cap gets none.
    `known`: (host_id, guest name) of the batches' guests their hosts reported before, when
    read already (_write_hosts on PostgreSQL). `ahead` (PostgreSQL): the statements queued
    before the guests' upsert, sent with it."""
    with_guests = [(rows, hid) for rows, hid in zip(batches, host_ids, strict=True) if rows.guests]
    if not with_guests:
        return [{} for _ in batches]
    if known is None:
        names = sorted({g["name"] for rows, _ in with_guests for g in rows.guests})
        wanted = [hid for _, hid in with_guests]
        known = set()
        for start in range(0, len(names), _IN_CHUNK):
            chunk = names[start : start + _IN_CHUNK]
            if conn.dialect.name == "sqlite":
                found = _sqlite_fetch(
                    conn, _sqlite_known_guests_sql(len(wanted), len(chunk)), [*wanted, *chunk]
                )
                known.update((r[0], r[1]) for r in found)
            else:
                known.update(
                    (r[0], r[1]) for r in conn.execute(_KNOWN_GUESTS, {"host_ids_": wanted, "names_": chunk})
                )
    new: dict[int, list[str]] = {}
    for rows, hid in with_guests:
        fresh = [g["name"] for g in rows.guests if (hid, g["name"]) not in known]
        if len(fresh) > limits.new_per_batch:
            raise PayloadTooLarge(
                f"this batch brings {len(fresh)} guests host {rows.host['name']!r} has not reported "
                f"before, more than the {limits.new_per_batch} one batch may "
                "(SPLITWATCH_MAX_NEW_GUESTS_PER_BATCH): send it in smaller batches (the agent does so "
                "by itself) or raise the setting",
                code="too_many_new_guests",
            )
        if fresh:
            new[hid] = fresh
    held: dict[int, int] = {}
    if new:
        if ahead is not None:
            ahead.flush()  # before a Core statement (see _Ahead)
        held = {int(r[0]): int(r[1]) for r in conn.execute(_GUESTS_HELD, {"host_ids_": sorted(new)})}
    kept: dict[int, list[dict[str, Any]]] = {}
    for rows, hid in with_guests:
        mine = rows.guests
        fresh = new.get(hid, [])
        room = max(limits.per_host - held.get(hid, 0), 0)
        if room < len(fresh):
            # Names are sorted: which guests get in is the same on a resend.
            over = set(fresh[room:])
            mine = [g for g in mine if g["name"] not in over]
        if mine:
            kept[hid] = mine
    if not kept:
        return [{} for _ in batches]
    sightings = [(hid, g) for hid in sorted(kept) for g in kept[hid]]
    if conn.dialect.name == "postgresql":
        # Sorted by name: concurrent PostgreSQL transactions lock guest rows in one order.
        params = sorted(
            ({**g, "last_host_id": hid} for hid, gs in kept.items() for g in gs), key=lambda p: p["name"]
        )
        ids = _upsert_guests_postgresql(conn, params, sightings, ahead)
        return [{g["name"]: ids[g["name"]] for g in kept.get(hid, [])} for hid in host_ids]
    ids = _upsert_guests_sqlite(conn, kept, sightings)
    return [{g["name"]: ids[g["name"]] for g in kept.get(hid, [])} for hid in host_ids]


@functools.cache
def _guest_upsert(dialect: str) -> Any:
    """The guest row by name, moved only by sightings of the same guest.

    Identity (#14): a guest is its name plus its uuid, a missing uuid being a value of its
    own. The agent takes both from the same VMM command line (`-name`, `-uuid`: docs/kernel.md),
    so a guest that really moves between hosts (live migration keeps the uuid; a uuid-less
    VMM such as Firecracker has none anywhere) arrives with the same pair on every host. A
    sighting whose uuid differs from the one the guest row was created with (another uuid, or
    none where the guest has one) is a namesake: its events still count under the name, and
    its host keeps its own view in `guest_host`, but it never moves the guest's last host,
    last action, kill, vmm or first/last sighting. Without a uuid on either side nothing tells
    a move from a claim, so such a guest follows whichever host saw it last, as before.

    Built once per dialect: constructing this CASE-laden statement costs a millisecond.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    greatest = func.greatest if dialect == "postgresql" else func.max
    least = func.least if dialect == "postgresql" else func.min
    stmt: Any = insert(guest)
    ex = stmt.excluded
    same = guest.c.uuid.is_not_distinct_from(ex.uuid)
    newer = and_(same, ex.last_seen_at > guest.c.last_seen_at)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "vmm": case((newer, ex.vmm), else_=guest.c.vmm),
            "first_seen_at": case(
                (same, least(guest.c.first_seen_at, ex.first_seen_at)), else_=guest.c.first_seen_at
            ),
            "last_seen_at": case(
                (same, greatest(guest.c.last_seen_at, ex.last_seen_at)), else_=guest.c.last_seen_at
            ),
            "last_host_id": case((newer, ex.last_host_id), else_=guest.c.last_host_id),
            "last_action": case((newer, ex.last_action), else_=guest.c.last_action),
            # max() with a NULL is NULL on SQLite: pick explicitly.
            "killed_at": case(
                (not_(same), guest.c.killed_at),
                (ex.killed_at.is_(None), guest.c.killed_at),
                (guest.c.killed_at.is_(None), ex.killed_at),
                else_=greatest(guest.c.killed_at, ex.killed_at),
            ),
            # How the kill in killed_at was known: it follows the newer kill.
            "killed_by": case(
                (not_(same), guest.c.killed_by),
                (ex.killed_at.is_(None), guest.c.killed_by),
                (guest.c.killed_at.is_(None), ex.killed_by),
                (ex.killed_at > guest.c.killed_at, ex.killed_by),
                else_=guest.c.killed_by,
            ),
        },
    ).returning(guest.c.id, guest.c.name)
    return stmt


_PG_DIALECT = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


def _prefixed_arrays(names: tuple[str, ...], table: Table, prefix: str) -> str:
    """_pg_arrays with each parameter named prefix + column: several tables' columns in one statement."""
    types = [table.c[name].type.compile(dialect=_PG_DIALECT) for name in names]
    return ", ".join(f"%({prefix}{name})b::{type_}[]" for name, type_ in zip(names, types, strict=True))


def _unnest_upsert_sql(stmt: Any, columns: Sequence[str], prefix: str = "") -> str:
    """`stmt`, an INSERT ... ON CONFLICT of one row built with SQLAlchemy, as INSERT ... SELECT
    FROM unnest(one array per column, named prefix + column) in the arrays' order: any number
    of rows in one statement whose text never changes, so psycopg prepares it once. The
    ON CONFLICT clause is SQLAlchemy's, as compiled; it must bind no value of its own."""
    compiled = stmt.compile(dialect=_PG_DIALECT, column_keys=list(columns))
    assert list(compiled.params) == list(columns), compiled.params
    text = str(compiled)
    head, tail = text[: text.index(" VALUES (")], text[text.index(" ON CONFLICT ") :]
    names = ", ".join(columns)
    arrays = _prefixed_arrays(tuple(columns), stmt.table, prefix)
    return f"{head} SELECT {names} FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n) ORDER BY n{tail}"


_GUEST_COLUMNS = (
    "name", "uuid", "vmm", "first_seen_at", "last_seen_at", "last_host_id", "last_action", "killed_at",
    "killed_by",
)  # fmt: skip
# guest_host's columns but guest_id, which the statement takes from the guest upsert by name.
_SIGHTING_COLUMNS = ("host_id", "uuid", "vmm", "first_seen_at", "last_seen_at", "last_action", "killed_at")


@functools.cache
def _postgresql_guests_sql() -> str:
    """_guest_upsert and _guest_host_upsert in one statement (PostgreSQL): the guest rows
    upserted from unnest(one array per column), in name order, as a WITH clause whose ids
    by name feed the guest_host upsert; the guests' (id, name) returned.

    An insertmanyvalues for the guests and an executemany (one statement per row) for
    guest_host were five statements for a group of four agent requests (#13).
    """
    guests = _unnest_upsert_sql(_guest_upsert("postgresql"), _GUEST_COLUMNS, prefix="g_")
    compiled = str(
        _guest_host_upsert("postgresql").compile(
            dialect=_PG_DIALECT, column_keys=["host_id", "guest_id", *_SIGHTING_COLUMNS[1:]]
        )
    )
    head, tail = compiled[: compiled.index(" VALUES (")], compiled[compiled.index(" ON CONFLICT ") :]
    columns = ("guest_name", *_SIGHTING_COLUMNS)
    arrays = _prefixed_arrays(_SIGHTING_COLUMNS, guest_host, prefix="s_")
    name_type = guest.c.name.type.compile(dialect=_PG_DIALECT)
    selected = ", ".join(["u.host_id", "g.id", *(f"u.{c}" for c in _SIGHTING_COLUMNS[1:])])
    return (
        f"WITH g AS ({guests}), "
        f"s AS ({head} SELECT {selected} "
        f"FROM unnest(%(s_guest_name)b::{name_type}[], {arrays}) AS u({', '.join(columns)}) "
        f"JOIN g ON g.name = u.guest_name{tail}) "
        "SELECT id, name FROM g"
    )


def _upsert_guests_postgresql(
    conn: Connection,
    guests: list[dict[str, Any]],
    sightings: list[tuple[int, dict[str, Any]]],
    ahead: _Ahead | None = None,
) -> dict[str, int]:
    """Guest ids by name: `guests` upserted, and each (host_id, guest row) of `sightings` into
    guest_host, in one round trip (with the statements queued on `ahead`)."""
    params: dict[str, Any] = {f"g_{c}": array_for(guest.c[c])(g[c] for g in guests) for c in _GUEST_COLUMNS}
    params["s_guest_name"] = TextArray(g["name"] for _hid, g in sightings)
    params["s_host_id"] = Int8Array(hid for hid, _g in sightings)
    params.update(
        (f"s_{c}", array_for(guest_host.c[c])(g[c] for _hid, g in sightings)) for c in _SIGHTING_COLUMNS[1:]
    )
    ahead = ahead or _Ahead(conn)
    return {name: gid for gid, name in ahead.result(ahead.add(_postgresql_guests_sql(), params))}


@functools.cache
def _guest_host_upsert(dialect: str) -> Any:
    """One host's own view of a guest: only this host's batches write its row."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    greatest = func.greatest if dialect == "postgresql" else func.max
    least = func.least if dialect == "postgresql" else func.min
    stmt: Any = insert(guest_host)
    ex = stmt.excluded
    t = guest_host.c
    newer = ex.last_seen_at > t.last_seen_at
    return stmt.on_conflict_do_update(
        index_elements=["host_id", "guest_id"],
        set_={
            "uuid": func.coalesce(case((newer, ex.uuid), else_=t.uuid), ex.uuid, t.uuid),
            "vmm": case((newer, ex.vmm), else_=t.vmm),
            "first_seen_at": least(t.first_seen_at, ex.first_seen_at),
            "last_seen_at": greatest(t.last_seen_at, ex.last_seen_at),
            "last_action": case((newer, ex.last_action), else_=t.last_action),
            "killed_at": case(
                (ex.killed_at.is_(None), t.killed_at),
                (t.killed_at.is_(None), ex.killed_at),
                else_=greatest(t.killed_at, ex.killed_at),
            ),
        },
    )


def _sqlite_values_repeated(compiled: str, n_rows: int) -> str:
    """An INSERT ... VALUES (one row) ... as SQLAlchemy compiled it, with the VALUES group
    repeated `n_rows` times."""
    head, rest = compiled.split(" VALUES ", 1)
    group, tail = rest.split(")", 1)
    return f"{head} VALUES {', '.join([group + ')'] * n_rows)}{tail}"


@functools.lru_cache(maxsize=64)
def _sqlite_guests_sql(n_rows: int) -> str:
    """_guest_upsert for `n_rows` guests in one statement, RETURNING (id, name); parameters
    in _GUEST_COLUMNS order, row after row (as SQLAlchemy's insertmanyvalues sends them)."""
    compiled = _guest_upsert("sqlite").compile(dialect=sqlite.dialect(), column_keys=list(_GUEST_COLUMNS))
    assert list(compiled.positiontup or []) == list(_GUEST_COLUMNS), compiled.positiontup
    return _sqlite_values_repeated(str(compiled), n_rows)


@functools.cache
def _sqlite_sightings_sql() -> str:
    compiled = _guest_host_upsert("sqlite").compile(
        dialect=sqlite.dialect(), column_keys=["host_id", "guest_id", *_SIGHTING_COLUMNS[1:]]
    )
    assert list(compiled.positiontup or []) == ["host_id", "guest_id", *_SIGHTING_COLUMNS[1:]]
    return str(compiled)


def _upsert_guests_sqlite(
    conn: Connection, kept: dict[int, list[dict[str, Any]]], sightings: list[tuple[int, dict[str, Any]]]
) -> dict[str, int]:
    """Guest ids by name: the guests of `kept` (by host id) upserted, in name order, and each
    (host_id, guest row) of `sightings` into guest_host; on the DB-API cursor (see _dbapi_cursor)."""
    time = _sqlite_time_or_none
    # Each sighting's times as bound, formatted once for its guest row and its guest_host row
    # (formatting a time is ~2 µs, #13); `sightings` holds every (host, guest) of `kept`.
    timed = [
        (hid, g, sqlite_time(g["first_seen_at"]), sqlite_time(g["last_seen_at"]), time(g["killed_at"]))
        for hid, g in sightings
    ]
    guests = sorted(
        (
            (g["name"], g["uuid"], g["vmm"], first, last, hid, g["last_action"], killed, g["killed_by"])
            for hid, g, first, last, killed in timed
        ),
        key=operator.itemgetter(0),
    )
    ids: dict[str, int] = {}
    cursor = _dbapi_cursor(conn)
    try:
        for start in range(0, len(guests), SQLITE_ROWS_PER_STATEMENT):
            chunk = guests[start : start + SQLITE_ROWS_PER_STATEMENT]
            cursor.execute(_sqlite_guests_sql(len(chunk)), [v for row in chunk for v in row])
            ids.update((name, gid) for gid, name in cursor.fetchall())
        cursor.executemany(
            _sqlite_sightings_sql(),
            [
                (hid, ids[g["name"]], g["uuid"], g["vmm"], first, last, g["last_action"], killed)
                for hid, g, first, last, killed in timed
            ],
        )
    finally:
        cursor.close()
    return ids


EVENT_COLUMNS = (
    "host_id", "boot_id", "source", "seq", "time", "received_at", "kind", "comm", "tid", "tgid",
    "address", "count", "action", "guest_id", "vcpu", "vmm",
)  # fmt: skip
# 1000 rows x 16 columns stays under SQLite's 32766 bound parameters per statement.
SQLITE_ROWS_PER_STATEMENT = 1000
# How SQLAlchemy's SQLite DateTime stores a (naive UTC) datetime: the same text, so
# comparisons and range queries see no difference (tests/app/ingest/test_write.py checks).
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


@functools.cache  # built once: constructing it per batch cost more CPU than a small batch's insert (#13)
def _event_insert(insert: Callable[[Table], Any], returning: bool = True) -> Any:
    key = PARTITIONED_EVENT_KEY if insert is postgresql.insert else EVENT_KEY
    stmt = insert(event).on_conflict_do_nothing(index_elements=list(key))
    return stmt.returning(event.c.host_id, event.c.source, event.c.seq) if returning else stmt


@functools.cache
def _sqlite_event_sql(n_rows: int, returning: bool) -> str:
    stmt = _event_insert(sqlite.insert, returning)
    return _sqlite_values_repeated(
        str(stmt.compile(dialect=sqlite.dialect(), column_keys=list(EVENT_COLUMNS))), n_rows
    )


def sqlite_time(at: datetime) -> str:
    """SQLITE_TIME_FORMAT's text of `at` in UTC; ingest times already have offset 0. From the
    fields by %-formatting: replace(tzinfo=None) and isoformat took ~2.4 µs a time, this ~1.4
    (a steady request formats ~5, #13); the same text for every year 1-9999."""
    if at.tzinfo is not UTC and at.utcoffset() != _ZERO:
        at = at.astimezone(UTC)
    return _SQLITE_TIME_TEXT % (at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond)


_ZERO = timedelta(0)
_SQLITE_TIME_TEXT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"  # SQLITE_TIME_FORMAT, year padded as isoformat's


def _insert_events_sqlite(
    conn: Connection, batches: list[Rows], host_ids: list[int], guest_ids: list[list[int | None]]
) -> tuple[set[tuple[int, str, int]] | None, dict[SqliteMinuteKey, list[int]]]:
    """(host_id, source, seq) of the events inserted, or None when every event of the round
    was: all the round's events in one INSERT (per SQLITE_ROWS_PER_STATEMENT rows). Also the
    [count, events] sums of all the round's events per minute key (_sqlite_rollup_rows), summed
    in the same pass: the rollups when every event was new, without a second pass over the
    events (rollups() cost ~2 ms of a 1000-event batch's writer CPU, #13)."""
    flat: list[Any] = []  # the rows' values one after the other, as the statement binds them
    add = flat.extend
    minutes: dict[SqliteMinuteKey, list[int]] = {}
    summed = minutes.get
    # Event times passed the schema's offset-0 check: their fields are UTC. Each one's text is
    # its minute's ("YYYY-MM-DD HH:MM", formatted once per minute) and ":SS.ffffff": 0.6 us an
    # event, where isoformat and a slice took 1.4 us (1000 per batch, #13).
    minute_texts: dict[tuple[date, int, int], str] = {}
    iso = datetime.isoformat
    for rows, host_id, gids in zip(batches, host_ids, guest_ids, strict=True):
        received = sqlite_time(rows.received_at)
        for e, gid in zip(rows.events, gids, strict=True):
            source, seq, at, kind, comm, tid, tgid, address, count, action, vcpu, vmm = _event_values(e)
            in_minute = at.date(), at.hour, at.minute
            minute = minute_texts.get(in_minute)
            if minute is None:
                minute = minute_texts[in_minute] = iso(at, " ", "minutes")[:16]
            add((
                host_id, e["boot_id"], source, seq, f"{minute}{_SECONDS[at.second]}{at.microsecond:06d}",
                received, kind, comm, tid, tgid, address, count, action, gid, vcpu, vmm,
            ))  # fmt: skip
            # The UTC minute's text is the rollup bucket's, where rollups() reads five fields of
            # the datetime and builds one per bucket.
            key = (minute, host_id, NO_GUEST if gid is None else gid, kind, action, source)
            acc = summed(key)
            if acc is None:
                minutes[key] = [count, 1]
            else:
                acc[0] += count
                acc[1] += 1
    width = len(EVENT_COLUMNS)
    step = SQLITE_ROWS_PER_STATEMENT * width
    inserted: set[tuple[int, str, int]] = set()
    whole: list[list[Any]] = []  # the chunks stored in full
    partly = False
    # The DB-API cursor of this Core connection, inside its transaction: SQLAlchemy's
    # parameter and result handling of 16 000 values cost as much as SQLite's insert.
    cursor = _dbapi_cursor(conn)
    try:
        for start in range(0, len(flat), step):
            chunk = flat[start : start + step]
            n = len(chunk) // width
            # RETURNING adds a third to SQLite's insert (bench/bench_ingest.py), and a batch is
            # nearly always all new or all resent: the insert runs without it, and the row
            # count tells which. Only a partly stored chunk is rolled back to the savepoint
            # and inserted again with RETURNING, to learn its new keys.
            cursor.execute("SAVEPOINT splitwatch_events")
            cursor.execute(_sqlite_event_sql(n, returning=False), chunk)
            stored = cursor.rowcount
            if stored == n:
                whole.append(chunk)
            else:
                partly = True
                if stored > 0:
                    cursor.execute("ROLLBACK TO splitwatch_events")
                    cursor.execute(_sqlite_event_sql(n, returning=True), chunk)
                    inserted.update((r[0], r[1], r[2]) for r in cursor.fetchall())
            cursor.execute("RELEASE splitwatch_events")
    finally:
        cursor.close()
    if not partly:
        return None, minutes  # the usual case: no key set to build
    for chunk in whole:
        # host_id, source and seq are each row's 1st, 3rd and 4th values.
        inserted.update(zip(chunk[0::width], chunk[2::width], chunk[3::width], strict=True))
    return inserted, minutes


# ":SS." per second of a minute, for SQLITE_TIME_FORMAT's text of an event time.
_SECONDS = tuple(f":{second:02d}." for second in range(60))

# An event row's values in EVENT_COLUMNS order, less host_id, boot_id, received_at and guest_id
# (one lookup for twelve keys).
_event_values = operator.itemgetter(
    "source", "seq", "time", "kind", "comm", "tid", "tgid", "address", "count", "action", "vcpu", "vmm"
)


# Per-row columns of the PostgreSQL insert (received_at too: a group holds several batches).
_PG_ARRAY_COLUMNS = (
    "host_id", "boot_id", "source", "seq", "time", "received_at", "kind", "comm", "tid", "tgid",
    "address", "count", "action", "guest_id", "vcpu", "vmm",
)  # fmt: skip
_PG_KEY_COLUMNS = ("host_id", "boot_id", "source", "seq")


def _pg_arrays(names: tuple[str, ...], table: Table = event) -> str:
    """`%(name)b::type[]` per column of `table`: one binary array parameter each (psycopg
    adapts a list in one go; the text format quotes every element through a regular expression)."""
    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
    return ", ".join(f"%({name})b::{table.c[name].type.compile(dialect=dialect)}[]" for name in names)


@functools.cache
def _postgresql_event_sql() -> str:
    """One statement for the new events of any number of hosts: INSERT ... SELECT FROM
    unnest(one array per column), RETURNING (host_id, boot_id, source, seq) of the rows
    inserted, and in the same statement each (host, boot_id, source)'s mark moved up to the
    highest seq inserted (SEQ_MARK_TABLE, read by _stored_keys).

    executemany sent a statement per row, and SQLAlchemy's insertmanyvalues processed every
    parameter and result row in Python: a 1000-event batch cost ~80 ms of the server's CPU
    (bench/bench_ingest.py). With one array per column, psycopg adapts 15 lists and the
    server does the rest in one round trip. Same conflict target as _event_insert.
    """
    columns = ", ".join(EVENT_COLUMNS)
    selected = ", ".join(f"u.{c}" for c in EVENT_COLUMNS)
    keys = ", ".join(_PG_KEY_COLUMNS[:3])
    rolled = ", ".join(_pg_rollup_sql(table.name, step_s) for step_s, table in ROLLUPS)
    return (
        f"WITH ins AS (INSERT INTO event ({columns}) SELECT {selected} "
        f"FROM unnest({_pg_arrays(_PG_ARRAY_COLUMNS)}) AS u({', '.join(_PG_ARRAY_COLUMNS)}) "
        f"ON CONFLICT ({', '.join(PARTITIONED_EVENT_KEY)}) DO NOTHING "
        f"RETURNING {', '.join(_PG_KEY_COLUMNS)}, time, guest_id, kind, action, count), "
        # Only upward, and no write at all when a late batch fills a gap below the mark.
        f"mark AS (INSERT INTO {SEQ_MARK_TABLE} AS m ({keys}, max_seq) "
        f"SELECT {keys}, max(seq) FROM ins GROUP BY {keys} ORDER BY {keys} "
        f"ON CONFLICT ({keys}) DO UPDATE SET max_seq = excluded.max_seq WHERE m.max_seq < excluded.max_seq), "
        f"{rolled} "
        f"SELECT {', '.join(_PG_KEY_COLUMNS)} FROM ins"
    )


_PG_ROLLUP_UNITS = {60: "minute", 3600: "hour"}
# _rollup_upsert's conflict action as PostgreSQL text (the rollup table aliased `t`), for the
# two rollup statements written by hand: the event statement's (_pg_rollup_sql) and the one
# after COPY (_postgresql_rollup_sql).
_PG_ROLLUP_CONFLICT = (
    f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE "
    "SET count = t.count + excluded.count, events = t.events + excluded.events"
)


def _pg_rollup_sql(name: str, step_s: int) -> str:
    """A WITH clause of _postgresql_event_sql: the rollup upsert (_rollup_upsert) of the rows
    `ins` inserted, summed by PostgreSQL as rollups() sums them (the UTC minute or hour, no
    guest as NO_GUEST), keys sorted. In the event statement, the rollups cost no round trip,
    no statement and no Python pass over the events of their own (#13: they were two of a
    steady group's nine round trips)."""
    unit = _PG_ROLLUP_UNITS[step_s]
    return (
        f"sum_{name} AS (INSERT INTO {name} AS t ({', '.join(ROLLUP_COLUMNS)}) "
        f"SELECT date_trunc('{unit}', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', host_id, "
        f"coalesce(guest_id, {NO_GUEST}), kind, action, source, sum(count), count(*) FROM ins "
        f"GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6 {_PG_ROLLUP_CONFLICT})"
    )


PgEventRow = tuple[Any, ...]  # an event's values in _PG_ARRAY_COLUMNS order


@functools.cache
def _pg_event_arrays() -> tuple[Callable[[Any], Any], ...]:
    """The array class of each of _PG_ARRAY_COLUMNS (pg_arrays: a fixed type, no lookup per execution)."""
    return tuple(array_for(event.c[name]) for name in _PG_ARRAY_COLUMNS)


def _insert_events_postgresql(
    conn: Connection, rows: list[PgEventRow]
) -> set[tuple[int, str, str, int]] | None:
    """Insert `rows` (values in _PG_ARRAY_COLUMNS order; any hosts); (host_id, boot_id,
    source, seq) of those inserted, with their rollups added (_postgresql_event_sql), or None
    when COPY stored every row (the rollups are then the caller's). Rows whose key and time are
    stored already are skipped (ON CONFLICT): call _stored_keys first for the contract,
    whatever the time. Every host's row must be locked by this transaction (_write_hosts' FOR
    UPDATE): that is what keeps the seq marks and the lookup consistent.

    PG_COPY_EVENTS rows or more go by COPY (_copy_events_postgresql); fewer, or a COPY that
    met a stored key, by one INSERT ... SELECT FROM unnest (_postgresql_event_sql)."""
    if len(rows) >= PG_COPY_EVENTS and _copy_events_postgresql(conn, rows):
        return None
    columns = zip(*rows, strict=True)
    params = {
        name: array(values)
        for name, array, values in zip(_PG_ARRAY_COLUMNS, _pg_event_arrays(), columns, strict=True)
    }
    # The DB-API cursor of this Core connection, inside its transaction (as on SQLite).
    cursor = _dbapi_cursor(conn)
    try:
        cursor.execute(_postgresql_event_sql(), params)
        return {(r[0], r[1], r[2], r[3]) for r in cursor.fetchall()}
    finally:
        cursor.close()


# From this many new events in a round, COPY beats the unnest statement (bench/bench_ingest.py,
# #13): psycopg writes COPY's binary rows in C, where it dumps an array parameter element by
# element in Python (~5 ms of the writer's CPU per 1000 events, against ~1.5), and PostgreSQL
# stores the rows without ON CONFLICT's speculative insertion (~4 ms less of its CPU). CPU per
# insert, ours + PostgreSQL's, unnest against COPY: 20 rows 0.7 + 1.1 ms either way, 100 rows
# 1.4 + 2.9 against 1.2 + 2.5, 200 rows 1.7 + 4.5 against 1.3 + 3.3, 400 rows 2.6 + 8.3 against
# 1.4 + 6.3. Small rounds (steady state) keep the one statement: COPY adds three round trips
# (savepoint, marks, release) for little.
PG_COPY_EVENTS = 200
_COPY_SAVEPOINT = "splitwatch_copy"


def _copy_events_postgresql(conn: Connection, rows: list[PgEventRow]) -> bool:
    """COPY `rows` into event and move their seq marks; False, with nothing written, when a
    row's key and time are stored already (then the caller's ON CONFLICT statement skips it).

    _stored_keys has left out every key stored whatever its time, so a conflict means a seq
    mark behind what is stored: never by ingest (every insert moves the marks in the same
    transaction), so COPY runs in a SAVEPOINT only to fall back, not to fail the batch.
    """
    marks: dict[tuple[int, str, str], int] = {}
    for r in rows:
        key = (r[0], r[1], r[2])  # host_id, boot_id, source; r[3] is the seq
        if r[3] > marks.get(key, -1):
            marks[key] = r[3]
    triples = sorted(marks)  # one lock order on the mark rows for every transaction
    cursor = _dbapi_cursor(conn)
    try:
        cursor.execute(f"SAVEPOINT {_COPY_SAVEPOINT}")
        try:
            with cursor.copy(_copy_sql()) as copy:
                copy.set_types(_copy_types())
                write = copy.write_row
                for r in rows:
                    write(r)
        except UniqueViolation:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_COPY_SAVEPOINT}")
            cursor.execute(f"RELEASE SAVEPOINT {_COPY_SAVEPOINT}")
            return False
        cursor.execute(
            _marks_upsert_sql(),
            {
                "host_id": Int8Array(t[0] for t in triples),
                "boot_id": TextArray(t[1] for t in triples),
                "source": TextArray(t[2] for t in triples),
                "seq": Int8Array(marks[t] for t in triples),
            },
        )
        cursor.execute(f"RELEASE SAVEPOINT {_COPY_SAVEPOINT}")
        return True
    finally:
        cursor.close()


@functools.cache
def _copy_sql() -> str:
    return f"COPY event ({', '.join(_PG_ARRAY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"


@functools.cache
def _copy_types() -> list[str]:
    """The columns' PostgreSQL type names, as binary COPY must be told (`varchar`, not
    `VARCHAR(64)`)."""
    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
    return [event.c[name].type.compile(dialect=dialect).split("(")[0].lower() for name in _PG_ARRAY_COLUMNS]


@functools.cache
def _marks_upsert_sql() -> str:
    """Each (host, boot_id, source)'s mark moved up to the seq given (as _postgresql_event_sql's
    `mark`)."""
    keys = ", ".join(_PG_KEY_COLUMNS[:3])
    return (
        f"INSERT INTO {SEQ_MARK_TABLE} AS m ({keys}, max_seq) "
        f"SELECT * FROM unnest({_pg_arrays((*_PG_KEY_COLUMNS[:3], 'seq'))}) AS u({keys}, seq) "
        f"ORDER BY {keys} ON CONFLICT ({keys}) DO UPDATE SET max_seq = excluded.max_seq "
        "WHERE m.max_seq < excluded.max_seq"
    )


def _lookup_sql(names: tuple[str, ...], table: str, returned: str) -> str:
    """Per row of unnest(one array per name), `returned` from the one row of `table` with
    those values, or no row. LATERAL ... LIMIT 1 keeps the lookup an index probe per key:
    joined plainly, the planner, which cannot know the arrays' lengths, hashed the keys and
    scanned the whole table (every seq mark, or every partition of `event`).

    Each array is unnested through a (SELECT ...): PostgreSQL plans a prepared statement for
    its parameters' values while that looks cheaper than its generic plan, and a literal
    array's length made every one-host lookup look cheaper: the marks lookup was planned at
    every execution (0.2 ms, more than it ran). An array from a sub-select has no length at
    planning time, so the generic plan is kept after the fifth execution.
    """
    k = ", ".join(f"k.{n}" for n in names)
    match = " AND ".join(f"t.{n} = k.{n}" for n in names)
    arrays = ", ".join(f"(SELECT {a})" for a in _pg_arrays(names).split(", "))
    return (
        f"SELECT {k}, t.{returned} FROM unnest({arrays}) AS k({', '.join(names)}) "
        f"CROSS JOIN LATERAL (SELECT {returned} FROM {table} AS t WHERE {match} LIMIT 1) AS t"
    )


@functools.cache
def _marks_sql() -> str:
    return _lookup_sql(_PG_KEY_COLUMNS[:3], SEQ_MARK_TABLE, "max_seq")


@functools.cache
def _probe_sql() -> str:
    return _lookup_sql(_PG_KEY_COLUMNS, "event", "seq")


EventKey = tuple[int, str, str, int, datetime]  # host_id, boot_id, source, seq, time
Marks = Callable[[], dict[tuple[int, str, str], int]]  # the seq marks read ahead (_queue_marks)


def _pg_event_keys(batches: list[Rows], host_ids: list[int]) -> list[EventKey]:
    return [
        (host_id, e["boot_id"], e["source"], e["seq"], e["time"])
        for rows, host_id in zip(batches, host_ids, strict=True)
        for e in rows.events
    ]


def _marks_params(keys: list[EventKey]) -> dict[str, list[Any]]:
    triples = sorted({k[:3] for k in keys})
    return {c: array_for(event.c[c])(t[i] for t in triples) for i, c in enumerate(_PG_KEY_COLUMNS[:3])}


def _queue_marks(ahead: _Ahead, keys: list[EventKey], created: Set[int]) -> Marks | None:
    """The seq marks of `keys` (less the hosts `created`) looked up with the statements queued
    on `ahead`: _stored_keys' first round trip, shared; None when there is nothing to look up."""
    keys = [k for k in keys if k[0] not in created]
    if not keys:
        return None
    found = ahead.add(_marks_sql(), _marks_params(keys))
    return lambda: {(r[0], r[1], r[2]): r[3] for r in ahead.result(found)}


def _stored_keys(
    conn: Connection, keys: list[EventKey], created: Set[int] = frozenset(), marks: Marks | None = None
) -> set[tuple[int, str, str, int]]:
    """Of `keys` (host_id, boot_id, source, seq, time), the (host_id, boot_id, source, seq)
    already stored, whatever their stored time (PostgreSQL; any number of hosts).

    The partitioned table's unique key holds `time` (PARTITIONED_EVENT_KEY), so ON CONFLICT
    alone would store again an event resent with another time (an agent that read its kernel
    log again after the wall clock was stepped dates it anew); the idempotency contract is
    (host, boot_id, source, seq). No time window is safe for that, so the time given is not
    used to narrow the lookup; the seq is. SEQs of one (host, boot_id, source) only grow, and
    SEQ_MARK_TABLE holds the highest one stored, moved by _insert_events_postgresql in the
    statement that stores the events: a key above its mark is new for certain. One round
    trip reads the marks; only keys at or below their mark (a resend, a late batch) or without
    one (a first batch of a boot) are looked up in `event`, in every day partition, in a
    second. Every host's row must be locked by this transaction (_write_hosts' FOR UPDATE),
    so no other transaction stores or marks its events in between.

    `created`: hosts this transaction has just inserted (_write_hosts), whose keys are new
    without a look: a host id is never reused. A new host has no mark, so each of its first
    batch's keys was looked up in `event`, every partition: with 8 new hosts sending 1000-event
    batches at once, that probe was ~10 ms of each first batch's write, the 8-sender bench's
    slowest batches (docs/benchmarks.md, #13).

    `marks`: the marks of these keys, read ahead (_queue_marks); else read here.
    """
    if created:
        keys = [k for k in keys if k[0] not in created]
    if not keys:
        return set()
    if marks is None:
        ahead = _Ahead(conn)
        marks = _queue_marks(ahead, keys, frozenset())
    held = marks() if marks is not None else {}
    cursor = _dbapi_cursor(conn)
    try:
        unsure = [k[:4] for k in keys if k[3] <= held.get(k[:3], k[3])]
        if not unsure:
            return set()
        probe = {c: array_for(event.c[c])(k[i] for k in unsure) for i, c in enumerate(_PG_KEY_COLUMNS)}
        cursor.execute(_probe_sql(), probe)
        return {(r[0], r[1], r[2], r[3]) for r in cursor.fetchall()}
    finally:
        cursor.close()


def _write_events(
    conn: Connection,
    insert: Callable[[Table], Any],
    batches: list[Rows],
    host_ids: list[int],
    guest_ids: list[dict[str, int]],
    created: Set[int] = frozenset(),
    marks: Marks | None = None,
    keys: list[EventKey] | None = None,
) -> list[int]:
    """The round's events and their rollups; per batch, how many of its events were new.
    PostgreSQL (see _stored_keys): `created`, hosts this round inserted; `keys`, the round's
    event keys (_pg_event_keys), built once for the seq marks read ahead, `marks`."""
    gids = [
        [ids.get(g) if g is not None else None for g in rows.event_guests]
        for rows, ids in zip(batches, guest_ids, strict=True)
    ]
    if not any(rows.events for rows in batches):
        return [0] * len(batches)
    inserted: set[tuple[int, str, int]] | None  # None: every event of the round
    # SQLite: the round's rollup rows as bound, summed while its events were flattened; used
    # when every event was new (the usual case), else rollups() sums the new ones below.
    sqlite_sums: dict[int, list[tuple[Any, ...]]] | None = None
    pg_summed = False  # PostgreSQL: the event statement added the rollups of what it inserted
    if conn.dialect.name == "sqlite":
        inserted, minutes = _insert_events_sqlite(conn, batches, host_ids, gids)
        if inserted is None:
            sqlite_sums = _sqlite_rollup_rows(minutes)
    else:
        assert keys is not None, "PostgreSQL: _write_round passes the round's event keys"
        stored = _stored_keys(conn, keys, created, marks)
        new: list[PgEventRow] = []
        add = new.append
        for rows, host_id, row_gids in zip(batches, host_ids, gids, strict=True):
            for e, gid in zip(rows.events, row_gids, strict=True):
                source, seq, at, kind, comm, tid, tgid, address, count, action, vcpu, vmm = _event_values(e)
                boot_id = e["boot_id"]
                if (host_id, boot_id, source, seq) not in stored:
                    add((
                        host_id, boot_id, source, seq, at, e["received_at"], kind, comm, tid, tgid,
                        address, count, action, gid, vcpu, vmm,
                    ))  # fmt: skip
        stored_now = _insert_events_postgresql(conn, new) if new else set()
        pg_summed = stored_now is not None  # not by COPY: the statement added the rollups
        if stored_now is None and not stored:
            inserted = None
        elif stored_now is None:
            inserted = {(r[0], r[2], r[3]) for r in new}
        else:
            inserted = {(host_id, source, seq) for host_id, _boot, source, seq in stored_now}
    accepted: list[int] = []
    sums: dict[int, list[dict[str, Any]]] = {step_s: [] for step_s, _ in ROLLUPS}
    everything_new = inserted is None or len(inserted) == sum(len(rows.events) for rows in batches)
    new_keys = inserted or set()
    for rows, host_id, row_gids, ids in zip(batches, host_ids, gids, guest_ids, strict=True):
        pairs = zip(rows.events, row_gids, strict=True)
        fresh = (
            list(pairs)
            if everything_new
            else [(e, g) for e, g in pairs if (host_id, e["source"], e["seq"]) in new_keys]
        )
        accepted.append(len(fresh))
        if not fresh:
            continue
        if len(ids) < len(rows.guests):  # some guests were over the host's cap
            _count_unattributed(conn, insert, rows, host_id, fresh)
        if sqlite_sums is not None or pg_summed:
            continue
        for step_s, found in rollups(fresh, host_id).items():
            sums[step_s].extend(found)
    for step_s, table in ROLLUPS:
        if sqlite_sums is not None:
            if sqlite_sums[step_s]:
                _upsert_rollup_sqlite_rows(conn, table, sqlite_sums[step_s])
            continue
        # Keys sorted, so concurrent PostgreSQL transactions lock rollup rows in one order.
        found = sorted(sums[step_s], key=_rollup_order)
        if not found:
            continue
        if conn.dialect.name == "sqlite":
            _upsert_rollup_sqlite(conn, table, found)
        else:
            _upsert_rollup_postgresql(conn, table, found)
    return accepted


def _rollup_order(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return (r["bucket"], r["host_id"], r["guest_id"], r["kind"], r["action"], r["source"])


def _count_unattributed(
    conn: Connection,
    insert: Callable[[Table], Any],
    rows: Rows,
    host_id: int,
    fresh: list[tuple[dict[str, Any], int | None]],
) -> None:
    """A `guest_cap` gap per source for the inserted events stored without their guest."""
    seqs: dict[str, list[int]] = {}
    for e, gid in fresh:
        if gid is None and e["vmm"] is not None:  # a guest's event (vmm set) with no guest id
            seqs.setdefault(e["source"], []).append(e["seq"])
    if not seqs:
        return
    conn.execute(
        insert(gap).on_conflict_do_nothing(index_elements=list(GAP_KEY)),
        [
            {
                "host_id": host_id,
                "boot_id": rows.host["boot_id"],
                "source": source,
                "first_seq": min(found),
                "last_seq": max(found),
                "count": len(found),
                "reason": GUEST_CAP_REASON,
                "received_at": rows.received_at,
            }
            for source, found in sorted(seqs.items())
        ],
    )


ROLLUP_COLUMNS = ("bucket", "host_id", "guest_id", "kind", "action", "source", "count", "events")


@functools.cache  # built once (see _event_insert)
def _rollup_upsert(insert: Callable[[Table], Any], table: Table) -> Any:
    up = insert(table)
    return up.on_conflict_do_update(
        index_elements=list(ROLLUP_KEY),
        set_={"count": table.c.count + up.excluded.count, "events": table.c.events + up.excluded.events},
    )


@functools.cache
def _sqlite_rollup_sql(name: str) -> str:
    table = {t.name: t for _, t in ROLLUPS}[name]
    compiled = _rollup_upsert(sqlite.insert, table).compile(
        dialect=sqlite.dialect(), column_keys=list(ROLLUP_COLUMNS)
    )
    # Positional parameters follow ROLLUP_COLUMNS; the SET clause binds none.
    assert list(compiled.positiontup or []) == list(ROLLUP_COLUMNS), compiled.positiontup
    return str(compiled)


def _upsert_rollup_sqlite(conn: Connection, table: Table, sums: list[dict[str, Any]]) -> None:
    _upsert_rollup_sqlite_rows(
        conn,
        table,
        [
            (sqlite_time(r["bucket"]), r["host_id"], r["guest_id"], r["kind"], r["action"], r["source"],
             r["count"], r["events"])
            for r in sums
        ],
    )  # fmt: skip


def _upsert_rollup_sqlite_rows(conn: Connection, table: Table, rows: list[tuple[Any, ...]]) -> None:
    """_sqlite_rollup_sql for rows of values as bound (ROLLUP_COLUMNS order), several rows a
    statement: an executemany ran it once per row (0.9 -> 0.5 ms of SQLite's time for a
    1000-event batch's ~108 rows, #13). The rows go in chunks of power-of-two sizes (72 rows:
    64 and 8), so a table has at most ten statements of its own in sqlite3's cache of 128
    prepared statements, whatever mix of group sizes the writer sees."""
    cursor = _dbapi_cursor(conn)
    try:
        for start, n in _power_of_two_chunks(len(rows)):
            chunk = rows[start : start + n]
            cursor.execute(_sqlite_rollup_many_sql(table.name, n), [v for row in chunk for v in row])
    finally:
        cursor.close()


def _power_of_two_chunks(n_rows: int) -> list[tuple[int, int]]:
    """(start, size) covering n_rows, sizes powers of two from the largest, none over
    _SQLITE_ROLLUP_CHUNK."""
    chunks: list[tuple[int, int]] = []
    start = 0
    size = _SQLITE_ROLLUP_CHUNK
    while start < n_rows:
        while size > n_rows - start:
            size //= 2
        chunks.append((start, size))
        start += size
    return chunks


_SQLITE_ROLLUP_CHUNK = 512  # 8 values a row: 4096 bound parameters


@functools.lru_cache(maxsize=64)
def _sqlite_rollup_many_sql(name: str, n_rows: int) -> str:
    return _sqlite_values_repeated(_sqlite_rollup_sql(name), n_rows)


# A rollup row's values before its counts: the minute's time text (SQLITE_TIME_FORMAT's first
# 16 characters), host_id, guest_id (NO_GUEST for none), kind, action, source.
SqliteMinuteKey = tuple[str, int, int, str, str, str]


def _sqlite_rollup_rows(minutes: Mapping[SqliteMinuteKey, list[int]]) -> dict[int, list[tuple[Any, ...]]]:
    """{60: rollup_1m rows, 3600: rollup_1h rows} as _sqlite_rollup_sql binds them, sorted by
    key, from the [count, events] sums per minute key (_insert_events_sqlite): what rollups()
    gives for the same events, with the bucket as the text SQLite stores (a minute or an hour,
    ":00" seconds and zero microseconds)."""
    hours = fold_sums(minutes, lambda k: (k[0][:13], *k[1:]))
    return {
        60: [(k[0] + ":00.000000", *k[1:], c, n) for k, (c, n) in sorted(minutes.items())],
        3600: [(k[0] + ":00:00.000000", *k[1:], c, n) for k, (c, n) in sorted(hours.items())],
    }


@functools.cache
def _postgresql_rollup_sql(name: str) -> str:
    """_rollup_upsert as one INSERT ... SELECT FROM unnest(one array per column), rows in the
    order given (WITH ORDINALITY): the sorted keys, one lock order for every transaction."""
    table = {t.name: t for _, t in ROLLUPS}[name]
    columns = ", ".join(ROLLUP_COLUMNS)
    return (
        f"INSERT INTO {name} AS t ({columns}) SELECT {columns} "
        f"FROM unnest({_pg_arrays(ROLLUP_COLUMNS, table)}) WITH ORDINALITY AS u({columns}, n_) ORDER BY n_ "
        f"{_PG_ROLLUP_CONFLICT}"
    )


def _upsert_rollup_postgresql(conn: Connection, table: Table, sums: list[dict[str, Any]]) -> None:
    """One statement for the round's rows of `table`: SQLAlchemy's executemany sent one per
    row (~100 for a 1000-event batch: bench/bench_ingest.py, #13)."""
    cursor = _dbapi_cursor(conn)
    try:
        cursor.execute(_postgresql_rollup_sql(table.name), {c: [r[c] for r in sums] for c in ROLLUP_COLUMNS})
    finally:
        cursor.close()


__all__ = ["GUEST_CAP_REASON", "BatchJob", "GuestLimits", "WriteResult", "write_batch", "write_group"]
