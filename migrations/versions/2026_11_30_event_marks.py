"""event marks: on PostgreSQL, the highest stored seq per (host, boot_id, source) (#13).

Ingest is idempotent on (host_id, boot_id, source, seq) whatever the event's time, but the
partitioned event table's unique key also holds `time` (2026_11_30_scale), so ingest looked
every batch's keys up first, in every day partition (no time to prune by). SEQs of one
(host, boot_id, source) only grow, so with the highest one stored at hand an event above it is
new for certain and only the others (a resend, a batch arriving late) are looked up:
`event_seq_mark` holds it, moved in the statement that inserts the events
(app/ingest/write.py). Its rows are filled here from the events already stored.

A mark is never below a stored seq: that is what makes skipping the lookup safe. Marks of a
boot whose events retention dropped stay (they are a row per host, boot and source).
SQLite keeps its plain unique key on (host_id, boot_id, source, seq) and needs no marks.

Revision ID: 2026_11_30_event_marks
Revises: 2026_11_30_scale
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "2026_11_30_event_marks"
down_revision: str | None = "2026_11_30_scale"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # fillfactor: the row of a busy (host, boot, source) is updated by nearly every batch; room
    # on its page keeps those updates HOT (no index entry, the old version pruned in place).
    op.execute(
        "CREATE TABLE event_seq_mark ("
        " host_id INTEGER NOT NULL,"
        " boot_id VARCHAR(64) NOT NULL,"
        " source VARCHAR(16) NOT NULL,"
        " max_seq BIGINT NOT NULL,"
        " CONSTRAINT pk_event_seq_mark PRIMARY KEY (host_id, boot_id, source),"
        " CONSTRAINT fk_event_seq_mark_host_id_host FOREIGN KEY (host_id) REFERENCES host (id)"
        " ON DELETE CASCADE"
        ") WITH (fillfactor = 50)"
    )
    op.execute(
        "INSERT INTO event_seq_mark (host_id, boot_id, source, max_seq)"
        " SELECT host_id, boot_id, source, max(seq) FROM event GROUP BY host_id, boot_id, source"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE event_seq_mark")
