"""hardening: placeholder revision in the 2026-11-30 chain; filled by the hardening work.

Revision ID: 2026_11_30_hardening
Revises: 2026_11_25_initial
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "2026_11_30_hardening"
down_revision: str | None = "2026_11_25_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
