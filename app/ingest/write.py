"""One batch into the database: SQLAlchemy Core, one transaction, idempotent.

Order inside the transaction (the caller owns it: app/ingest/writer.py):
1. host: created if new, then locked (PostgreSQL: FOR UPDATE) and updated — identity (not
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
   statement and round trip per batch (#13). SQLite: the Core statement, compiled once, with
   its VALUES group repeated per row and the rows' values flattened (times formatted as
   SQLAlchemy stores them), run on the DB-API cursor of the same Core connection and
   transaction: SQLAlchemy's per-row parameter and result processing cost more CPU than
   SQLite's own insert (bench/bench_ingest.py). The rollup upserts go the same way on SQLite.
5. rollup_1m and rollup_1h: count += ... for those inserted rows only, so a resent batch
   adds nothing; keys sorted, so concurrent PostgreSQL transactions lock in one order.
   Inserted events that lost their guest to the cap: one `guest_cap` gap per source, keyed
   by the first such seq, so a resend counts nothing twice.
6. gap: ON CONFLICT DO NOTHING.
The same statements run on SQLite and PostgreSQL (each dialect's insert construct).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, case, func, not_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.errors import PayloadTooLarge
from app.ingest.rows import (
    Rows,
    cpu_counts,
    cpu_dicts,
    rollups,
    state_signature,
)
from app.retention.partitions import SEQ_MARK_TABLE
from app.store.tables import ROLLUPS, event, gap, guest, guest_host, host, host_state

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


def _insert_for(conn: Connection) -> Callable[[Table], Any]:
    if conn.dialect.name == "postgresql":
        return postgresql.insert
    if conn.dialect.name == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"ingest supports sqlite and postgresql, not {conn.dialect.name}")


def write_batch(conn: Connection, rows: Rows, limits: GuestLimits | None = None) -> WriteResult:
    insert = _insert_for(conn)
    host_id = _write_host(conn, insert, rows)
    guest_ids = _write_guests(conn, insert, rows, host_id, limits or GuestLimits())
    accepted = _write_events(conn, insert, rows, host_id, guest_ids)
    if rows.gaps:
        conn.execute(
            insert(gap).on_conflict_do_nothing(index_elements=list(GAP_KEY)),
            [{**g, "host_id": host_id} for g in rows.gaps],
        )
    return WriteResult(accepted=accepted, duplicates=rows.received - accepted, host_id=host_id)


def _write_host(conn: Connection, insert: Callable[[Table], Any], rows: Rows) -> int:
    h = rows.host
    received_at = rows.received_at
    query = _host_select(conn.dialect.name)
    by_name = {"host_name_": h["name"]}
    current = conn.execute(query, by_name).first()
    if current is None:
        # A new host (an import creates it too, with the identity it has). Two first batches
        # racing on PostgreSQL: the second insert waits for the first and does nothing.
        # An import-only batch creates the host as not reported by any agent (#16).
        conn.execute(
            insert(host)
            .values(
                **h,
                first_seen_at=received_at,
                last_seen_at=received_at,
                agent_reported=not rows.import_only,
                cpus=[],
            )
            .on_conflict_do_nothing(index_elements=["name"])
        )
        current = conn.execute(query, by_name).one()
    host_id = int(current.id)
    values: dict[str, Any] = {}
    if not rows.import_only:
        # last_seen_at is the agent's liveness (status silent): old logs replayed by
        # `splitwatch import` must not make a silent host look alive.
        values["last_seen_at"] = max(current.last_seen_at, received_at)
        values["agent_reported"] = True
    if rows.health is not None:
        values["health"] = rows.health

    state = rows.state
    held_at: datetime | None = current.state_observed_at
    if not rows.import_only and (state is None or held_at is None or state.observed_at > held_at):
        # A batch with no state or a newer one: its identity (boot, kernel, agent) is current.
        # An import's is not: it replays old logs (maybe another boot's) through the CLI.
        values.update(h)
    if state is not None and (held_at is None or state.observed_at > held_at):
        counts = cpu_counts(state.cpus)
        cpus = cpu_dicts(state.cpus)
        judged = state.consistency
        verdict = judged.verdict if judged is not None else None
        since = current.verdict_since if verdict == current.verdict and verdict is not None else None
        values.update(
            verdict=verdict,
            verdict_reason=judged.reason if judged is not None else None,
            verdict_details=dict(judged.details) if judged is not None else None,
            verdict_since=since or (state.observed_at if verdict is not None else None),
        )
        values.update(
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
            cpus=cpus,
        )
        _record_state(conn, rows, host_id, cpus)
    elif state is not None and state.observed_at < held_at:  # type: ignore[operator]
        # Out of order: history only; the host's current verdict follows the newest sample.
        _record_state(conn, rows, host_id, cpu_dicts(state.cpus))
    # Only what changed is written (#13): in steady state an agent's sample repeats the held
    # state, so the update is last_seen_at and state_observed_at, not the per-CPU JSON again.
    held = current._mapping
    values = {k: v for k, v in values.items() if held[k] != v}
    if values:
        conn.execute(_HOST_UPDATE, {**values, "host_id_": host_id})
    return host_id


@functools.cache
def _host_select(dialect: str) -> Any:
    """The host row by name (PostgreSQL: locked), built once: statement construction and its
    cache key cost more CPU than SQLite's lookup (#13, docs/benchmarks.md)."""
    query = select(host).where(host.c.name == bindparam("host_name_"))
    return query.with_for_update() if dialect == "postgresql" else query


