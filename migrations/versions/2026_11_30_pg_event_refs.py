"""pg event refs: on PostgreSQL, event's references to host and guest kept by triggers on the
parents, not by foreign keys on event; rollup_fleet_1h kept per statement, not per row (#13).

Both are what PostgreSQL spent on a 1000-event backlog batch beyond storing it
(bench/bench_ingest.py, docs/benchmarks.md).

A foreign key checks every inserted row: PostgreSQL runs `SELECT 1 FROM host WHERE id = $1
FOR KEY SHARE` per event, and the same for its guest. For a 1000-event backlog batch those
2000 checks were a third of PostgreSQL's CPU for the whole insert (EXPLAIN ANALYZE: 13-26 ms
of 30-60 ms, bench/bench_ingest.py; docs/benchmarks.md), and they can never fail: ingest is
the only writer of `event`, and the transaction that inserts an event holds the row lock of
its host (_write_hosts' FOR UPDATE) and of its guest (the guest upsert's ON CONFLICT DO
UPDATE) until it commits, so neither can be deleted under it.

What the foreign keys also did, their ON DELETE actions, stays, by triggers on the parents
(nothing in splitwatch deletes a host or a guest; an operator may, by hand):
- a host deleted: its events are deleted (was ON DELETE CASCADE);
- a guest deleted: its events keep their row without the guest (was ON DELETE SET NULL).
A DELETE of a host or guest that a writer holds waits for that writer's commit (its row lock),
then the trigger's statement sees the events that writer stored (READ COMMITTED takes a new
snapshot per statement), so none is left pointing at a deleted row.

rollup_fleet_1h (2026_11_30_fleet_rollup) was kept by a row-level trigger on rollup_1h: one
plpgsql call and one upsert per rollup_1h row, ~70 us each, 2.5 ms for the 36 hourly rows of
a batch, two thirds of that upsert's time. Statement-level triggers see the statement's rows
as transition tables and add their sums per (bucket, action, kind, source) in one upsert.
PostgreSQL allows transition tables only on a trigger of one event, so there are three
(INSERT, UPDATE, DELETE); for INSERT ... ON CONFLICT DO UPDATE, the INSERT trigger's table
holds the rows inserted and the UPDATE trigger's the rows updated, so each row counts once.
An UPDATE adds the new rows' sums and subtracts the old ones' (a row moved to another key
too). The shard stays the writer's backend pid. The row-level function is kept for the
downgrade.

SQLite keeps its foreign keys (its insert checks them for far less) and its row triggers. The metadata
(app/store/tables.py) still declares them; the schema comparison skips them on PostgreSQL
(app/retention/partitions.py include_object) and tests/app/store/test_migrations.py checks the
triggers' behaviour instead.

Revision ID: 2026_11_30_pg_event_refs
Revises: 2026_11_30_rollup_key_indexes
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "2026_11_30_pg_event_refs"
down_revision: str | None = "2026_11_30_rollup_key_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Statement-level with transition tables: one DELETE / UPDATE of `event` per statement on the
# parent, however many rows it deletes (each is an index range: ix_event_host_id_time,
# ix_event_guest_id_time).
PG_STATEMENTS = (
    """
CREATE FUNCTION event_host_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event WHERE host_id IN (SELECT id FROM gone);
    RETURN NULL;
END
$$
""",
    "CREATE TRIGGER event_host_deleted AFTER DELETE ON host REFERENCING OLD TABLE AS gone"
    " FOR EACH STATEMENT EXECUTE FUNCTION event_host_deleted()",
    """
CREATE FUNCTION event_guest_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE event SET guest_id = NULL WHERE guest_id IN (SELECT id FROM gone);
    RETURN NULL;
END
$$
""",
    "CREATE TRIGGER event_guest_deleted AFTER DELETE ON guest REFERENCING OLD TABLE AS gone"
    " FOR EACH STATEMENT EXECUTE FUNCTION event_guest_deleted()",
)

_FLEET_ADD = """
        INSERT INTO rollup_fleet_1h AS f (bucket, action, kind, source, shard, count, events)
        SELECT bucket, action, kind, source, pg_backend_pid(), sum(count), sum(events) FROM ({rows}) AS d
        GROUP BY bucket, action, kind, source ORDER BY bucket, action, kind, source
        ON CONFLICT (bucket, action, kind, source, shard) DO UPDATE
        SET count = f.count + excluded.count, events = f.events + excluded.events;"""
_NEW = "SELECT bucket, action, kind, source, count, events FROM new_rows"
_OLD = "SELECT bucket, action, kind, source, -count AS count, -events AS events FROM old_rows"

# Keys sorted (ORDER BY): one lock order on the fleet rows, as the row trigger had per row.
FLEET_FUNCTION = f"""
CREATE FUNCTION rollup_fleet_1h_apply_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_FLEET_ADD.format(rows=_NEW)}
    ELSIF TG_OP = 'UPDATE' THEN{_FLEET_ADD.format(rows=f"{_NEW} UNION ALL {_OLD}")}
    ELSE{_FLEET_ADD.format(rows=_OLD)}
    END IF;
    RETURN NULL;
END
$$
"""
FLEET_TRIGGERS = (
    ("insert", "INSERT", "NEW TABLE AS new_rows"),
    ("update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ("delete", "DELETE", "OLD TABLE AS old_rows"),
)
# As 2026_11_30_fleet_rollup made it (its function stays in place).
ROW_TRIGGER = (
    "CREATE TRIGGER rollup_1h_fleet AFTER INSERT OR UPDATE OR DELETE ON rollup_1h"
    " FOR EACH ROW EXECUTE FUNCTION rollup_fleet_1h_apply()"
)

# As app/store/tables.py declares them (the naming convention's names).
FOREIGN_KEYS = (
    ("fk_event_host_id_host", "host_id", "host", "CASCADE"),
    ("fk_event_guest_id_guest", "guest_id", "guest", "SET NULL"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, _column, _parent, _action in FOREIGN_KEYS:
        op.execute(f"ALTER TABLE event DROP CONSTRAINT {name}")
    for statement in PG_STATEMENTS:
        op.execute(statement)
    # Dropped and created in this transaction (ACCESS EXCLUSIVE on rollup_1h): no write between.
    op.execute("DROP TRIGGER rollup_1h_fleet ON rollup_1h")
    op.execute(FLEET_FUNCTION)
    for name, event, referencing in FLEET_TRIGGERS:
        op.execute(
            f"CREATE TRIGGER rollup_1h_fleet_{name} AFTER {event} ON rollup_1h REFERENCING {referencing}"
            " FOR EACH STATEMENT EXECUTE FUNCTION rollup_fleet_1h_apply_rows()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, _event, _referencing in FLEET_TRIGGERS:
        op.execute(f"DROP TRIGGER rollup_1h_fleet_{name} ON rollup_1h")
    op.execute("DROP FUNCTION rollup_fleet_1h_apply_rows()")
    op.execute(ROW_TRIGGER)
    op.execute("DROP TRIGGER event_guest_deleted ON guest")
    op.execute("DROP FUNCTION event_guest_deleted()")
    op.execute("DROP TRIGGER event_host_deleted ON host")
    op.execute("DROP FUNCTION event_host_deleted()")
    for name, column, parent, action in FOREIGN_KEYS:
        op.execute(
            f"ALTER TABLE event ADD CONSTRAINT {name} FOREIGN KEY ({column})"
            f" REFERENCES {parent} (id) ON DELETE {action}"
        )
