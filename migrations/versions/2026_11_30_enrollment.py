"""enrollment: token expiry, enrollment tokens (glob, max uses) and enrolled agent tokens (#15).

Revision ID: 2026_11_30_enrollment
Revises: 2026_11_30_alerting
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_30_enrollment"
down_revision: str | None = "2026_11_30_alerting"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (nullable, or with a server default): SQLite needs no table rebuild.
    op.add_column("token", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("token", sa.Column("host_glob", sa.String(length=255), nullable=True))
    op.add_column("token", sa.Column("max_uses", sa.Integer(), nullable=True))
    op.add_column("token", sa.Column("uses", sa.Integer(), server_default="0", nullable=False))
    op.add_column("token", sa.Column("machine_id", sa.String(length=64), nullable=True))
    op.add_column("token", sa.Column("enrolled_by", sa.Integer(), nullable=True))
    op.create_index("ix_token_host_name", "token", ["host_name"])


def downgrade() -> None:
    op.drop_index("ix_token_host_name", table_name="token")
    with op.batch_alter_table("token") as batch:
        for name in ("enrolled_by", "machine_id", "uses", "max_uses", "host_glob", "expires_at"):
            batch.drop_column(name)