# The SET clause follows the parameters' keys (SQLAlchemy compiles and caches one per key set).
_HOST_UPDATE = update(host).where(host.c.id == bindparam("host_id_"))


def _record_state(conn: Connection, rows: Rows, host_id: int, cpus: list[dict[str, Any]]) -> None:
    state = rows.state
    assert state is not None
    h = rows.host
    verdict = state.consistency.verdict if state.consistency is not None else None
    in_force = conn.execute(_IN_FORCE, {"host_id_": host_id, "at_": state.observed_at}).first()
    new = state_signature(
        h["boot_id"], h["kernel"], state.mode, state.ratelimit, state.mitigate,
        state.sld_supported, state.bld_supported, cpus, verdict,
    )  # fmt: skip
    if in_force is not None and state_signature(*in_force) == new:
        return
    counts = cpu_counts(state.cpus)
    conn.execute(
        _STATE_INSERT,
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
        ),
    )


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


# Which of these guests the host reported before; built once (see _host_select).
_KNOWN_GUESTS = (
    select(guest.c.name)
    .select_from(guest_host.join(guest, guest.c.id == guest_host.c.guest_id))
    .where(
        guest_host.c.host_id == bindparam("host_id_"), guest.c.name.in_(bindparam("names_", expanding=True))
    )
)


def _write_guests(
    conn: Connection, insert: Callable[[Table], Any], rows: Rows, host_id: int, limits: GuestLimits
) -> dict[str, int]:
    """Guest ids by name for the batch's guests; a guest over the host's cap gets none."""
    if not rows.guests:
        return {}
    names = [g["name"] for g in rows.guests]
    known: set[str] = set()
    for start in range(0, len(names), _IN_CHUNK):
        chunk = names[start : start + _IN_CHUNK]
        known.update(conn.execute(_KNOWN_GUESTS, {"host_id_": host_id, "names_": chunk}).scalars())
    new = [n for n in names if n not in known]
    if len(new) > limits.new_per_batch:
        raise PayloadTooLarge(
            f"this batch brings {len(new)} guests host {rows.host['name']!r} has not reported before, "
            f"more than the {limits.new_per_batch} one batch may (SPLITWATCH_MAX_NEW_GUESTS_PER_BATCH): "
            "send it in smaller batches (the agent does so by itself) or raise the setting",
            code="too_many_new_guests",
        )
    kept = rows.guests
    if new:
        held = conn.execute(
            select(func.count()).select_from(guest_host).where(guest_host.c.host_id == host_id)
        ).scalar_one()
        room = max(limits.per_host - int(held), 0)
        if room < len(new):
            # Names are sorted: which guests get in is the same on a resend.
            over = set(new[room:])
            kept = [g for g in rows.guests if g["name"] not in over]
    if not kept:
        return {}
    params = [{**g, "last_host_id": host_id} for g in kept]
    ids = {name: gid for gid, name in conn.execute(_guest_upsert(conn.dialect.name), params)}
    conn.execute(
        _guest_host_upsert(conn.dialect.name),
        [
            {
                "host_id": host_id,
                "guest_id": ids[g["name"]],
                "uuid": g["uuid"],
                "vmm": g["vmm"],
                "first_seen_at": g["first_seen_at"],
                "last_seen_at": g["last_seen_at"],
                "last_action": g["last_action"],
                "killed_at": g["killed_at"],
            }
            for g in kept
        ],
    )
    return ids


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
    return stmt.returning(event.c.source, event.c.seq) if returning else stmt


