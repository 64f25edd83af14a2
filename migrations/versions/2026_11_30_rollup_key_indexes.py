"""rollup key indexes: rollup_1h indexes led by guest_id and by host_id, each then bucket (#13).

The "by guest" and "by host" charts and the guest and host lists read rollup_1h for a few
guests or hosts over a range (the top 10's series, a page's totals) and rank every guest or
host by its total over the range. With only the bucket-led index (tables.SERIES_INDEX) each of
those read every row of the range: ~1.5 million rows over 30 days with 10,000 hosts and 100,000
guests, and the ranking sorted them all by key (SQLite has no hash aggregation), seconds per
click (bench/bench_series.py --hosts 10000 --guests 100000). Led by the key, then the bucket,
each guest's or host's rows of the range are one index range: a few guests cost a few seeks,
and the ranking sums each key's range with no sort (app/store/series.py key_totals).

Covering (count, and the other key for the lists' per-guest hosts and per-host guests), so the
reads never visit the table. No new table: retention deletes rollup_1h rows and their entries
go with them.

Revision ID: 2026_11_30_rollup_key_indexes
Revises: 2026_11_30_fleet_rollup
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "2026_11_30_rollup_key_indexes"
down_revision: str | None = "2026_11_30_fleet_rollup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept equal to app/store/tables.py GUEST_INDEX and HOST_INDEX (tests/app/store checks it).
INDEXES = (
    ("guest_id", "bucket", "host_id", "count"),
    ("host_id", "bucket", "guest_id", "count"),
)


def _name(columns: tuple[str, ...]) -> str:
    return f"ix_rollup_1h_{'_'.join(columns)}"


def upgrade() -> None:
    for columns in INDEXES:
        op.create_index(_name(columns), "rollup_1h", list(columns))


def downgrade() -> None:
    for columns in INDEXES:
        op.drop_index(_name(columns), table_name="rollup_1h")
