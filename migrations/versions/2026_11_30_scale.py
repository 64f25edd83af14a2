"""scale: on PostgreSQL the event table is partitioned by day (#13); SQLite unchanged.

PostgreSQL requires every unique constraint of a partitioned table to include the partition
key, so there the primary key is (id, time) and the unique key (host_id, boot_id, source,
seq, time). Ingest stays idempotent on (host_id, boot_id, source, seq): app/ingest/write.py
looks the batch's keys up first, in every partition, under the host row's lock, and names the
five columns in its ON CONFLICT.

The existing rows are copied into the new table (one INSERT ... SELECT: run it in a
maintenance window on a large database); the id sequence is kept, so ids continue.
Partitions: one per day from the oldest event (at most MAX_DAYS_BACK days back; older rows
land in the default partition, which retention purges) to PARTITIONS_AHEAD days ahead.

Revision ID: 2026_11_30_scale
Revises: 2026_11_30_enrollment
Create Date: 2026-11-30
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

from app.retention.partitions import ensure_day_partition, ensure_default_partition
from app.retention.plan import day_start, days_to_make

revision: str = "2026_11_30_scale"
down_revision: str | None = "2026_11_30_enrollment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_DAYS_BACK = 400

COLUMNS = """
    id BIGINT NOT NULL DEFAULT nextval('{seq}'::regclass),
    host_id INTEGER NOT NULL,
    boot_id VARCHAR(64) NOT NULL,
    source VARCHAR(16) NOT NULL,
    seq BIGINT NOT NULL,
    time TIMESTAMP WITH TIME ZONE NOT NULL,
    received_at TIMESTAMP WITH TIME ZONE NOT NULL,
    kind VARCHAR(16) NOT NULL,
    comm VARCHAR(64) NOT NULL,
    tid INTEGER NOT NULL,
    tgid INTEGER,
    address VARCHAR(20),
    count INTEGER NOT NULL,
    action VARCHAR(16) NOT NULL,
    guest_id INTEGER,
    vcpu INTEGER,
    vmm VARCHAR(32),
    CONSTRAINT fk_event_host_id_host FOREIGN KEY (host_id) REFERENCES host (id) ON DELETE CASCADE,
    CONSTRAINT fk_event_guest_id_guest FOREIGN KEY (guest_id) REFERENCES guest (id) ON DELETE SET NULL
"""
NAMES = (
    "id, host_id, boot_id, source, seq, time, received_at, kind, comm, tid, tgid, address, count, "
    "action, guest_id, vcpu, vmm"
)
INDEXES = (
    "CREATE INDEX ix_event_time_id ON event (time, id)",
    "CREATE INDEX ix_event_host_id_time ON event (host_id, time)",
    "CREATE INDEX ix_event_guest_id_time ON event (guest_id, time)",
)


def _swap(partitioned: bool) -> None:
    """Rename the current event table away, build the other shape, copy, drop the old one."""
    conn = op.get_bind()
    seq = conn.execute(text("SELECT pg_get_serial_sequence('event', 'id')")).scalar()
    assert seq is not None, "event.id has no sequence"
    op.execute("ALTER TABLE event RENAME TO event_old")
    for name in ("ix_event_time_id", "ix_event_host_id_time", "ix_event_guest_id_time"):
        op.execute(f"DROP INDEX {name}")
    op.execute(
        "ALTER TABLE event_old DROP CONSTRAINT pk_event, "
        "DROP CONSTRAINT uq_event_host_id_boot_id_source_seq, "
        "DROP CONSTRAINT fk_event_host_id_host, DROP CONSTRAINT fk_event_guest_id_guest"
    )
    op.execute(f"ALTER SEQUENCE {seq} OWNED BY NONE")
    if partitioned:
        op.execute(
            f"CREATE TABLE event ({COLUMNS.format(seq=seq)},"
            " CONSTRAINT pk_event PRIMARY KEY (id, time),"
            " CONSTRAINT uq_event_host_id_boot_id_source_seq UNIQUE (host_id, boot_id, source, seq, time)"
            ") PARTITION BY RANGE (time)"
        )
    else:
        op.execute(
            f"CREATE TABLE event ({COLUMNS.format(seq=seq)},"
            " CONSTRAINT pk_event PRIMARY KEY (id),"
            " CONSTRAINT uq_event_host_id_boot_id_source_seq UNIQUE (host_id, boot_id, source, seq))"
        )
    op.execute(f"ALTER SEQUENCE {seq} OWNED BY event.id")
    if partitioned:
        ensure_default_partition(conn)
        now = dt.datetime.now(dt.UTC)
        oldest = conn.execute(text("SELECT min(time) FROM event_old")).scalar()
        floor = day_start(now) - dt.timedelta(days=MAX_DAYS_BACK)
        first = max(oldest, floor) if oldest is not None else None
        for day in days_to_make(now, first=first):
            ensure_day_partition(conn, day)
    op.execute(f"INSERT INTO event ({NAMES}) SELECT {NAMES} FROM event_old")
    op.execute("DROP TABLE event_old")
    for ddl in INDEXES:
        op.execute(ddl)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _swap(partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _swap(partitioned=False)
