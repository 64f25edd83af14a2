"""The retention run and the task `serve` runs it in (#13).

One run (`run_retention`), every RETENTION_INTERVAL_S and once at startup:
1. PostgreSQL: the day partitions of `event` from today to PARTITIONS_AHEAD days ahead are
   made (rows of those days waiting in the default partition move in), then every day
   partition older than the raw horizon is dropped: DROP TABLE, no DELETE; with them go the
   seq marks of past boots that have no event left (partitions.purge_seq_marks).
2. Bounded deletions, CHUNK_ROWS rows per transaction, each a job of the app's writer
   (app/ingest/writer.py) with a pause between chunks so ingest batches queued meanwhile go
   first: `event` rows older than the raw horizon (SQLite: the whole table; PostgreSQL: only
   the default partition, where a late or far-off event lands), then `rollup_1m`, `rollup_1h`
   and `gap` past their horizons (app/retention/plan.py says which and why), and
   `rollup_fleet_1h` past rollup_1h's (its triggers zero its rows as rollup_1h goes; the rows
   themselves go here).
3. PostgreSQL: the writers' shards of rollup_fleet_1h's past hours are folded into one row per
   hour and key (app/store/series.py compact_fleet_rollup), so the fleet chart reads ~one row per
   hour and key, not one per writer connection that ever wrote it.

Several `serve` processes (workers, replicas) run the task; one acts: every job first takes or
renews the lease row `retention` in `alert_lease` (app/alerts/evaluate.py's lease, #12) in its
own transaction, so a second process finds it held and does nothing until it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Integer, Table, delete, literal_column, select, text, tuple_

from app.alerts.evaluate import new_holder, release_lease, take_lease
from app.background import finish
from app.retention import partitions
from app.retention.plan import DEFAULT_PARTITION, days_to_make, horizons, partitions_to_drop
from app.rollups.buckets import bucket_start
from app.settings import Settings
from app.store.series import compact_fleet_rollup
from app.store.tables import event, gap, rollup_1h, rollup_1m, rollup_fleet_1h

log = logging.getLogger("splitwatch.retention")

RETENTION_INTERVAL_S = 3600.0
CHUNK_ROWS = 5000
# Between two chunks: the writer's queue drains first (ingest is never behind a whole purge).
CHUNK_PAUSE_S = 0.05

# A job of the writer: fn(conn) -> T, run in its own transaction (app/ingest/writer.py).
Lease = Callable[[Connection, dt.datetime], bool]


@dataclass
class RetentionReport:
    held: bool = True  # False: another process holds the lease; this one did nothing
    partitions_made: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)  # table -> rows deleted in chunks
    fleet_rows_folded: int = 0  # PostgreSQL: rollup_fleet_1h shard rows folded into one per key
    seq_marks_purged: int = 0  # PostgreSQL: marks of past boots whose events are all gone


def _no_lease(_conn: Connection, _now: dt.datetime) -> bool:
    return True


def delete_chunk(
    conn: Connection, table: Table, column: str, before: dt.datetime, limit: int | None = None
) -> int:
    """Delete up to `limit` (CHUNK_ROWS) rows of `table` with `column` < `before`; how many went."""
    limit = limit or CHUNK_ROWS
    if conn.dialect.name == "postgresql":
        # ctid = ANY(ARRAY(...)): a TID scan of the rows the bounded, indexed select found.
        name = DEFAULT_PARTITION if table is event else table.name
        result = conn.execute(
            text(
                f"DELETE FROM {name} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {name} WHERE {column} < :before LIMIT :limit))"
            ),
            {"before": before, "limit": limit},
        )
        return int(result.rowcount)
    if table is rollup_fleet_1h:
        # A WITHOUT ROWID table on SQLite: chosen by its primary key instead.
        key = tuple_(*table.primary_key.columns)
        picked = select(*table.primary_key.columns).where(table.c[column] < before).limit(limit)
        return int(conn.execute(delete(table).where(key.in_(picked))).rowcount)
    rowid = literal_column("rowid", Integer)
    chosen = select(rowid).select_from(table).where(table.c[column] < before).limit(limit)
    return int(conn.execute(delete(table).where(rowid.in_(chosen.scalar_subquery()))).rowcount)


def _partition_step(settings: Settings, now: dt.datetime, lease: Lease, conn: Connection) -> RetentionReport:
    report = RetentionReport(held=lease(conn, now))
    if not report.held or not partitions.is_partitioned(conn):
        return report
    partitions.set_lock_timeout(conn)
    partitions.ensure_default_partition(conn)
    for day in days_to_make(now):
        if partitions.ensure_day_partition(conn, day):
            report.partitions_made.append(day.strftime("%Y-%m-%d"))
    cutoff = horizons(
        now, retention_days=settings.retention_days, rollup_retention_days=settings.rollup_retention_days
    )
    for name in partitions_to_drop(partitions.event_partitions(conn), cutoff.event):
        partitions.drop_partition(conn, name)
        report.partitions_dropped.append(name)
    if report.partitions_dropped:
        report.seq_marks_purged = partitions.purge_seq_marks(conn)
    return report


def _chunk(
    table: Table, column: str, before: dt.datetime, now: dt.datetime, lease: Lease, conn: Connection
) -> int | None:
    if not lease(conn, now):
        return None
    return delete_chunk(conn, table, column, before)


async def run_retention(
    writer: Any, settings: Settings, now: dt.datetime, lease: Lease = _no_lease
) -> RetentionReport:
    """One retention run as of `now` through `writer` (app/ingest/writer.py)."""
    report: RetentionReport = await writer.run(functools.partial(_partition_step, settings, now, lease))
    if not report.held:
        return report
    cutoff = horizons(
        now, retention_days=settings.retention_days, rollup_retention_days=settings.rollup_retention_days
    )
    for table, column, before in (
        (event, "time", cutoff.event),
        (rollup_1m, "bucket", cutoff.rollup_1m),
        (rollup_1h, "bucket", cutoff.rollup_1h),
        (gap, "received_at", cutoff.gap),
        (rollup_fleet_1h, "bucket", cutoff.rollup_1h),
    ):
        total = 0
        while True:
            n = await writer.run(functools.partial(_chunk, table, column, before, now, lease))
            if n is None:  # the lease went to another process mid-run: it carries on
                report.held = False
                return report
            total += n
            if n < CHUNK_ROWS:
                break
            await asyncio.sleep(CHUNK_PAUSE_S)
        report.deleted[table.name] = total
    folded = await writer.run(functools.partial(_compact, now, lease))
    if folded is None:
        report.held = False
        return report
    report.fleet_rows_folded = folded
    return report


def _compact(now: dt.datetime, lease: Lease, conn: Connection) -> int | None:
    if not lease(conn, now):
        return None
    # Hours before the current one: the current hour's rows are still being written.
    return compact_fleet_rollup(conn, bucket_start(now, 3600) - dt.timedelta(hours=1))


LEASE_NAME = "retention"
# The holder keeps the lease from one hourly run to the next; a dead holder is replaced by
# another process after this long (retention is never urgent).
LEASE_TTL_S = 2 * RETENTION_INTERVAL_S


class Retention:
    """The retention task of `serve` (started and stopped by the app's lifespan)."""

    def __init__(self, writer: Any, settings: Settings, lease: Lease | None = None) -> None:
        self.writer = writer
        self.settings = settings
        self.holder = new_holder()
        self.lease = lease or functools.partial(_take_lease, self.holder)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.runs = 0  # finished runs, failed ones included (tests wait for the first)
        self.last_report: RetentionReport | None = None

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="splitwatch-retention")

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = await run_retention(self.writer, self.settings, dt.datetime.now(dt.UTC), self.lease)
            except Exception as exc:
                # A failed run (database away, a lock timeout on a partition) changes nothing
                # half-way: each step is its own transaction. The next run tries again.
                log.warning("retention run failed (next in %.0fs): %s", RETENTION_INTERVAL_S, exc)
            else:
                self.last_report = report
                if report.partitions_dropped or any(report.deleted.values()):
                    log.info(
                        "retention: partitions dropped %s, rows deleted %s",
                        report.partitions_dropped,
                        report.deleted,
                    )
            self.runs += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=RETENTION_INTERVAL_S)

    async def stop(self) -> None:
        self._stop.set()
        await finish(self._task, timeout=5)
        self._task = None
        # Hand the lease over at once rather than after its TTL.
        try:
            await self.writer.run(functools.partial(_release_lease, self.holder))
        except Exception as exc:  # it then expires by itself
            log.info("could not release the retention lease (it expires by itself): %s", exc)


def _take_lease(holder: str, conn: Connection, now: dt.datetime) -> bool:
    return take_lease(conn, holder, now, LEASE_TTL_S, name=LEASE_NAME)


def _release_lease(holder: str, conn: Connection) -> None:
    release_lease(conn, holder, name=LEASE_NAME)
