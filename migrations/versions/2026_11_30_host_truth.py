"""host_truth: the consistency verdict replaces the drift streaks (#16).

- host: `cpu_off_streak` goes (the agent decides "consecutive samples" now); `verdict`,
  `verdict_reason`, `verdict_details`, `verdict_since` hold the agent's newest verdict;
  `agent_reported` is false for a host only `splitwatch import` wrote (existing hosts: true).
- host_state: `drift` becomes `verdict` (the verdict of that sample).
- guest: `killed_by`, how its last kill was known (kernel_line, tracefs, vmm_exit).

Columns are added and dropped in place on both engines (SQLite 3.35+ has ALTER TABLE DROP
COLUMN), never by batch copy: on SQLite, copying `host` or `guest` means dropping the old table,
and with foreign keys on that drop cascades into event, host_state and guest_host.

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
    op.add_column("host", sa.Column("verdict", sa.String(length=32), nullable=True))
    op.add_column("host", sa.Column("verdict_reason", sa.Text(), nullable=True))
    op.add_column("host", sa.Column("verdict_details", sa.JSON(), nullable=True))
    op.add_column("host", sa.Column("verdict_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("host", sa.Column("agent_reported", sa.Boolean(), server_default="1", nullable=False))
    op.drop_column("host", "cpu_off_streak")
    op.add_column("host_state", sa.Column("verdict", sa.String(length=32), nullable=True))
    op.drop_column("host_state", "drift")
    op.add_column("guest", sa.Column("killed_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("guest", "killed_by")
    op.add_column("host_state", sa.Column("drift", sa.Boolean(), server_default="0", nullable=False))
    op.drop_column("host_state", "verdict")
    op.add_column("host", sa.Column("cpu_off_streak", sa.JSON(), server_default="{}", nullable=False))
    for column in ("agent_reported", "verdict_since", "verdict_details", "verdict_reason", "verdict"):
        op.drop_column("host", column)
