"""backend break: the alerting lease row remembers the backend's last outage (#13).

While every backend process or the database is down, no batch is stored, so afterwards every
host looks silent for the outage's length. Each process's evaluator loop now says when it last
reached the database (`heard_at`); a gap in that longer than the lease's time is a break, written
on the row (`break_down_at`, `break_back_at`), so the status rule that the dashboard, the API,
/metrics and Prometheus's AgentSilent read leaves it out, in every process.

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
    # Nullable ADD COLUMNs: no table rebuild on SQLite, no rewrite on PostgreSQL.
    op.add_column("alert_lease", sa.Column("heard_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("alert_lease", sa.Column("break_down_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("alert_lease", sa.Column("break_back_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_lease") as batch:
        batch.drop_column("break_back_at")
        batch.drop_column("break_down_at")
        batch.drop_column("heard_at")
