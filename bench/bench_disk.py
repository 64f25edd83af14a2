"""Disk per host per day, measured: events, rollups and their indexes, SQLite and PostgreSQL (#13).

A day of one host's steady-state traffic, as a real agent sends it every 10 s (the figure of
issue 13: 4 events and 32 CPU states per batch): 8640 batches, 34,560 events a day, most from
the vCPU threads of the host's guests (GUESTS per host), some from host processes, split and
bus locks, warn mode. Rows go in through the ingest code itself (app/ingest/rows.py and
write.py: the same event rows, rollup upserts and host_state rows as `serve` writes); the
six 10 s batches of one simulated minute go as one (fewer transactions make the run faster;
the rows, and so the pages, are the same). `--hosts` hosts are simulated over
`--days` days and the sizes divided by host-days.

Measured: SQLite's dbstat (bytes of pages per table and per index, after VACUUM) and
PostgreSQL's pg_table_size / pg_indexes_size summed over event's partitions, after VACUUM and
again after VACUUM FULL (see sizes_postgres: the compacted size is the long-run growth).
Then a fleet sized on paper: `--fleet` hosts (default 10,000) for SPLITWATCH_RETENTION_DAYS
of raw events and minute rollups (30) and SPLITWATCH_ROLLUP_RETENTION_DAYS of hourly ones (400).

Run: .venv/bin/python bench/bench_disk.py [--hosts 4] [--days 1] [--engine sqlite|postgres|both]
     [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
No baseline ratio: this bench measures a size, not a speed; the figures go to docs/scaling.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, text  # noqa: E402

from agent.payload import (  # noqa: E402
    Action,
    CpuState,
    Event,
    Guest,
    HostInfo,
    HostState,
    Kind,
    Mode,
    Payload,
    Source,
)
from app.ingest.rows import build_rows  # noqa: E402
from app.ingest.schema import parse_payload  # noqa: E402
from app.ingest.write import write_batch  # noqa: E402
from app.store.engine import make_engine  # noqa: E402

INTERVAL_S = 10
EVENTS_PER_BATCH = 4
CPUS = 32
GUESTS = 8
DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
TABLES = ("event", "rollup_1m", "rollup_1h", "host_state", "gap", "guest", "guest_host", "host")


def upgrade(url: str) -> None:
    from app.store.schema_check import migrate

    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def host_day(name: str, host_no: int, day: int, seq0: int, rng: random.Random) -> list[bytes]:
    """The payloads of one host's day, grouped per minute: six 10 s batches in one payload."""
    info = HostInfo(name=name, boot_id=f"boot-{host_no}", kernel="6.8.0-51-generic",
                    cpu_model="Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", agent_version="0.1.0")  # fmt: skip
    cpus = tuple(CpuState(c, 1 << 29, True, True, None) for c in range(CPUS))
    guests = [f"{name}-vm{g}" for g in range(GUESTS)]
    bodies = []
    seq = seq0
    start = DAY0 + dt.timedelta(days=day)
    for minute in range(1440):
        at = start + dt.timedelta(minutes=minute)
        events = []
        for batch in range(60 // INTERVAL_S):
            for i in range(EVENTS_PER_BATCH):
                t = at + dt.timedelta(seconds=batch * INTERVAL_S + rng.random() * INTERVAL_S)
                # A few noisy guests make most traps; a host process now and then.
                g = min(int(rng.expovariate(0.6)), GUESTS)
                guest = None if g == GUESTS else guests[g]
                events.append(
                    Event(
                        source=Source.KMSG if i % 4 else Source.TRACEFS,
                        seq=seq,
                        time=t,
                        kind=Kind.SPLIT_LOCK if rng.random() < 0.9 else Kind.BUS_LOCK,
                        comm=f"CPU {rng.randrange(4)}/KVM"
                        if guest
                        else rng.choice(("stress-ng", "java", "ffmpeg")),
                        tid=rng.randrange(1000, 400000),
                        tgid=rng.randrange(1000, 400000),
                        address=f"0x{rng.randrange(1 << 40):x}" if rng.random() < 0.8 else None,
                        count=1,
                        action=Action.WARN,
                        guest=Guest(name=guest, uuid=None, vmm="qemu", vcpu=rng.randrange(4))
                        if guest
                        else None,
                    )
                )
                seq += 1
        # The state goes with every batch; host_state gets a row only when it changes (never here).
        state = HostState(observed_at=at, mode=Mode.WARN, ratelimit=None, mitigate=1,
                          sld_supported=True, bld_supported=True, cpus=cpus)  # fmt: skip
        bodies.append(
            Payload(host=info, state=state, events=tuple(events), gaps=(), health=None).to_json().encode()
        )
    return bodies


def fill(engine: Engine, hosts: int, days: int) -> int:
    rng = random.Random(13)
    n = 0
    for day in range(days):
        for h in range(hosts):
            bodies = host_day(f"host-{h:05d}", h, day, seq0=day * 40_000_000, rng=rng)
            with engine.connect() as conn:
                for i, body in enumerate(bodies):
                    received = DAY0 + dt.timedelta(days=day, minutes=i + 1)
                    n += write_batch(conn, build_rows(parse_payload(body), received)).accepted
                    conn.commit()
    return n


def sizes_sqlite(path: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("VACUUM")
        rows = conn.execute(
            "SELECT s.name, m.tbl_name, m.type, SUM(s.pgsize) FROM dbstat s "
            "JOIN sqlite_master m ON m.name = s.name GROUP BY s.name"
        ).fetchall()
    finally:
        conn.close()
    for _name, table, kind, size in rows:
        entry = out.setdefault(table, {"table": 0, "indexes": 0})
        entry["table" if kind == "table" else "indexes"] += int(size)
    return out


def _pg_sizes(conn: Any) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for table in TABLES:
        row = conn.execute(
            text(
                # pg_partition_tree lists a partitioned table's parts (none for a plain one).
                "SELECT COALESCE(SUM(pg_table_size(r)), 0), COALESCE(SUM(pg_indexes_size(r)), 0) FROM ("
                " SELECT relid AS r FROM pg_partition_tree(CAST(:t AS regclass))"
                " UNION SELECT CAST(:t AS regclass)) AS parts"
            ),
            {"t": table},
        ).one()
        out[table] = {"table": int(row[0]), "indexes": int(row[1])}
    return out


def sizes_postgres(engine: Engine) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """(as found after VACUUM, compacted by VACUUM FULL).

    The rollup upserts rewrite their row once per batch (MVCC: a new row version, and new
    index entries since `count` is in the covering indexes), so a day's files hold many dead
    versions; VACUUM makes that space reusable by the next day's upserts but does not shrink
    the files. What a database grows by per day in the long run is the compacted size.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        found = _pg_sizes(conn)
        conn.exec_driver_sql("VACUUM FULL")
        return found, _pg_sizes(conn)


def report(
    engine_name: str, sizes: dict[str, dict[str, int]], host_days: int, events: int, args: Any
) -> dict[str, Any]:
    per = {t: {k: v / host_days for k, v in sizes.get(t, {"table": 0, "indexes": 0}).items()} for t in TABLES}
    print(f"\n{engine_name}: {host_days} host-days, {events} events ({events / host_days:,.0f} per host-day)")
    print(f"{'table':<12} {'rows+toast/host/day':>20} {'indexes/host/day':>18} {'total':>12}")
    for t in TABLES:
        p = per[t]
        print(
            f"{t:<12} {p['table'] / 1e6:>17.2f} MB {p['indexes'] / 1e6:>15.2f} MB "
            f"{(p['table'] + p['indexes']) / 1e6:>9.2f} MB"
        )
    ev = per["event"]["table"] + per["event"]["indexes"]
    m1 = per["rollup_1m"]["table"] + per["rollup_1m"]["indexes"]
    h1 = per["rollup_1h"]["table"] + per["rollup_1h"]["indexes"]
    print(f"bytes per event (row + indexes): {ev * host_days / events:.0f}")
    fleet = args.fleet
    raw = fleet * args.retention_days * (ev + m1)
    long = fleet * args.rollup_retention_days * h1
    print(
        f"{fleet:,} hosts: {args.retention_days} days of events + minute rollups = {raw / 1e12:.2f} TB, "
        f"{args.rollup_retention_days} days of hourly rollups = {long / 1e9:.1f} GB, "
        f"total {(raw + long) / 1e12:.2f} TB"
    )
    return {"engine": engine_name, "per_host_day_bytes": per, "events_per_host_day": events / host_days,
            "fleet_bytes": {"raw_and_1m": raw, "rollup_1h": long}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--engine", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--fleet", type=int, default=10_000)
    parser.add_argument("--retention-days", type=int, default=30)
    parser.add_argument("--rollup-retention-days", type=int, default=400)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = []
    host_days = args.hosts * args.days
    if args.engine in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/disk.db"
            upgrade(url)
            engine = make_engine(url)
            started = time.monotonic()
            events = fill(engine, args.hosts, args.days)
            print(f"sqlite: filled in {time.monotonic() - started:.0f}s")
            engine.dispose()
            results.append(report("sqlite", sizes_sqlite(f"{tmp}/disk.db"), host_days, events, args))
    if args.engine in ("postgres", "both"):
        import psycopg

        name = f"sw_bench_disk_{secrets.token_hex(4)}"
        admin_url = args.pg_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        url = admin_url.rsplit("/", 1)[0] + "/" + name
        try:
            upgrade(url)
            engine = make_engine(url)
            with engine.begin() as conn:  # the simulated days get their partitions, as retention makes them
                from app.retention.partitions import ensure_day_partition

                for d in range(args.days):
                    ensure_day_partition(conn, DAY0 + dt.timedelta(days=d))
            started = time.monotonic()
            events = fill(engine, args.hosts, args.days)
            print(f"postgres: filled in {time.monotonic() - started:.0f}s")
            found, compact = sizes_postgres(engine)
            print("\npostgres, as found after VACUUM (dead row versions of the rollup upserts included):")
            for t in ("event", "rollup_1m", "rollup_1h"):
                size = (found[t]["table"] + found[t]["indexes"]) / host_days
                print(f"  {t:<10} {size / 1e6:8.2f} MB/host/day")
            results.append(report("postgres (compacted)", compact, host_days, events, args))
            engine.dispose()
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
