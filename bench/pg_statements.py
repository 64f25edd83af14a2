"""PostgreSQL's own cost per statement while bench/bench_fleet.py runs (issue 13).

bench_fleet creates its PostgreSQL database, loads it and drops it. Start this first, in
another shell, then the bench: it waits for the bench's database to appear, takes a snapshot
of pg_stat_statements for that database once the warm-up is over (every host's first pass:
`--warmup` event inserts), keeps the last snapshot until the database is dropped, and prints
the difference: per statement calls, mean execution and planning time, rows per call. It also
prints the partitions `event` has in that database.

Needs pg_stat_statements in shared_preload_libraries and the extension created in the admin
database (`CREATE EXTENSION pg_stat_statements`); pg_stat_statements.track_planning = on for
the planning times.

Run: .venv/bin/python bench/pg_statements.py [--prefix bench_fleet_pg1_] [--top 20] &
     .venv/bin/python bench/bench_fleet.py --rounds 1 --seconds 6 --only pg1
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psycopg

# queryid: text, calls, exec ms, plans, plan ms, rows
Snapshot = dict[int, tuple[str, int, float, int, float, int]]


def snapshot(conn: psycopg.Connection[Any], dbid: int) -> Snapshot:
    rows = conn.execute(
        "SELECT queryid, query, calls, total_exec_time, plans, total_plan_time, rows "
        "FROM pg_stat_statements WHERE dbid = %s",
        (dbid,),
    ).fetchall()
    return {int(r[0]): (r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--prefix", default="bench_fleet_pg1_")
    parser.add_argument("--warmup", type=int, default=400, help="event inserts before the snapshot")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        found = None
        while found is None:
            found = conn.execute(
                "SELECT oid, datname FROM pg_database WHERE datname LIKE %s", (args.prefix + "%",)
            ).fetchone()
            time.sleep(0.2)
        dbid, name = int(found[0]), str(found[1])
        print(f"database {name} (oid {dbid})", flush=True)
        base: Snapshot | None = None
        last: Snapshot = {}
        partitions = None
        while conn.execute("SELECT 1 FROM pg_database WHERE oid = %s", (dbid,)).fetchone():
            last = snapshot(conn, dbid)
            if base is None:
                inserts = sum(s[1] for s in last.values() if "INSERT INTO event " in s[0])
                if inserts >= args.warmup:
                    base = last
                    db_url = args.admin_url.rsplit("/", 1)[0] + "/" + name
                    with psycopg.connect(db_url) as db:
                        partitions = db.execute(
                            "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass('event')"
                        ).fetchone()
            time.sleep(0.5)
    base = base or {}
    print(f"event partitions: {partitions[0] if partitions else '?'}")
    diff = []
    for qid, (text, calls, exec_ms, plans, plan_ms, rows) in last.items():
        b = base.get(qid, (text, 0, 0.0, 0, 0.0, 0))
        n = calls - b[1]
        if n <= 0:
            continue
        diff.append(
            (
                exec_ms - b[2] + plan_ms - b[4],
                n,
                (exec_ms - b[2]) / n,
                plans - b[3],
                plan_ms - b[4],
                (rows - b[5]) / n,
                text,
            )
        )
    diff.sort(reverse=True)
    total = sum(d[0] for d in diff)
    print(f"total exec+plan ms after the warm-up: {total:.0f}")
    print(f"{'total ms':>9} {'calls':>7} {'exec ms':>8} {'plans':>7} {'plan ms':>8} {'rows':>6}  statement")
    for tot, n, mean_exec, plans, plan_ms, per_call, query in diff[: args.top]:
        mean_plan = plan_ms / plans if plans else 0.0
        flat = " ".join(query.split())[:110]
        print(f"{tot:9.0f} {n:7d} {mean_exec:8.3f} {plans:7d} {mean_plan:8.3f} {per_call:6.1f}  {flat}")


if __name__ == "__main__":
    main()
