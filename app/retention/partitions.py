"""PostgreSQL day partitions of `event`: made ahead, old ones dropped (#13).

`event` on PostgreSQL is PARTITION BY RANGE (time) (migrations/versions/2026_11_30_scale.py):
one partition per UTC day, `event_pYYYYMMDD` for [day, day + 1), and `event_default` for any
other time, so an event at a time nobody planned (a host clock years ahead, a late event older
than the oldest partition) is stored, never a failed insert. SQLite has no partitions: these
functions are PostgreSQL-only and the callers check the dialect.

Every statement here runs in the caller's transaction with a short lock_timeout: creating or
dropping a partition locks the parent table, and retention must wait behind ingest, not stall
it; a timed-out step is tried again on the next run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import Connection, text

from app.retention.plan import DEFAULT_PARTITION, is_event_partition, partition_name

# Waiting for the parent's lock queues ingest behind the DDL: give up soon, retry next run.
DDL_LOCK_TIMEOUT = "2s"
# The event table's unique key: the idempotency key, plus `time` on PostgreSQL.
PARTITIONED_UNIQUE = "uq_event_host_id_boot_id_source_seq"
PARTITIONED_EVENT_KEY = ("host_id", "boot_id", "source", "seq", "time")
# event's foreign keys, which PostgreSQL does without (see include_object).
EVENT_FOREIGN_KEYS = ("fk_event_host_id_host", "fk_event_guest_id_guest")
# The highest stored seq per (host_id, boot_id, source), PostgreSQL only
# (migrations/versions/2026_11_30_event_marks.py): ingest looks up only the keys at or below it.
SEQ_MARK_TABLE = "event_seq_mark"


def set_lock_timeout(conn: Connection) -> None:
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")


def is_partitioned(conn: Connection) -> bool:
    return (
        conn.dialect.name == "postgresql"
        and conn.execute(
            text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('event')")
        ).first()
        is not None
    )


def event_partitions(conn: Connection) -> list[str]:
    """Names of the partitions attached to `event` (day partitions and the default)."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('event') ORDER BY c.relname"
        )
    ).scalars()
    return [name for name in rows if is_event_partition(name)]


def _literal(at: dt.datetime) -> str:
    # Partition bounds are DDL: no bind parameters. An aware UTC datetime, written by us.
    return f"'{at.astimezone(dt.UTC).isoformat()}'"


def ensure_default_partition(conn: Connection) -> None:
    conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {DEFAULT_PARTITION} PARTITION OF event DEFAULT")


def ensure_day_partition(conn: Connection, day: dt.datetime) -> bool:
    """Make the partition of `day` if missing; True when it was made.

    Rows of that day already in the default partition (a clock ahead, before the day was
    planned) move into it: PostgreSQL refuses to create a partition whose range the default
    partition holds rows of.
    """
    name = partition_name(day)
    if conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None:
        return False
    lo, hi = _literal(day), _literal(day + dt.timedelta(days=1))
    stray = conn.exec_driver_sql(
        f"SELECT 1 FROM {DEFAULT_PARTITION} WHERE time >= {lo} AND time < {hi} LIMIT 1"
    ).first()
    if stray is None:
        conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF event FOR VALUES FROM ({lo}) TO ({hi})")
        return True
    conn.exec_driver_sql(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE event INCLUDING DEFAULTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE time >= {lo} AND time < {hi} RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved"
    )
    conn.exec_driver_sql(f"ALTER TABLE event ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
    return True


def drop_partition(conn: Connection, name: str) -> None:
    """DROP TABLE of one day partition: its rows go at once, no DELETE, no vacuum debt."""
    if not is_event_partition(name) or name == DEFAULT_PARTITION:
        raise ValueError(f"{name!r} is not a day partition of event")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def purge_seq_marks(conn: Connection) -> int:
    """Delete the seq marks of past boots that have no event left; how many went.

    Call it in the transaction that dropped partitions, after the drops: DROP TABLE of a
    partition holds the parent's ACCESS EXCLUSIVE lock until commit, so no ingest transaction
    is storing events (or moving a mark, which it does in the same statement) meanwhile, and
    this statement's snapshot sees every stored event. That matters: a mark may be missing (the
    keys are then looked up) but never below a stored seq, and deleting the mark of a boot
    whose events another transaction is storing, then a late batch of lower seqs making it
    anew, would leave it below. Only past boots (not the host's current `boot_id`) are looked
    at: they are what retention makes empty, and they are few, so the lock is held briefly."""
    result = conn.exec_driver_sql(
        f"DELETE FROM {SEQ_MARK_TABLE} AS m USING host AS h"
        " WHERE h.id = m.host_id AND m.boot_id <> h.boot_id"
        " AND NOT EXISTS (SELECT 1 FROM event AS e"
        " WHERE e.host_id = m.host_id AND e.boot_id = m.boot_id AND e.source = m.source)"
    )
    return int(result.rowcount)


def include_name(name: str | None, type_: str, _parents: Mapping[str, str | None]) -> bool:
    """Alembic's schema comparison skips the partitions and the seq marks: they are event's
    storage and ingest's index to it on PostgreSQL, not tables of the metadata (their indexes
    go with them)."""
    return not (
        type_ == "table" and name is not None and (is_event_partition(name) or name == SEQ_MARK_TABLE)
    )


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Alembic's comparison skips event's unique key on PostgreSQL, where it also holds `time`
    (the partition key, PARTITIONED_EVENT_KEY), and event's foreign keys to host and guest
    where the database has none (PostgreSQL: triggers on the parents keep their ON DELETE
    actions, migrations/versions/2026_11_30_pg_event_refs.py); tests/app/store/test_migrations.py
    checks that key, the partitioning and those triggers themselves, and that SQLite has the
    foreign keys. Anywhere else (SQLite) the key is compared as usual."""
    if type_ == "foreign_key_constraint" and name in EVENT_FOREIGN_KEYS:
        return reflected or compare_to is not None
    if type_ != "unique_constraint" or name != PARTITIONED_UNIQUE:
        return True
    table = getattr(obj, "table", None)
    if getattr(table, "name", None) != "event":
        return True
    pair = obj if reflected else compare_to
    columns = [c.name for c in getattr(pair, "columns", ())]
    return columns != list(PARTITIONED_EVENT_KEY)
