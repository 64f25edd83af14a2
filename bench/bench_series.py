"""How fast is the 30-day fleet chart over 10 million events? (docs/benchmarks.md: under 100 ms.)

Fills a fresh database (migrated by `splitwatch db upgrade`) with what ingest would have left
after 10 million events over 30 days on ~50 hosts and ~300 guests: host and guest rows, the
rollup_1h and rollup_1m rows those events become (inserted directly with executemany — the
rollups are what the chart reads), and a realistic sample of raw `event` rows so that table is
not empty. Activity is bursty, as split locks are: each hour a guest is active with some
probability, and an active guest-hour is spread over a few minutes with one or two
(kind, action, source) combinations; some hosts also have plain host processes locking.

Then it times GET /api/v1/series?group_by=action&step=3600 over the last 30 days through a real
uvicorn (a separate process) and the same store call directly, p50/p99 over repeats, against
same-run baselines:
  - GET /healthz over the same HTTP path (the floor any answer pays), and
  - the same chart computed by scanning raw `event` rows (sum per hour and action) over the
    sample table, scaled linearly to 10 million rows: what the rollups save.
It also times /metrics scrapes, which aggregate rollup_1h (first scrape and warm ones: the
collector keeps its figures for a few seconds, app/metrics.py).

Two fleets, each filled into its own fresh database and timed against its own baselines:
  - default: 20% of guests ("offenders") lock in 60% of hours, the rest in 1% (~40k hourly rows);
  - dense: every guest locks in 30% of hours (~85k hourly rows, twice the rows per chart).
--fleet picks one or both (default both). --without-covering-indexes drops the rollups'
covering indexes (app/store/tables.py) after the migration: the schema before them, to compare.

    .venv/bin/python bench/bench_series.py [--fleet default|dense|both] [--events 10000000]
        [--repeats 50] [--database-url URL] [--without-covering-indexes]

With --database-url the tables it fills are emptied first (the database must be migrated or
empty; do not point it at a database you care about).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, String, Table, func, insert, select, type_coerce

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.ingest.write import sqlite_time  # noqa: E402
from app.metrics import EVENTS_CACHE_S  # noqa: E402
from app.rollups.buckets import bucket_start  # noqa: E402
from app.store.engine import make_engine  # noqa: E402
from app.store.events import Resolved  # noqa: E402
from app.store.guests import list_guests  # noqa: E402
from app.store.series import key_totals, read_series  # noqa: E402
from app.store.tables import (  # noqa: E402
    SERIES_INDEX,
    event,
    guest,
    host,
    metadata,
    rollup_1h,
    rollup_1m,
    rollup_fleet_1h,
    token,
)
from app.store.tokens import create_token  # noqa: E402

DAYS = 30


@dataclass(frozen=True)
class Fleet:
    """Who split-locks: `offenders` (a share of guests) lock in `offender_activity` of hours,
    the others in `background_activity`; `noisy_hosts` (a share) have host processes locking in
    `noisy_activity` of hours. rollup_1m is filled for the last `minute_days` days (retention
    keeps it as long as raw events: app/retention/plan.py)."""

    hosts: int
    guests: int
    offenders: float
    offender_activity: float
    background_activity: float
    noisy_hosts: float = 0.2
    noisy_activity: float = 0.5
    minute_days: int = DAYS


# Default: a minority (old or unusual software) locks in most hours, the others now and then.
# Dense: every guest locks in 30% of hours (about twice the rollup rows). Sized (--hosts,
# --guests; issue 13's read goal is 10,000 hosts and 100,000 guests): 2% of guests lock in 30%
# of hours, the rest in 1%, 5% of hosts have host processes locking in 20% of hours; rollup_1m
# for the last 2 days only (the 30-day chart reads rollup_1h; a fill of 30 days of minutes at
# that size would take longer than the bench).
FLEETS: dict[str, Fleet] = {
    "default": Fleet(50, 300, 0.2, 0.6, 0.01),
    "dense": Fleet(50, 300, 1.0, 0.3, 0.0),
}


def sized_fleet(hosts: int, guests: int) -> Fleet:
    return Fleet(hosts, guests, 0.02, 0.3, 0.01, noisy_hosts=0.05, noisy_activity=0.2, minute_days=2)


ACTIVE_MINUTES = 8  # minutes of an active guest-hour that hold its events
RAW_SAMPLE = 200_000
BAR_MS = 100.0
# A click on "by guest" or "by host", or the guest list ranked by events (#13): well under a second.
KEY_BAR_MS = 250.0

ACTIONS = (
    ("warn", 0.35),
    ("throttle", 0.5),
    ("ratelimit", 0.08),
    ("sigbus", 0.01),
    ("reflect", 0.05),
    ("unknown", 0.01),
)
KINDS = (("split_lock", 0.85), ("bus_lock", 0.15))
SOURCES = (("kmsg", 0.85), ("tracefs", 0.15))


@functools.cache
def _cumulative(table: tuple[tuple[str, float], ...]) -> tuple[list[str], list[float]]:
    return [v for v, _ in table], list(itertools.accumulate(w for _, w in table))


def pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    values, cum_weights = _cumulative(table)
    return rng.choices(values, cum_weights=cum_weights)[0]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli.main", "db", "upgrade", "--database-url", url],
        cwd=REPO,
        check=True,
        capture_output=True,
    )


def active_hours(rng: random.Random, p: float, hours: int) -> Iterator[int]:
    """The hours (0 <= h < hours) in which something with chance `p` per hour is active.

    Geometric skips between active hours: one draw per active hour, not one per hour, so
    100,000 guests over 720 hours are drawn in seconds.
    """
    if p <= 0:
        return
    if p >= 1:
        yield from range(hours)
        return
    log_q = math.log1p(-p)
    hour = -1
    while True:
        hour += 1 + int(math.log(1.0 - rng.random()) / log_q)
        if hour >= hours:
            return
        yield hour


def insert_chunked(engine: Engine, table: Table, rows: list[dict[str, Any]], chunk: int = 100_000) -> None:
    """executemany in chunks, one transaction each: bounded memory per statement."""
    for i in range(0, len(rows), chunk):
        with engine.begin() as conn:
            conn.execute(insert(table), rows[i : i + chunk])


def insert_bulk(engine: Engine, table: Table, rows: list[dict[str, Any]], chunk: int = 200_000) -> None:
    """Millions of plain rows fast: SQLite executemany on the driver (times as SQLAlchemy stores
    them), PostgreSQL COPY; a transaction per chunk. Triggers fire as for any insert."""
    if not rows:
        return
    columns = list(rows[0])
    names = ", ".join(f'"{c}"' for c in columns)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for i in range(0, len(rows), chunk):
            part = [tuple(r[c] for c in columns) for r in rows[i : i + chunk]]
            if engine.dialect.name == "sqlite":
                cursor.execute("PRAGMA cache_size = -262144")  # 256 MB: the indexes' pages stay
                cursor.executemany(
                    f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})",
                    [tuple(sqlite_time(v) if isinstance(v, dt.datetime) else v for v in r) for r in part],
                )
            else:
                with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                    for r in part:
                        copy.write_row(r)
            raw.commit()
        cursor.close()
    finally:
        raw.close()


def fill(
    engine: Engine, fleet: Fleet, total_events: int, end: dt.datetime, rng: random.Random, offenders: set[int]
) -> dict[str, int]:
    """Rows for `total_events` events of `fleet` over the DAYS before `end`."""
    start = end - dt.timedelta(days=DAYS)
    hosts, guests = fleet.hosts, fleet.guests
    insert_chunked(
        engine,
        host,
        [
            {
                "id": h,
                "name": f"kvm-{h:05d}",
                "boot_id": f"boot-{h}",
                "kernel": "6.8.0-51-generic",
                "cpu_model": "Intel(R) Xeon(R) Gold 6338",
                "agent_version": "0.1.0",
                "first_seen_at": start,
                "last_seen_at": end,
                "mode": "warn",
                "mitigate": 1,
                "sld_supported": True,
                "bld_supported": True,
                "cpus_total": 64,
                "cpus_on": 64,
                "cpu_off_streak": {},
                "cpus": [],
            }
            for h in range(1, hosts + 1)
        ],
    )
    insert_chunked(
        engine,
        guest,
        [
            {
                "id": g,
                "name": f"vm-{g:06d}",
                "vmm": "qemu",
                "first_seen_at": start,
                "last_seen_at": end,
                "last_host_id": (g % hosts) + 1,
            }
            for g in range(1, guests + 1)
        ],
    )

    # Cells: (hour, host, guest, kind, action, source) with a weight; counts scaled to the total.
    cells: list[tuple[int, int, int, str, str, str, float]] = []
    hours = DAYS * 24
    for g in range(1, guests + 1):
        p = fleet.offender_activity if g in offenders else fleet.background_activity
        for hour in active_hours(rng, p, hours):
            h = (g % hosts) + 1 if rng.random() > 0.05 else rng.randint(1, hosts)  # a few migrate
            for _ in range(rng.choice((1, 1, 2))):
                weight = rng.paretovariate(1.5)
                cells.append((hour, h, g, pick(rng, KINDS), pick(rng, ACTIONS), pick(rng, SOURCES), weight))
    # Plain host processes lock on these.
    noisy_hosts = rng.sample(range(1, hosts + 1), round(hosts * fleet.noisy_hosts))
    for h in noisy_hosts:
        for hour in active_hours(rng, fleet.noisy_activity, hours):
            cells.append((hour, h, 0, "split_lock", "warn", "kmsg", rng.paretovariate(1.5)))
    scale = total_events / sum(c[-1] for c in cells)

    hourly: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    minutely: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    first_hour = bucket_start(start, 3600)
    hour_starts = [first_hour + dt.timedelta(hours=i) for i in range(hours)]
    minute_from = hours - fleet.minute_days * 24
    for hour, h, g, kind, action, source, weight in cells:
        count = max(1, round(weight * scale))
        hour_at = hour_starts[hour]
        cell = hourly[(hour_at, h, g, kind, action, source)]
        cell[0] += count
        cell[1] += max(1, count // 20)  # sightings: rate-limited log lines
        if hour < minute_from:
            continue
        minutes = rng.sample(range(60), ACTIVE_MINUTES)
        share, left = divmod(count, ACTIVE_MINUTES)
        for i, minute in enumerate(minutes):
            n = share + (1 if i < left else 0)
            if n == 0:
                continue
            key = (hour_at + dt.timedelta(minutes=minute), h, g, kind, action, source)
            minutely[key][0] += n
            minutely[key][1] += max(1, n // 20)

    def rows(cube: dict[tuple[Any, ...], list[int]]) -> list[dict[str, Any]]:
        return [
            {
                "bucket": b,
                "host_id": h,
                "guest_id": g,
                "kind": k,
                "action": a,
                "source": s,
                "count": n,
                "events": e,
            }
            # In time order, as ingest writes them: the bucket-led indexes grow at their end.
            for (b, h, g, k, a, s), (n, e) in sorted(cube.items())
        ]

    insert_bulk(engine, rollup_1h, rows(hourly))
    minute_rows = rows(minutely)
    insert_bulk(engine, rollup_1m, minute_rows)

    # A raw sample: the newest RAW_SAMPLE events, as ingest would store them.
    sample_cells = [k for k in minutely if k[0] >= end - dt.timedelta(days=2)]
    raw: list[dict[str, Any]] = []
    seq: dict[int, int] = defaultdict(int)
    while len(raw) < RAW_SAMPLE:
        bucket, h, g, kind, action, source = rng.choice(sample_cells)
        seq[h] += 1
        at = bucket + dt.timedelta(seconds=rng.random() * 60)
        raw.append(
            {
                "host_id": h,
                "boot_id": f"boot-{h}",
                "source": source,
                "seq": seq[h],
                "time": at,
                "received_at": at + dt.timedelta(seconds=5),
                "kind": kind,
                "comm": "CPU 3/KVM" if g else "ffmpeg",
                "tid": 10_000 + g,
                "tgid": 9_000 + g,
                "address": f"0x{rng.getrandbits(32):x}",
                "count": 1,
                "action": action,
                "guest_id": g or None,
                "vcpu": 3 if g else None,
                "vmm": "qemu" if g else None,
            }
        )
    insert_chunked(engine, event, raw, 50_000)
    if engine.dialect.name == "postgresql":
        # What autovacuum does soon after such a fill (PostgreSQL 13+ vacuums insert-only
        # tables too): statistics, and the visibility map that index-only scans need. Only the
        # current hour's rollup rows are still being updated in a live database.
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            # The fill's triggers updated each fleet row thousands of times per transaction,
            # leaving 100+ MB of dead versions no live database has (each ingest transaction
            # updates a few rows, pruned in place): compacted to what the live table holds.
            conn.exec_driver_sql("VACUUM FULL rollup_fleet_1h")
            conn.exec_driver_sql("VACUUM ANALYZE")
    return {"rollup_1h": len(hourly), "rollup_1m": len(minute_rows), "event": len(raw), "cells": len(cells)}


def timed(fn: Any, repeats: int, budget_s: float = 30.0) -> list[float]:
    """Times of `repeats` calls after a warm-up one (the steady state); fewer if they take more
    than `budget_s` in all (at least 5), so a slow request does not hold the bench for minutes."""
    fn()
    out: list[float] = []
    started = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
        if len(out) >= 5 and time.perf_counter() - started > budget_s:
            break
    return out


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) a process has used, in ms: steadier than wall time on a busy box."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak resident since start) of a process, in kB, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def store_call_cpu(engine: Engine, since: dt.datetime, end: dt.datetime, repeats: int) -> dict[str, float]:
    """CPU ms of each store call behind the by-guest and by-host reads, median of `repeats`:
    this process's, plus on PostgreSQL its backend's (utime + stime from /proc; run with
    PGOPTIONS='-c max_parallel_workers_per_gather=0' so no parallel worker's CPU is left out)."""
    out: dict[str, float] = {}
    with engine.connect() as conn:
        pg = engine.dialect.name == "postgresql"
        backend = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) if pg else None
        calls: dict[str, Callable[[], object]] = {
            "group_by=guest": lambda: read_series(
                conn, Resolved(), since=since, until=end, step_s=3600, group_by="guest"
            ),
            "group_by=host": lambda: read_series(
                conn, Resolved(), since=since, until=end, step_s=3600, group_by="host"
            ),
            "/guests?sort=events": lambda: list_guests(conn, since=since, until=end, sort="events"),
            "fleet chart": lambda: read_series(
                conn, Resolved(), since=since, until=end, step_s=3600, group_by="action"
            ),
        }
        for label, call in calls.items():
            call()
            used = []
            for _ in range(repeats):
                before = time.process_time() * 1000 + (cpu_ms(backend) if backend else 0.0)
                call()
                used.append(time.process_time() * 1000 + (cpu_ms(backend) if backend else 0.0) - before)
            out[label] = statistics.median(used)
    return out


