"""initial: every table of app/store/tables.py as of issue 3.

DateTime columns are plain `DateTime(timezone=True)` here; app.store.tables wraps them in
UtcDateTime (a Python-side type) which needs no DDL of its own. BIG_ID is BIGINT on
PostgreSQL and INTEGER on SQLite, where only INTEGER PRIMARY KEY is the autoincrementing rowid.

Revision ID: 2026_11_25_initial
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "2026_11_25_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("group_by", sa.String(length=16), nullable=True),
        sa.Column("window_s", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=True),
        sa.Column("for_s", sa.Integer(), server_default="0", nullable=False),
        sa.Column("severity", sa.String(length=16), server_default="warning", nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("builtin", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rule")),
        sa.UniqueConstraint("name", name=op.f("uq_alert_rule_name")),
    )
    op.create_table(
        "host",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("kernel", sa.String(length=128), nullable=False),
        sa.Column("cpu_model", sa.String(length=255), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("ratelimit", sa.Integer(), nullable=True),
        sa.Column("mitigate", sa.SmallInteger(), nullable=True),
        sa.Column("sld_supported", sa.Boolean(), nullable=True),
        sa.Column("bld_supported", sa.Boolean(), nullable=True),
        sa.Column("cpus_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cpus_on", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cpus_off", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cpus_error", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cpu_off_streak", sa.JSON(), nullable=False),
        sa.Column("cpus", sa.JSON(), nullable=False),
        sa.Column("health", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host")),
        sa.UniqueConstraint("name", name=op.f("uq_host_name")),
    )
    op.create_table(
        "rollup_1h",
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("guest_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint(
            "bucket",
            "host_id",
            "guest_id",
            "kind",
            "action",
            "source",
            name=op.f("uq_rollup_1h_bucket_host_id_guest_id_kind_action_source"),
        ),
    )
    # Covering indexes for the charts and /metrics (why: app/store/tables.py SERIES_INDEX).
    op.create_index(
        "ix_rollup_1h_bucket_action_kind_source_host_id_guest_id_count",
        "rollup_1h",
        ["bucket", "action", "kind", "source", "host_id", "guest_id", "count"],
        unique=False,
    )
    op.create_index(
        "ix_rollup_1h_host_id_guest_id_kind_action_source_count",
        "rollup_1h",
        ["host_id", "guest_id", "kind", "action", "source", "count"],
        unique=False,
    )
    op.create_table(
        "rollup_1m",
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("guest_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint(
            "bucket",
            "host_id",
            "guest_id",
            "kind",
            "action",
            "source",
            name=op.f("uq_rollup_1m_bucket_host_id_guest_id_kind_action_source"),
        ),
    )
    # Covering indexes for the charts and /metrics (why: app/store/tables.py SERIES_INDEX).
    op.create_index(
        "ix_rollup_1m_bucket_action_kind_source_host_id_guest_id_count",
        "rollup_1m",
        ["bucket", "action", "kind", "source", "host_id", "guest_id", "count"],
        unique=False,
    )
    op.create_table(
        "silence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("matchers", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silence")),
    )
    op.create_table(
        "token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("host_name", sa.String(length=255), nullable=True),
        sa.Column("label", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token")),
        sa.UniqueConstraint("hash", name=op.f("uq_token_hash")),
    )
    op.create_table(
        "webhook",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("gone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook")),
    )
    op.create_table(
        "alert",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=True),
        sa.Column("pending_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rule.id"], name=op.f("fk_alert_rule_id_alert_rule"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
    )
    op.create_index("ix_alert_fingerprint_status", "alert", ["fingerprint", "status"], unique=False)

    op.create_table(
        "gap",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["host.id"], name=op.f("fk_gap_host_id_host"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gap")),
        sa.UniqueConstraint(
            "host_id",
            "boot_id",
            "source",
            "first_seq",
            "reason",
            name=op.f("uq_gap_host_id_boot_id_source_first_seq_reason"),
        ),
    )
    op.create_index("ix_gap_host_id_received_at", "gap", ["host_id", "received_at"], unique=False)

    op.create_table(
        "guest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("uuid", sa.String(length=64), nullable=True),
        sa.Column("vmm", sa.String(length=32), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_host_id", sa.Integer(), nullable=True),
        sa.Column("last_action", sa.String(length=16), nullable=True),
        sa.Column("killed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_host_id"], ["host.id"], name=op.f("fk_guest_last_host_id_host"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guest")),
        sa.UniqueConstraint("name", name=op.f("uq_guest_name")),
    )
    op.create_table(
        "host_state",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("kernel", sa.String(length=128), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("ratelimit", sa.Integer(), nullable=True),
        sa.Column("mitigate", sa.SmallInteger(), nullable=True),
        sa.Column("sld_supported", sa.Boolean(), nullable=False),
        sa.Column("bld_supported", sa.Boolean(), nullable=False),
        sa.Column("cpus_on", sa.Integer(), nullable=False),
        sa.Column("cpus_off", sa.Integer(), nullable=False),
        sa.Column("cpus_error", sa.Integer(), nullable=False),
        sa.Column("drift", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("cpus", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["host.id"], name=op.f("fk_host_state_host_id_host"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_state")),
    )
    op.create_index(
        "ix_host_state_host_id_observed_at", "host_state", ["host_id", "observed_at"], unique=False
    )

    op.create_table(
        "webhook_delivery",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("msg_id", sa.String(length=64), nullable=False),
        sa.Column("notice", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhook.id"],
            name=op.f("fk_webhook_delivery_webhook_id_webhook"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint("msg_id", name=op.f("uq_webhook_delivery_msg_id")),
    )
    op.create_index(
        "ix_webhook_delivery_status_next_attempt_at",
        "webhook_delivery",
        ["status", "next_attempt_at"],
        unique=False,
    )

    op.create_table(
        "event",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("comm", sa.String(length=64), nullable=False),
        sa.Column("tid", sa.Integer(), nullable=False),
        sa.Column("tgid", sa.Integer(), nullable=True),
        sa.Column("address", sa.String(length=20), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("guest_id", sa.Integer(), nullable=True),
        sa.Column("vcpu", sa.Integer(), nullable=True),
        sa.Column("vmm", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["guest_id"], ["guest.id"], name=op.f("fk_event_guest_id_guest"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["host.id"], name=op.f("fk_event_host_id_host"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event")),
        sa.UniqueConstraint(
            "host_id", "boot_id", "source", "seq", name=op.f("uq_event_host_id_boot_id_source_seq")
        ),
    )
    op.create_index("ix_event_guest_id_time", "event", ["guest_id", "time"], unique=False)
    op.create_index("ix_event_host_id_time", "event", ["host_id", "time"], unique=False)
    op.create_index("ix_event_time_id", "event", ["time", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_event_time_id", table_name="event")
    op.drop_index("ix_event_host_id_time", table_name="event")
    op.drop_index("ix_event_guest_id_time", table_name="event")

    op.drop_table("event")
    op.drop_index("ix_webhook_delivery_status_next_attempt_at", table_name="webhook_delivery")

    op.drop_table("webhook_delivery")
    op.drop_index("ix_host_state_host_id_observed_at", table_name="host_state")

    op.drop_table("host_state")
    op.drop_table("guest")
    op.drop_index("ix_gap_host_id_received_at", table_name="gap")

    op.drop_table("gap")
    op.drop_index("ix_alert_fingerprint_status", table_name="alert")

    op.drop_table("alert")
    op.drop_table("webhook")
    op.drop_table("token")
    op.drop_table("silence")
    op.drop_index("ix_rollup_1m_bucket_action_kind_source_host_id_guest_id_count", table_name="rollup_1m")
    op.drop_table("rollup_1m")
    op.drop_index("ix_rollup_1h_host_id_guest_id_kind_action_source_count", table_name="rollup_1h")
    op.drop_index("ix_rollup_1h_bucket_action_kind_source_host_id_guest_id_count", table_name="rollup_1h")
    op.drop_table("rollup_1h")
    op.drop_table("host")
    op.drop_table("alert_rule")