@functools.cache
def _sqlite_event_sql(n_rows: int, returning: bool) -> str:
    stmt = _event_insert(sqlite.insert, returning)
    compiled = str(stmt.compile(dialect=sqlite.dialect(), column_keys=list(EVENT_COLUMNS)))
    head, rest = compiled.split(" VALUES ", 1)
    group, tail = rest.split(")", 1)
    return f"{head} VALUES {', '.join([group + ')'] * n_rows)}{tail}"


def sqlite_time(at: datetime) -> str:
    """SQLITE_TIME_FORMAT by the faster isoformat; ingest times already have offset 0."""
    if at.tzinfo is not UTC and at.utcoffset() != _ZERO:
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(" ", "microseconds")


_ZERO = timedelta(0)


def _insert_events_sqlite(
    conn: Connection,
    events: list[dict[str, Any]],
    guest_ids: list[int | None],
    host_id: int,
    received_at: datetime,
) -> set[tuple[str, int]]:
    inserted: set[tuple[str, int]] = set()
    received = sqlite_time(received_at)
    for start in range(0, len(events), SQLITE_ROWS_PER_STATEMENT):
        chunk = events[start : start + SQLITE_ROWS_PER_STATEMENT]
        flat: list[Any] = []
        extend = flat.extend
        # Event times passed the schema's offset-0 check: their isoformat is SQLITE_TIME_FORMAT
        # plus "+00:00", so a slice replaces sqlite_time's astimezone/replace (1000 per batch).
        iso = datetime.isoformat
        for e, gid in zip(chunk, guest_ids[start : start + SQLITE_ROWS_PER_STATEMENT], strict=True):
            extend(
                (
                    host_id, e["boot_id"], e["source"], e["seq"], iso(e["time"], " ", "microseconds")[:26],
                    received,
                    e["kind"], e["comm"], e["tid"], e["tgid"], e["address"], e["count"], e["action"],
                    gid, e["vcpu"], e["vmm"],
                )
            )  # fmt: skip
        # The DB-API cursor of this Core connection, inside its transaction: SQLAlchemy's
        # parameter and result handling of 16 000 values cost as much as SQLite's insert.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            # RETURNING adds a third to SQLite's insert (bench/bench_ingest.py), and a batch is
            # nearly always all new or all resent: the insert runs without it, and the row
            # count tells which. Only a partly stored chunk is rolled back to the savepoint
            # and inserted again with RETURNING, to learn its new keys.
            cursor.execute("SAVEPOINT splitwatch_events")
            cursor.execute(_sqlite_event_sql(len(chunk), returning=False), flat)
            stored = cursor.rowcount
            if stored == len(chunk):
                inserted.update((e["source"], e["seq"]) for e in chunk)
            elif stored > 0:
                cursor.execute("ROLLBACK TO splitwatch_events")
                cursor.execute(_sqlite_event_sql(len(chunk), returning=True), flat)
                inserted.update(cursor.fetchall())
            cursor.execute("RELEASE splitwatch_events")
        finally:
            cursor.close()
    return inserted


# Per-row columns of the PostgreSQL insert (received_at is one value for the statement).
_PG_ARRAY_COLUMNS = (
    "host_id", "boot_id", "source", "seq", "time", "kind", "comm", "tid", "tgid", "address", "count",
    "action", "guest_id", "vcpu", "vmm",
)  # fmt: skip
_PG_KEY_COLUMNS = ("host_id", "boot_id", "source", "seq")


def _pg_arrays(names: tuple[str, ...]) -> str:
    """`%(name)b::type[]` per column: one binary array parameter each (psycopg adapts a list
    in one go; the text format quotes every element through a regular expression)."""
    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
    return ", ".join(f"%({name})b::{event.c[name].type.compile(dialect=dialect)}[]" for name in names)


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
    selected = ", ".join("%(received_at)s" if c == "received_at" else f"u.{c}" for c in EVENT_COLUMNS)
    keys = ", ".join(_PG_KEY_COLUMNS[:3])
    return (
        f"WITH ins AS (INSERT INTO event ({columns}) SELECT {selected} "
        f"FROM unnest({_pg_arrays(_PG_ARRAY_COLUMNS)}) AS u({', '.join(_PG_ARRAY_COLUMNS)}) "
        f"ON CONFLICT ({', '.join(PARTITIONED_EVENT_KEY)}) DO NOTHING "
        f"RETURNING {', '.join(_PG_KEY_COLUMNS)}), "
        # Only upward, and no write at all when a late batch fills a gap below the mark.
        f"mark AS (INSERT INTO {SEQ_MARK_TABLE} AS m ({keys}, max_seq) "
        f"SELECT {keys}, max(seq) FROM ins GROUP BY {keys} ORDER BY {keys} "
        f"ON CONFLICT ({keys}) DO UPDATE SET max_seq = excluded.max_seq WHERE m.max_seq < excluded.max_seq) "
        f"SELECT {', '.join(_PG_KEY_COLUMNS)} FROM ins"
    )


