"""hardening (#14): `guest_host`, what each host saw of each guest name.

One host must not speak for another: a guest's per-host facts (uuid, vmm, first and last
sighting, last action, kill) live in one row per (host, guest), written only by that host's
batches. Existing data is carried over from the events still kept (first/last time and the
last kill per host and guest), with the guest row's uuid and vmm, and the guest's last action
on the host it was last seen on.

Revision ID: 2026_11_30_hardening
Revises: 2026_11_25_initial
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2026_11_30_hardening"
down_revision: str | None = "2026_11_25_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "guest_host",
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("guest_id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=64), nullable=True),
        sa.Column("vmm", sa.String(length=32), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_action", sa.String(length=16), nullable=True),
        sa.Column("killed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["guest_id"], ["guest.id"], name=op.f("fk_guest_host_guest_id_guest"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["host.id"], name=op.f("fk_guest_host_host_id_host"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("host_id", "guest_id", name=op.f("pk_guest_host")),
    )
    op.create_index("ix_guest_host_guest_id", "guest_host", ["guest_id"], unique=False)
    # Carry existing sightings over: per (host, guest) from the events still kept.
    op.execute(
        """
        INSERT INTO guest_host
            (host_id, guest_id, uuid, vmm, first_seen_at, last_seen_at, last_action, killed_at)
        SELECT e.host_id, e.guest_id, g.uuid, g.vmm, min(e.time), max(e.time),
               CASE WHEN g.last_host_id = e.host_id THEN g.last_action END,
               max(CASE WHEN e.action = 'sigbus' THEN e.time END)
        FROM event e JOIN guest g ON g.id = e.guest_id
        GROUP BY e.host_id, e.guest_id, g.uuid, g.vmm, g.last_host_id, g.last_action
        """
    )
    # A guest whose events expired still belongs to the host it was last seen on.
    op.execute(
        """
        INSERT INTO guest_host
            (host_id, guest_id, uuid, vmm, first_seen_at, last_seen_at, last_action, killed_at)
        SELECT g.last_host_id, g.id, g.uuid, g.vmm, g.first_seen_at, g.last_seen_at,
               g.last_action, g.killed_at
        FROM guest g
        WHERE g.last_host_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM guest_host gh WHERE gh.host_id = g.last_host_id AND gh.guest_id = g.id
        )
        """
    )


def downgrade() -> None:
    op.drop_index("ix_guest_host_guest_id", table_name="guest_host")
    op.drop_table("guest_host")
