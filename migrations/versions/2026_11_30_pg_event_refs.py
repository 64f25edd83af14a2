"""pg event refs: on PostgreSQL, event's references to host and guest kept by triggers on the
parents, not by foreign keys on event (#13).

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

SQLite keeps its foreign keys (its insert checks them for far less). The metadata
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


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER event_guest_deleted ON guest")
    op.execute("DROP FUNCTION event_guest_deleted()")
    op.execute("DROP TRIGGER event_host_deleted ON host")
    op.execute("DROP FUNCTION event_host_deleted()")
    for name, column, parent, action in FOREIGN_KEYS:
        op.execute(
            f"ALTER TABLE event ADD CONSTRAINT {name} FOREIGN KEY ({column})"
            f" REFERENCES {parent} (id) ON DELETE {action}"
        )