def _insert_events_postgresql(
    conn: Connection, rows: list[dict[str, Any]], received_at: datetime
) -> set[tuple[int, str, str, int]]:
    """Insert `rows` (event dicts that hold host_id, boot_id and guest_id; any hosts) in one
    round trip; (host_id, boot_id, source, seq) of those inserted. Rows whose key and time are
    stored already are skipped (ON CONFLICT): call _stored_keys first for the contract, whatever
    the time. Every host's row must be locked by this transaction (write_batch's FOR UPDATE):
    that is what keeps the seq marks and the lookup consistent."""
    params: dict[str, Any] = {name: [r[name] for r in rows] for name in _PG_ARRAY_COLUMNS}
    params["received_at"] = received_at
    # The DB-API cursor of this Core connection, inside its transaction (as on SQLite).
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_postgresql_event_sql(), params)
        return {(r[0], r[1], r[2], r[3]) for r in cursor.fetchall()}
    finally:
        cursor.close()


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


def _stored_keys(
    conn: Connection, keys: list[tuple[int, str, str, int, datetime]]
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
    second. Every host's row must be locked by this transaction (write_batch's FOR UPDATE),
    so no other transaction stores or marks its events in between.
    """
    if not keys:
        return set()
    triples = sorted({k[:3] for k in keys})
    marks: dict[tuple[int, str, str], int] = {}
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_marks_sql(), {c: [t[i] for t in triples] for i, c in enumerate(_PG_KEY_COLUMNS[:3])})
        marks = {(r[0], r[1], r[2]): r[3] for r in cursor.fetchall()}
        unsure = [k[:4] for k in keys if k[3] <= marks.get(k[:3], k[3])]
        if not unsure:
            return set()
        cursor.execute(_probe_sql(), {c: [k[i] for k in unsure] for i, c in enumerate(_PG_KEY_COLUMNS)})
        return {(r[0], r[1], r[2], r[3]) for r in cursor.fetchall()}
    finally:
        cursor.close()


def _write_events(
    conn: Connection, insert: Callable[[Table], Any], rows: Rows, host_id: int, guest_ids: dict[str, int]
) -> int:
    if not rows.events:
        return 0
    gids = [guest_ids.get(g) if g is not None else None for g in rows.event_guests]
    if conn.dialect.name == "sqlite":
        inserted = _insert_events_sqlite(conn, rows.events, gids, host_id, rows.received_at)
    else:
        stored = _stored_keys(
            conn, [(host_id, e["boot_id"], e["source"], e["seq"], e["time"]) for e in rows.events]
        )
        new = [
            {**e, "host_id": host_id, "guest_id": gid}
            for e, gid in zip(rows.events, gids, strict=True)
            if (host_id, e["boot_id"], e["source"], e["seq"]) not in stored
        ]
        stored_now = _insert_events_postgresql(conn, new, rows.received_at) if new else set()
        inserted = {(source, seq) for _, _, source, seq in stored_now}
    if not inserted:
        return 0
    pairs = zip(rows.events, gids, strict=True)
    fresh = (
        pairs
        if len(inserted) == len(rows.events)
        else ((e, g) for e, g in pairs if (e["source"], e["seq"]) in inserted)
    )
    if len(guest_ids) < len(rows.guests):  # some guests were over the host's cap
        listed = list(fresh)
        _count_unattributed(conn, insert, rows, host_id, listed)
        by_step = rollups(listed, host_id)
    else:
        by_step = rollups(fresh, host_id)
    for step_s, table in ROLLUPS:
        if conn.dialect.name == "sqlite":
            _upsert_rollup_sqlite(conn, table, by_step[step_s])
        else:
            conn.execute(_rollup_upsert(insert, table), by_step[step_s])
    return len(inserted)


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
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(
            _sqlite_rollup_sql(table.name),
            [
                (sqlite_time(r["bucket"]), r["host_id"], r["guest_id"], r["kind"], r["action"], r["source"],
                 r["count"], r["events"])
                for r in sums
            ],
        )  # fmt: skip
    finally:
        cursor.close()


__all__ = ["GUEST_CAP_REASON", "GuestLimits", "WriteResult", "write_batch"]
