"""host_truth: the consistency verdict replaces the drift streaks (#16).

- host: `cpu_off_streak` goes (the agent decides "consecutive samples" now); `verdict`,
  `verdict_reason`, `verdict_details`, `verdict_since` hold the agent's newest verdict;
  `last_seen_at` may be null: a host only `splitwatch import` wrote has no agent report.
- host_state: `drift` becomes `verdict` (the verdict of that sample).
- guest: `killed_by`, how its last kill was known (kernel_line, tracefs, vmm_exit).

Revision ID: 2026_11_30_host_truth
Revises: 2026_11_30_hardening
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_30_host_truth"
down_revision: str | None = "2026_11_30_hardening"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("host") as batch:
        batch.drop_column("cpu_off_streak")
        batch.add_column(sa.Column("verdict", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("verdict_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("verdict_details", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("verdict_since", sa.DateTime(timezone=True), nullable=True))
        batch.alter_column("last_seen_at", existing_type=sa.DateTime(timezone=True), nullable=True)
    with op.batch_alter_table("host_state") as batch:
        batch.drop_column("drift")
        batch.add_column(sa.Column("verdict", sa.String(length=32), nullable=True))
    with op.batch_alter_table("guest") as batch:
        batch.add_column(sa.Column("killed_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guest") as batch:
        batch.drop_column("killed_by")
    with op.batch_alter_table("host_state") as batch:
        batch.drop_column("verdict")
        batch.add_column(sa.Column("drift", sa.Boolean(), server_default="0", nullable=False))
    op.execute(sa.text("UPDATE host SET last_seen_at = first_seen_at WHERE last_seen_at IS NULL"))
    with op.batch_alter_table("host") as batch:
        batch.alter_column("last_seen_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.drop_column("verdict_since")
        batch.drop_column("verdict_details")
        batch.drop_column("verdict_reason")
        batch.drop_column("verdict")
        batch.add_column(sa.Column("cpu_off_streak", sa.JSON(), server_default="{}", nullable=False))
