"""host_truth: placeholder revision in the 2026-11-30 chain; filled by the host_truth work.

Revision ID: 2026_11_30_host_truth
Revises: 2026_11_30_hardening
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "2026_11_30_host_truth"
down_revision: str | None = "2026_11_30_hardening"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
