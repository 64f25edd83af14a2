"""fleet rollup: `rollup_fleet_1h`, rollup_1h summed over hosts and guests, kept by triggers (#13).

The 30-day fleet chart (group_by=action or kind, no host or guest filter) summed every
rollup_1h row of the range: ~1.4 million rows with 10,000 hosts and 100,000 guests, seconds
on SQLite (bench/bench_series.py --hosts 10000 --guests 100000). This table holds the same
sums per (bucket, action, kind, source): a few dozen rows per hour whatever the fleet.

Triggers on rollup_1h keep it, in the transaction that changes rollup_1h, whoever writes
(ingest, import, retention): an inserted row adds its count and events, an updated one the
difference, a deleted one subtracts them. No writer has to remember it.

`shard`: on PostgreSQL the backend's pid, so concurrent ingest transactions (several writer
connections, several replicas) never update, hence never wait on or deadlock over, the same
fleet row; the reader sums the shards. SQLite has one writer: shard 0. Rows are filled here
from the rollup_1h already stored.

Revision ID: 2026_11_30_fleet_rollup
Revises: 2026_11_30_event_marks
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_30_fleet_rollup"
down_revision: str | None = "2026_11_30_event_marks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ("bucket", "action", "kind", "source", "shard")


def _sqlite_add(row: str, sign: str) -> str:
    """One upsert adding (sign) the row's count and events to its fleet row, shard 0."""
    return (
        "INSERT INTO rollup_fleet_1h (bucket, action, kind, source, shard, count, events)"
        f" VALUES ({row}.bucket, {row}.action, {row}.kind, {row}.source, 0,"
        f" {sign}{row}.count, {sign}{row}.events)"
        " ON CONFLICT (bucket, action, kind, source, shard) DO UPDATE SET"
        " count = rollup_fleet_1h.count + excluded.count,"
        " events = rollup_fleet_1h.events + excluded.events;"
    )


SAME_KEY = (
    "NEW.bucket IS OLD.bucket AND NEW.action IS OLD.action AND NEW.kind IS OLD.kind"
    " AND NEW.source IS OLD.source"
)

SQLITE_TRIGGERS = (
    f"CREATE TRIGGER rollup_1h_fleet_insert AFTER INSERT ON rollup_1h BEGIN {_sqlite_add('NEW', '')} END",
    # The ingest upsert: count and events grow in place, the key stays.
    "CREATE TRIGGER rollup_1h_fleet_update AFTER UPDATE ON rollup_1h"
    f" WHEN {SAME_KEY} BEGIN"
    " INSERT INTO rollup_fleet_1h (bucket, action, kind, source, shard, count, events)"
    " VALUES (NEW.bucket, NEW.action, NEW.kind, NEW.source, 0,"
    " NEW.count - OLD.count, NEW.events - OLD.events)"
    " ON CONFLICT (bucket, action, kind, source, shard) DO UPDATE SET"
    " count = rollup_fleet_1h.count + excluded.count,"
    " events = rollup_fleet_1h.events + excluded.events;"
    " END",
    "CREATE TRIGGER rollup_1h_fleet_rekey AFTER UPDATE ON rollup_1h"
    f" WHEN NOT ({SAME_KEY}) BEGIN {_sqlite_add('OLD', '-')} {_sqlite_add('NEW', '')} END",
    f"CREATE TRIGGER rollup_1h_fleet_delete AFTER DELETE ON rollup_1h BEGIN {_sqlite_add('OLD', '-')} END",
)

PG_FUNCTION = """
CREATE FUNCTION rollup_fleet_1h_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.bucket, NEW.action, NEW.kind, NEW.source)
            IS NOT DISTINCT FROM (OLD.bucket, OLD.action, OLD.kind, OLD.source) THEN
        INSERT INTO rollup_fleet_1h AS f (bucket, action, kind, source, shard, count, events)
        VALUES (NEW.bucket, NEW.action, NEW.kind, NEW.source, pg_backend_pid(),
                NEW.count - OLD.count, NEW.events - OLD.events)
        ON CONFLICT (bucket, action, kind, source, shard) DO UPDATE
        SET count = f.count + excluded.count, events = f.events + excluded.events;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO rollup_fleet_1h AS f (bucket, action, kind, source, shard, count, events)
        VALUES (OLD.bucket, OLD.action, OLD.kind, OLD.source, pg_backend_pid(), -OLD.count, -OLD.events)
        ON CONFLICT (bucket, action, kind, source, shard) DO UPDATE
        SET count = f.count + excluded.count, events = f.events + excluded.events;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO rollup_fleet_1h AS f (bucket, action, kind, source, shard, count, events)
        VALUES (NEW.bucket, NEW.action, NEW.kind, NEW.source, pg_backend_pid(), NEW.count, NEW.events)
        ON CONFLICT (bucket, action, kind, source, shard) DO UPDATE
        SET count = f.count + excluded.count, events = f.events + excluded.events;
    END IF;
    RETURN NULL;
END
$$
"""

PG_TRIGGER = (
    "CREATE TRIGGER rollup_1h_fleet AFTER INSERT OR UPDATE OR DELETE ON rollup_1h"
    " FOR EACH ROW EXECUTE FUNCTION rollup_fleet_1h_apply()"
)


def upgrade() -> None:
    op.create_table(
        "rollup_fleet_1h",
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, name=op.f("pk_rollup_fleet_1h")),
        sqlite_with_rowid=False,
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        # No rollup_1h write commits between the fill below and the trigger: none missed.
        op.execute("LOCK TABLE rollup_1h IN SHARE ROW EXCLUSIVE MODE")
    # Filled from what is stored, then the triggers take over, in this transaction.
    op.execute(
        "INSERT INTO rollup_fleet_1h (bucket, action, kind, source, shard, count, events)"
        " SELECT bucket, action, kind, source, 0, sum(count), sum(events) FROM rollup_1h"
        " GROUP BY bucket, action, kind, source"
    )
    if postgresql:
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER rollup_1h_fleet ON rollup_1h")
        op.execute("DROP FUNCTION rollup_fleet_1h_apply()")
    else:
        for name in ("insert", "update", "rekey", "delete"):
            op.execute(f"DROP TRIGGER rollup_1h_fleet_{name}")
    op.drop_table("rollup_fleet_1h")
