"""backend break: the backend's own outages are kept, so no host's silence counts them (#13).

While every backend process or the database is down, no batch is stored, so afterwards every
host looks silent for the outage's length. Each process's evaluator loop now says when it last
reached the database (`alert_lease.heard_at`); a gap in that longer than the lease's time is a
break, kept in `backend_break`, so the status rule that the dashboard, the API, /metrics and
Prometheus's AgentSilent read leaves it out, in every process.

Revision ID: 2026_12_01_backend_break
Revises: 2026_11_30_pg_event_refs
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_12_01_backend_break"
down_revision: str | None = "2026_11_30_pg_event_refs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable ADD COLUMN: no table rebuild on SQLite, no rewrite on PostgreSQL.
    op.add_column("alert_lease", sa.Column("heard_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "backend_break",
        sa.Column("down_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("back_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("down_at"),
    )
    op.create_index("ix_backend_break_back_at", "backend_break", ["back_at"])


def downgrade() -> None:
    op.drop_index("ix_backend_break_back_at", table_name="backend_break")
    op.drop_table("backend_break")
    with op.batch_alter_table("alert_lease") as batch:
        batch.drop_column("heard_at")