def raw_scan_ms(engine: Engine, since: dt.datetime, until: dt.datetime, repeats: int) -> float:
    """The chart from raw rows (sum per hour and action) over the sample table: p50 in ms."""

    def scan() -> None:
        with engine.connect() as conn:
            sums: dict[tuple[dt.datetime, str], int] = defaultdict(int)
            for at, action, count in conn.execute(
                select(event.c.time, event.c.action, event.c.count).where(
                    event.c.time >= since, event.c.time < until
                )
            ):
                sums[(bucket_start(at, 3600), action)] += count

    def scan_sql() -> None:
        with engine.connect() as conn:
            conn.execute(
                select(event.c.action, func.sum(event.c.count))
                .where(event.c.time >= since, event.c.time < until)
                .group_by(event.c.action)
            ).all()

    return min(statistics.median(timed(scan, max(3, repeats // 10))), statistics.median(timed(scan_sql, 5)))


BUCKET_INDEX = f"ix_rollup_1h_{'_'.join(SERIES_INDEX)}"
FILLED = (event, rollup_1h, rollup_fleet_1h, rollup_1m, guest, host)
COVERING_INDEXES = [
    index.name for table in (rollup_1h, rollup_1m) for index in table.indexes if "count" in index.columns
]


def empty(engine: Engine, without_covering_indexes: bool) -> None:
    """Empty the tables the fill writes (a --database-url may have been filled before)."""
    filled = [*FILLED, token]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"TRUNCATE {', '.join(t.name for t in filled)} CASCADE")
        else:
            for table in reversed(metadata.sorted_tables):
                if table in filled:
                    conn.execute(table.delete())
            # Last: deleting rollup_1h rows subtracts them from it (its triggers).
            conn.execute(rollup_fleet_1h.delete())
        for name in COVERING_INDEXES:
            if without_covering_indexes:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


def start_server(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "SPLITWATCH_DATABASE_URL": url, "SPLITWATCH_LOG_LEVEL": "warning"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app_from_env",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO,
        env=env,
    )
    return server, f"http://127.0.0.1:{port}"


def wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("bench: uvicorn did not come up within 30 s")
        time.sleep(0.1)


def summed(answer: dict[str, Any]) -> int:
    return sum(c for s in answer["series"] for _, c in s["points"])


def run(args: argparse.Namespace, name: str, fleet: Fleet, url: str) -> dict[str, Any]:
    """Fill one fleet, time its charts, lists and scrapes against same-run baselines, print them."""
    rng = random.Random(args.seed)
    end = bucket_start(dt.datetime.now(dt.UTC), 3600)
    since = end - dt.timedelta(days=DAYS)

    migrate(url)
    engine = make_engine(url)
    t = time.perf_counter()
    offenders = set(rng.sample(range(1, fleet.guests + 1), round(fleet.guests * fleet.offenders)))
    with engine.connect() as conn:
        stored = conn.execute(select(func.max(rollup_1h.c.bucket))).scalar()
    if args.reuse and stored is not None:
        # The fill of an earlier run with the same arguments (9 minutes at fleet size on SQLite):
        # its window ends after its newest hour, whenever that run was.
        end = stored + dt.timedelta(hours=1)
        since = end - dt.timedelta(days=DAYS)
        with engine.connect() as conn:
            sizes = {"event": int(conn.execute(select(func.count()).select_from(event)).scalar_one())}
    else:
        empty(engine, args.without_covering_indexes)
        sizes = fill(engine, fleet, args.events, end, rng, offenders)
    with engine.connect() as conn:
        total = int(conn.execute(select(func.sum(rollup_1h.c.count))).scalar() or 0)
        counted = {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in FILLED
        }
    indexes = "WITHOUT the covering indexes" if args.without_covering_indexes else "with the covering indexes"
    print(f"== fleet {name}: database {url.split('@')[-1]}, {indexes}")
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    how = "reused an earlier run's fill" if args.reuse and stored is not None else "filled in"
    print(f"{how} ({time.perf_counter() - t:.1f}s): {total:,} events over {DAYS} days as rows")
    print("  " + ", ".join(f"{table} {n:,}" for table, n in counted.items()))
    print(
        f"  {fleet.hosts:,} hosts, {fleet.guests:,} guests ({len(offenders):,} lock in "
        f"{fleet.offender_activity:.0%} of hours, the rest in {fleet.background_activity:.0%}); "
        f"rollup_1m for the last {fleet.minute_days} days"
    )
    with engine.begin() as conn:
        viewer, _ = create_token(conn, "viewer", None, "bench")

    server, base = start_server(url)
    window = {"since": since.isoformat(), "until": end.isoformat()}
    chart = {"group_by": "action", "step": 3600, **window}
    by_guest = {"group_by": "guest", "step": 3600, **window}
    by_host = {"group_by": "host", "step": 3600, **window}
    slow = max(5, args.repeats // 5)
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {viewer}"}, timeout=120
        ) as client:
            wait_ready(client)

            def get(path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
                r = client.get(path, params=params)
                r.raise_for_status()
                answer: dict[str, Any] = r.json()
                return answer

            # The server's peak memory for a series by guest (issue 13: 1.7 GB with 40,000
            # guests before `top`): its first one, before any other series request.
            before = memory_kb(server.pid)
            started = time.perf_counter()
            guests_answer = get("/api/v1/series", by_guest)
            first_guest_ms = (time.perf_counter() - started) * 1000
            after = memory_kb(server.pid)
            assert summed(guests_answer) == total, (summed(guests_answer), total)
            assert len(guests_answer["series"]) <= 11, len(guests_answer["series"])

            answer = get("/api/v1/series", chart)
            assert answer["step"] == 3600 and len(answer["series"][0]["points"]) == DAYS * 24, answer
            assert summed(answer) == total, (summed(answer), total)
            hosts_answer = get("/api/v1/series", by_host)
            assert summed(hosts_answer) == total and len(hosts_answer["series"]) <= 11

            cpu: dict[str, float] = {}

            def server_timed(label: str, fn: Any, repeats: int) -> list[float]:
                """timed(), and the server's CPU ms per call (warm-up call included)."""
                used = cpu_ms(server.pid)
                times = timed(fn, repeats)
                cpu[label] = (cpu_ms(server.pid) - used) / (len(times) + 1)
                return times

            http = server_timed("chart", lambda: get("/api/v1/series", chart), args.repeats)
            floor = server_timed("healthz", lambda: get("/healthz"), args.repeats)
            guest_http = server_timed("guest", lambda: get("/api/v1/series", by_guest), slow)
            host_http = server_timed("host", lambda: get("/api/v1/series", by_host), slow)
            pages: dict[str, tuple[str, dict[str, Any]]] = {
                "/hosts": ("/api/v1/hosts", {}),
                "/hosts?sort=events": ("/api/v1/hosts", {"sort": "events"}),
                "/hosts?status=silent": ("/api/v1/hosts", {"status": "silent"}),
                "/guests": ("/api/v1/guests", {}),
                "/guests?sort=events": ("/api/v1/guests", {"sort": "events"}),
            }
            lists = {
                label: timed(lambda p=path, e=extra: get(p, {**window, "limit": 100, **e}), slow)
                for label, (path, extra) in pages.items()
            }
            page = get("/api/v1/guests", {**window, "limit": 100})
            assert len(page["items"]) == min(100, fleet.guests), len(page["items"])
            # The first scrape after the collector's cache expired pays the queries; the ones
            # right after it are served from the cache (app/metrics.py): both are timed.
            cold_scrape = []
            for _ in range(3):
                time.sleep(EVENTS_CACHE_S + 0.1)
                started = time.perf_counter()
                client.get("/metrics").raise_for_status()
                cold_scrape.append((time.perf_counter() - started) * 1000)
            warm_scrape = timed(lambda: client.get("/metrics").raise_for_status(), 5)
            peak = memory_kb(server.pid)

        def direct_call() -> None:
            with engine.connect() as conn:
                read_series(conn, Resolved(), since=since, until=end, step_s=3600, group_by="action")

        direct = timed(direct_call, args.repeats)

        def from_hourly_rollup() -> None:
            # What the fleet chart summed before rollup_fleet_1h: every rollup_1h row of the range.
            bucket = type_coerce(rollup_1h.c.bucket, String)
            with engine.connect() as conn:
                conn.execute(
                    select(bucket, rollup_1h.c.action, func.sum(rollup_1h.c.count))
                    .where(rollup_1h.c.bucket >= since, rollup_1h.c.bucket < end)
                    .group_by(bucket, rollup_1h.c.action)
                ).all()

        hourly = timed(from_hourly_rollup, slow)

        def key_ranking(key: str, grouped: bool) -> Any:
            """The store's ranking of every guest or host over the range, or (`grouped`) the
            statement before the key-led indexes: every row of the range grouped by key, on
            the bucket-led index (SQLite is told so: it would now pick the key-led one)."""
            series = key_totals(rollup_1h, key, Resolved(), since, end)  # type: ignore[arg-type]
            if grouped:
                column, total = rollup_1h.c[key], func.sum(rollup_1h.c.count)
                series = (
                    select(column.label("key"), total.label("total"))
                    .where(rollup_1h.c.bucket >= since, rollup_1h.c.bucket < end)
                    .group_by(column)
                    .with_hint(rollup_1h, f"INDEXED BY {BUCKET_INDEX}", "sqlite")
                    .subquery()
                )
            query = (
                select(series.c.key, series.c.total, func.count().over())
                .where(series.c.total > 0)
                .order_by(series.c.total.desc(), series.c.key)
                .limit(11)
            )

            def call() -> None:
                with engine.connect() as conn:
                    conn.execute(query).all()

            return call

        ranking = {
            (key, grouped): statistics.median(timed(key_ranking(key, grouped), slow))
            for key in ("guest_id", "host_id")
            for grouped in (False, True)
        }
        store_cpu = store_call_cpu(engine, since, end, slow)
        sample_since = end - dt.timedelta(days=2)
        raw_ms = raw_scan_ms(engine, sample_since, end, args.repeats)
        raw_scaled = raw_ms * total / sizes["event"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        engine.dispose()

    p50, p99 = statistics.median(http), percentile(http, 99)
    d50, d99 = statistics.median(direct), percentile(direct, 99)
    f50 = statistics.median(floor)
    # The bar is on p99; p50 is judged too, since on a shared machine other processes' bursts
    # decide the slowest of a few dozen calls (the load averages are printed for that).
    verdict = "ok" if p99 < BAR_MS else "FAIL"
    verdict50 = "ok" if p50 < BAR_MS else "FAIL"
    print(
        f"30-day fleet chart (group_by=action, step=3600) {DAYS * 24} buckets, {len(answer['series'])} series"
    )
    print(
        f"  HTTP   p50 {p50:7.1f} ms  p99 {p99:7.1f} ms   "
        f"bar < {BAR_MS:.0f} ms: p99 {verdict}, p50 {verdict50}"
    )
    print(
        f"  server CPU {cpu['chart']:7.1f} ms per request (healthz {cpu['healthz']:.1f} ms; background "
        "jobs included: the alert evaluator scans the fleet every 30 s)"
    )
    print(f"  direct p50 {d50:7.1f} ms  p99 {d99:7.1f} ms   (the store call alone)")
    for label, times, got, used in (
        ("group_by=guest (top 10 + other)", guest_http, guests_answer, cpu["guest"]),
        ("group_by=host  (top 10 + other)", host_http, hosts_answer, cpu["host"]),
    ):
        print(
            f"30-day {label}: HTTP p50 {statistics.median(times):7.1f} ms"
            f"  p99 {percentile(times, 99):7.1f} ms"
            f"  server CPU {used:7.1f} ms"
            f"  ({len(times)} calls; {len(got['series'])} series, {got.get('others', 0):,} keys in other)"
        )
    print(
        f"  server memory, first group_by=guest request ({first_guest_ms:,.0f} ms): "
        f"VmRSS {before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MB, "
        f"peak VmHWM {before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MB "
        f"(+{(after['VmHWM'] - before['VmHWM']) / 1024:.0f} MB); peak after every request: "
        f"{peak['VmHWM'] / 1024:.0f} MB"
    )
    for path, times in lists.items():
        print(f"30-day list {path:22} (a page of 100): HTTP p50 {statistics.median(times):7.1f} ms")
    where = "this process + its PostgreSQL backend" if "postgresql" in url else "this process"
    print(
        f"  store calls alone, CPU ({where}): " + ", ".join(f"{k} {v:.0f} ms" for k, v in store_cpu.items())
    )
    key_verdicts = {}
    for label, times in (
        ("group_by=guest", guest_http),
        ("group_by=host", host_http),
        ("/guests?sort=events", lists["/guests?sort=events"]),
    ):
        m = statistics.median(times)
        key_verdicts[label] = "PASS" if m < KEY_BAR_MS else "FAIL"
        print(f"  bar: {label:20} HTTP p50 {m:7.1f} ms < {KEY_BAR_MS:.0f} ms: {key_verdicts[label]}")
    print("baselines, same run:")
    print(f"  GET /healthz  p50 {f50:7.1f} ms   chart/healthz = {p50 / f50:.1f}x")
    h50 = statistics.median(hourly)
    print(
        f"  the same sums from every rollup_1h row (the chart before rollup_fleet_1h): "
        f"p50 {h50:7.1f} ms   hourly/direct = {h50 / d50:.0f}x"
    )
    for key in ("guest_id", "host_id"):
        new, old = ranking[(key, False)], ranking[(key, True)]
        print(
            f"  ranking every {key[:-3]} over the range: key by key on its index p50 {new:7.1f} ms, "
            f"every row grouped (before the key-led indexes) p50 {old:7.1f} ms   "
            f"grouped/keyed = {old / new:.1f}x"
        )
    print(f"  raw event scan {raw_ms:.1f} ms over {sizes['event']:,} rows, scaled to {total:,} rows:")
    print(f"    {raw_scaled:,.0f} ms   scan/chart = {raw_scaled / d50:,.0f}x")
    cold, warm = statistics.median(cold_scrape), statistics.median(warm_scrape)
    print(f"  GET /metrics, scrape reading rollup_1h: p50 {cold:7.1f} ms  scrape/healthz = {cold / f50:.0f}x")
    print(f"  GET /metrics, within {EVENTS_CACHE_S:.0f} s of it (events_total cached): p50 {warm:7.1f} ms")
    print(f"load average after: {os.getloadavg()[0]:.1f}: other work on this machine inflates p99")
    return {
        "fleet": name,
        "p50": p50,
        "p99": p99,
        "direct": d50,
        "verdict": verdict,
        "verdict50": verdict50,
        "scrape": cold,
        "guest": statistics.median(guest_http),
        "keys": key_verdicts,
        "cpu": cpu["chart"],
        "peak_mb": after["VmHWM"] / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fleet", choices=[*FLEETS, "both"], default="both")
    parser.add_argument("--hosts", type=int, help="a fleet of this many hosts instead (with --guests)")
    parser.add_argument("--guests", type=int, help="a fleet of this many guests instead (with --hosts)")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory per fleet")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --database-url: time the fill an earlier run left there (same arguments), no refill",
    )
    parser.add_argument(
        "--without-covering-indexes", action="store_true", help="drop the rollups' covering indexes first"
    )
    args = parser.parse_args()

    if (args.hosts is None) != (args.guests is None):
        parser.error("--hosts and --guests go together")
    if args.hosts is not None:
        fleets = {f"{args.hosts}x{args.guests}": sized_fleet(args.hosts, args.guests)}
    else:
        fleets = FLEETS if args.fleet == "both" else {args.fleet: FLEETS[args.fleet]}
    results = []
    for name, fleet in fleets.items():
        tmp = tempfile.mkdtemp(prefix=f"bench-series-{name}-")
        results.append(run(args, name, fleet, args.database_url or f"sqlite:///{tmp}/bench.db"))
        print()
    print(f"summary (bar: 30-day fleet chart under {BAR_MS:.0f} ms over HTTP)")
    for r in results:
        print(
            f"  {r['fleet']:12} HTTP p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  CPU {r['cpu']:6.1f} ms"
            f"  bar: p99 {r['verdict']:4} p50 {r['verdict50']:4}"
            f"   direct p50 {r['direct']:6.1f} ms   /metrics {r['scrape']:6.1f} ms"
            f"   by guest p50 {r['guest']:7.1f} ms, server peak {r['peak_mb']:.0f} MB"
        )
        print(
            f"  {'':12} under {KEY_BAR_MS:.0f} ms: "
            + ", ".join(f"{label} {verdict}" for label, verdict in r["keys"].items())
        )


if __name__ == "__main__":
    main()
