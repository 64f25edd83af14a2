"""alerting: what the evaluator and the webhook sender keep (issue 12).

- alert.notified_at: when its firing notices went to the outbox (null while silenced);
  index on (status, rule_id): the evaluator reads the open alerts every interval.
- webhook.disabled_reason: why the sender turned a webhook off (a 410 Gone).
- webhook_delivery: the latest attempt's time, latency and response snippet (the delivery
  log); index on (webhook_id, id) for the per-webhook log.
- alert_lease: which process evaluates and sends (one row per job).

Revision ID: 2026_11_30_alerting
Revises: 2026_11_30_host_truth
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_30_alerting"
down_revision: str | None = "2026_11_30_host_truth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        batch.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_alert_status_rule_id", ["status", "rule_id"], unique=False)
    with op.batch_alter_table("webhook") as batch:
        batch.add_column(sa.Column("disabled_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("webhook_delivery") as batch:
        batch.add_column(sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("latency_ms", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("response_snippet", sa.Text(), nullable=True))
        batch.create_index("ix_webhook_delivery_webhook_id_id", ["webhook_id", "id"], unique=False)
    op.create_table(
        "alert_lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_alert_lease")),
    )


def downgrade() -> None:
    op.drop_table("alert_lease")
    with op.batch_alter_table("webhook_delivery") as batch:
        batch.drop_index("ix_webhook_delivery_webhook_id_id")
        batch.drop_column("response_snippet")
        batch.drop_column("latency_ms")
        batch.drop_column("last_attempt_at")
    with op.batch_alter_table("webhook") as batch:
        batch.drop_column("disabled_reason")
    with op.batch_alter_table("alert") as batch:
        batch.drop_index("ix_alert_status_rule_id")
        batch.drop_column("notified_at")
