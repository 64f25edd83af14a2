"""What the server's own background reads cost at fleet size (issue 13): /metrics and the alerts.

At 10,000 hosts and 100,000 guests (~1.5 M rollup_1h rows over 30 days) it measures, on one
database filled as ingest would leave it (bench/bench_series.py's fill, plus host rows as a
reporting agent leaves them: 64 per-CPU entries, a verdict, a state history row, a few gaps):

  1. GET /metrics through a real uvicorn: the first scrape, sent as soon as the server answers
     /healthz (the kept sums are then being read in the background: it answers without them,
     flagged by splitwatch_metrics_warming 1), the time until a scrape holds every family
     (scrapes 1 s apart), scrapes after the event-sum cache expired, and the server's added peak
     memory (VmHWM) over the scrapes; bar: every scrape, the first included, < 2 s (Prometheus'
     default scrape timeout is 10 s) and < 100 MB.
  2. The alert evaluator: CPU per evaluation cycle, called directly on the same database
     (process CPU: on SQLite that includes SQLite's own work; on PostgreSQL the server's
     share is printed apart from pg_stat_statements when available), as a share of one core
     at the default 30 s interval; bar: < 5 %. Then the server's own CPU while idle with the
     evaluator running vs with its lease held by the bench (the evaluator idle): the same share
     measured in `serve`.
  3. The 30-day fleet chart (GET /api/v1/series?group_by=action&step=3600), p50/p99 over
     sequential requests, in --rounds alternating phases of --seconds with the evaluator held
     off then running; bar: p99 < 100 ms with it running. Baseline: GET /healthz, same run.

The scrapes ask for what Prometheus asks for (OpenMetrics, gzip).

The fill takes minutes; it is kept and reused: the database is filled only when it does not
hold this fleet yet (or with --refill). A SQLite file by default (--db PATH), or --database-url
(PostgreSQL: a scratch database you created; its tables are emptied before a fill). Each run
first brings the fleet up to now: agents report (last_seen_at), the fill's last 30 minutes of
rollup_1m (what the rules' windows read) and last two hours of rollup_1h (what a scrape re-reads)
are copied to the present, so a reused database is as busy as a live one.

    .venv/bin/python bench/bench_fleet_reads.py [--hosts 10000 --guests 100000]
        [--db /tmp/splitwatch-fleet-reads.db | --database-url URL] [--refill]
        [--cycles 5] [--seconds 65] [--rounds 2] [--only scrape,evaluator,chart] [--profile-evaluator FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import json
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, delete, func, insert, select, update

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_series import (  # noqa: E402
    DAYS,
    cpu_ms,
    empty,
    fill,
    insert_bulk,
    memory_kb,
    migrate,
    percentile,
    sized_fleet,
    start_server,
    wait_ready,
)

from app.alerts.evaluate import LEASE_NAME, evaluate  # noqa: E402
from app.metrics import EVENTS_CACHE_S  # noqa: E402
from app.rollups.buckets import bucket_start  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store.engine import make_engine  # noqa: E402
from app.store.tables import (  # noqa: E402
    alert,
    alert_lease,
    alert_rule,
    gap,
    guest,
    host,
    host_state,
    rollup_1h,
    rollup_1m,
)
from app.store.tokens import create_token  # noqa: E402

SCRAPE_BAR_MS = 2000.0
SCRAPE_MEMORY_BAR_MB = 100.0
EVALUATOR_BAR_SHARE = 0.05
CHART_BAR_MS = 100.0
# What Prometheus 2.x/3.x asks for (OpenMetrics first); httpx asks for gzip, as Prometheus does.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
INTERVAL_S = Settings().alert_interval  # the default: what a share of one core is taken against
CPUS_PER_HOST = 64
DRIFTING = 0.005  # share of hosts whose verdict needs action (HostInconsistent fires for them)
SILENT = 0.002  # share of hosts whose agent stopped reporting (AgentSilent fires for them)
BENCH_HOLDER = "bench_fleet_reads"
# Two threshold rules of the kind a team adds (docs/alerting.md "Threshold rules"): per guest
# and per host, over rollup_1m windows.
USER_RULES = (
    {"name": "GuestSplitLockStorm", "type": "threshold", "kind": "split_lock", "group_by": "guest",
     "window_s": 600, "threshold": 5000, "severity": "warning"},
    {"name": "HostBusLocks", "type": "threshold", "kind": "bus_lock", "group_by": "host",
     "window_s": 900, "threshold": 20000, "severity": "info"},
)  # fmt: skip


# ------------------------------------------------------------------------------ the database


def filled(engine: Engine, hosts: int, guests: int) -> bool:
    with engine.connect() as conn:
        n_hosts = conn.execute(select(func.count()).select_from(host)).scalar_one()
        n_guests = conn.execute(select(func.count()).select_from(guest)).scalar_one()
        has_rollups = conn.execute(select(rollup_1h.c.host_id).limit(1)).first() is not None
        has_states = conn.execute(select(host_state.c.id).limit(1)).first() is not None
    return n_hosts == hosts and n_guests == guests and has_rollups and has_states


def cpu_list(on: int, drift: bool) -> list[dict[str, Any]]:
    return [
        {"cpu": c, "test_ctrl": 0 if drift and c == 7 else 1 << 29, "sld_on": not (drift and c == 7),
         "bld_on": True, "error": None}
        for c in range(on)
    ]  # fmt: skip


def fill_fleet(engine: Engine, hosts: int, guests: int, events: int, seed: int) -> None:
    """bench_series' rollups, then the host rows as a reporting agent leaves them."""
    rng = random.Random(seed)
    fleet = sized_fleet(hosts, guests)
    end = bucket_start(dt.datetime.now(dt.UTC), 3600)
    offenders = set(rng.sample(range(1, guests + 1), round(guests * fleet.offenders)))
    empty(engine, False)
    with engine.begin() as conn:
        conn.execute(delete(host_state))
        conn.execute(delete(gap))
        conn.execute(delete(alert))
    started = time.perf_counter()
    sizes = fill(engine, fleet, events, end, rng, offenders)
    print(f"  rollups filled in {time.perf_counter() - started:.0f} s: {sizes}", flush=True)
    drifting = set(rng.sample(range(1, hosts + 1), round(hosts * DRIFTING)))
    start = end - dt.timedelta(days=DAYS)
    health = {"loop_s": 0.8, "spool_bytes": 0, "batches_sent": 1000, "events_read": 5000, "rss_kb": 21000}
    with engine.begin() as conn:
        for h in range(1, hosts + 1):
            drift = h in drifting
            conn.execute(
                update(host)
                .where(host.c.id == h)
                .values(
                    state_observed_at=end,
                    ratelimit=None,
                    cpus_total=CPUS_PER_HOST,
                    cpus_on=CPUS_PER_HOST - (1 if drift else 0),
                    cpus_off=1 if drift else 0,
                    verdict="drift" if drift else "consistent",
                    verdict_reason=(
                        "CPU 7 reads split-lock detection off in 3 samples in a row" if drift else None
                    ),
                    verdict_details={"cpus_off": [7]} if drift else {},
                    verdict_since=end - dt.timedelta(hours=2) if drift else start,
                    cpus=cpu_list(CPUS_PER_HOST, drift),
                    health=health,
                )
            )
    states = [
        {
            "host_id": h,
            "observed_at": start,
            "boot_id": f"boot-{h}",
            "kernel": "6.8.0-51-generic",
            "mode": "warn",
            "ratelimit": None,
            "mitigate": 1,
            "sld_supported": True,
            "bld_supported": True,
            "cpus_on": CPUS_PER_HOST,
            "cpus_off": 0,
            "cpus_error": 0,
            "verdict": "consistent",
            "cpus": json.dumps(cpu_list(CPUS_PER_HOST, False)),
        }
        for h in range(1, hosts + 1)
    ]
    insert_bulk(engine, host_state, states)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


def freshen(engine: Engine, hosts: int, seed: int) -> dt.datetime:
    """The fleet as of now: agents report (a few stopped), the rules' windows hold minutes."""
    rng = random.Random(seed + 1)
    now = dt.datetime.now(dt.UTC)
    silent = set(rng.sample(range(1, hosts + 1), round(hosts * SILENT)))
    with engine.begin() as conn:
        # The fill ended DAYS after the hosts' first sighting (later runs move rows past it).
        fill_end = conn.execute(select(func.min(host.c.first_seen_at))).scalar_one() + dt.timedelta(days=DAYS)
        filled_until = fill_end - dt.timedelta(hours=1)  # the last filled hour
        conn.execute(update(host).values(last_seen_at=now))
        conn.execute(
            update(host).where(host.c.id.in_(sorted(silent))).values(last_seen_at=now - dt.timedelta(hours=1))
        )
        # The rollup_1m rows of the fill's last 30 minutes, moved to the last 30 minutes.
        source = fill_end - dt.timedelta(minutes=30)
        shift = bucket_start(now, 60) - fill_end
        recent = conn.execute(
            select(rollup_1m).where(rollup_1m.c.bucket >= source, rollup_1m.c.bucket < fill_end)
        ).all()
        # Earlier runs' copies, and whatever the copy lands on (a run right after the fill).
        conn.execute(delete(rollup_1m).where(rollup_1m.c.bucket >= min(fill_end, source + shift)))
        if recent and shift > dt.timedelta(0):
            conn.execute(insert(rollup_1m), [{**r._asdict(), "bucket": r.bucket + shift} for r in recent])
        # The fill's last two hours of rollup_1h as the present ones: what a scrape re-reads.
        conn.execute(delete(rollup_1h).where(rollup_1h.c.bucket > filled_until))
        hour_shift = bucket_start(now, 3600) - filled_until
        if hour_shift >= dt.timedelta(hours=2):  # else the copies would land on filled hours
            hours = conn.execute(
                select(rollup_1h).where(rollup_1h.c.bucket > filled_until - dt.timedelta(hours=2))
            ).all()
            conn.execute(insert(rollup_1h), [{**r._asdict(), "bucket": r.bucket + hour_shift} for r in hours])
        # A few counted losses in the last hour (EventsLost reads them).
        conn.execute(delete(gap).where(gap.c.boot_id == "bench-fresh"))
        conn.execute(
            insert(gap),
            [
                {"host_id": h, "boot_id": "bench-fresh", "source": "kmsg", "first_seq": i, "last_seq": i + 10,
                 "count": rng.choice((5, 50, 500)), "reason": rng.choice(("suppressed", "overrun")),
                 "received_at": now - dt.timedelta(minutes=rng.randint(1, 50))}
                for i, h in enumerate(rng.sample(range(1, hosts + 1), max(1, hosts // 200)))
            ],
        )  # fmt: skip
        have = set(conn.execute(select(alert_rule.c.name)).scalars())
        for spec in USER_RULES:
            if spec["name"] not in have:
                conn.execute(
                    insert(alert_rule).values(
                        **spec, for_s=0, match={}, labels={}, annotations={}, builtin=False,
                        enabled=True, created_at=now, updated_at=now,
                    )
                )  # fmt: skip
    return now


@contextlib.contextmanager
def lease_held(engine: Engine) -> Iterator[None]:
    """The alerting lease held by the bench: the server's evaluator finds it taken and idles."""
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(delete(alert_lease).where(alert_lease.c.name == LEASE_NAME))
        conn.execute(
            insert(alert_lease).values(
                name=LEASE_NAME, holder=BENCH_HOLDER, expires_at=now + dt.timedelta(hours=1), renewed_at=now
            )
        )
    try:
        yield
    finally:
        release_lease(engine)


def release_lease(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(alert_lease).where(alert_lease.c.name == LEASE_NAME))


# ------------------------------------------------------------------------------ the evaluator


def evaluator_cycles(engine: Engine, url: str, cycles: int, profile: str | None) -> dict[str, float]:
    """CPU (this process) and wall time per evaluation, after one warm-up evaluation."""
    settings = Settings(database_url=url)
    release_lease(engine)
    holder = "bench-evaluator"

    def once() -> None:
        with engine.begin() as conn:
            report = evaluate(conn, settings, holder, dt.datetime.now(dt.UTC))
            assert report is not None

    once()  # the first one fires what the fresh fleet holds and writes its notices
    cpu, wall = [], []
    profiler = cProfile.Profile() if profile else None
    for _ in range(cycles):
        c, w = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        once()
        if profiler is not None:
            profiler.disable()
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    with engine.begin() as conn:
        open_alerts = conn.execute(
            select(alert.c.status, func.count()).where(alert.c.status != "resolved").group_by(alert.c.status)
        ).all()
        conn.execute(delete(alert_lease).where(alert_lease.c.name == LEASE_NAME))
    if profiler is not None and profile:
        profiler.dump_stats(profile)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    return {
        "cpu": statistics.median(cpu),
        "wall": statistics.median(wall),
        "open": float(sum(n for _, n in open_alerts)),
    }


# ------------------------------------------------------------------------------ HTTP


def run_for(seconds: float, fn: Callable[[], None]) -> list[float]:
    """fn() back to back for `seconds`: the time of each call, in ms."""
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--guests", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--db", default="/tmp/splitwatch-fleet-reads.db", help="SQLite file (kept)")
    parser.add_argument("--database-url", help="instead of --db, e.g. a scratch PostgreSQL database")
    parser.add_argument("--refill", action="store_true", help="fill even when the database holds the fleet")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=5, help="direct evaluations timed")
    parser.add_argument("--seconds", type=float, default=65.0, help="each chart and idle phase (2 cycles)")
    parser.add_argument("--rounds", type=int, default=2, help="chart phases, evaluator held off then running")
    parser.add_argument("--only", default="scrape,evaluator,chart")
    parser.add_argument("--profile-evaluator", metavar="FILE", help="cProfile the direct evaluations")
    args = parser.parse_args()
    only = set(args.only.split(","))

    url = args.database_url or f"sqlite:///{args.db}"
    migrate(url)
    engine = make_engine(url)
    print(f"== {args.hosts:,} hosts, {args.guests:,} guests; database {url.split('@')[-1]}")
    if args.refill or not filled(engine, args.hosts, args.guests):
        print("filling (kept for the next runs) ...", flush=True)
        fill_fleet(engine, args.hosts, args.guests, args.events, args.seed)
    with engine.connect() as conn:
        rows = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (rollup_1h, rollup_1m)
        }
    print("  " + ", ".join(f"{name} {n:,} rows" for name, n in rows.items()))
    now = freshen(engine, args.hosts, args.seed)
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)", flush=True)
    results: dict[str, Any] = {}

    if "evaluator" in only:
        ev = evaluator_cycles(engine, url, args.cycles, args.profile_evaluator)
        share = ev["cpu"] / 1000 / INTERVAL_S
        results["evaluator"] = (ev, share)
        print(
            f"alert evaluator, direct: CPU {ev['cpu']:,.0f} ms per cycle (wall {ev['wall']:,.0f} ms), "
            f"{share:.1%} of one core at the {INTERVAL_S:.0f} s interval; {ev['open']:.0f} alerts open   "
            f"bar < {EVALUATOR_BAR_SHARE:.0%}: {verdict(share < EVALUATOR_BAR_SHARE)}",
            flush=True,
        )

    if not only & {"scrape", "chart"}:
        return
    with engine.begin() as conn:
        viewer, _ = create_token(conn, "viewer", None, "bench")
    window = {
        "since": (bucket_start(now, 3600) - dt.timedelta(days=DAYS)).isoformat(),
        "until": now.isoformat(),
    }
    chart = {"group_by": "action", "step": 3600, **window}
    server, base = start_server(url)
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {viewer}"}, timeout=120
        ) as client:
            with lease_held(engine):
                wait_ready(client)
                if "scrape" in only:
                    first_scrapes(client, server.pid, results)
                healthz = run_for(3, lambda: client.get("/healthz").raise_for_status())
                h50 = statistics.median(healthz)
                if "scrape" in only:
                    scrape(client, server.pid, h50, results)
            if "chart" in only:
                # Alternated, so the machine's other work weighs on both alike.
                phases: dict[str, list[tuple[list[float], float]]] = {"held off": [], "running": []}
                for _ in range(args.rounds):
                    with lease_held(engine):
                        phases["held off"].append(chart_phase(client, server.pid, args.seconds, chart))
                    phases["running"].append(chart_phase(client, server.pid, args.seconds, chart))
                held, running = (chart_summary(phases[k], f"evaluator {k}", args.seconds) for k in phases)
                idle_held, idle_running = idle_phases(engine, server.pid, args.seconds)
                results["chart"] = (held, running, idle_held, idle_running, h50)
    finally:
        server.terminate()
        server.wait(timeout=30)
        release_lease(engine)
        engine.dispose()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    summary(results)


def complete(body: str) -> bool:
    """Whether a scrape holds every family: not warming (a server without the gauge: always)."""
    return "\nsplitwatch_metrics_warming 1" not in body and "\nsplitwatch_events_total{" in body


def first_scrapes(client: httpx.Client, pid: int, results: dict[str, Any]) -> None:
    """The first scrape right after startup, then scrapes 1 s apart until one holds every family."""
    results["memory_before"] = memory_kb(pid)  # the warming's memory counts too
    ready = time.perf_counter()
    used = cpu_ms(pid)
    r = client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    r.raise_for_status()
    first = (time.perf_counter() - ready) * 1000
    first_cpu = cpu_ms(pid) - used
    first_complete = complete(r.text)
    scrapes = 1
    while not complete(r.text):
        if time.perf_counter() - ready > 600:
            raise SystemExit("bench: /metrics still warming after 600 s")
        time.sleep(1.0)
        r = client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
        r.raise_for_status()
        scrapes += 1
    warmed = time.perf_counter() - ready
    results["first"] = (first, warmed)
    print(
        f"GET /metrics right after startup: first {first:,.0f} ms (server CPU {first_cpu:,.0f} ms), "
        f"{'complete' if first_complete else 'warming'}; every family served {warmed:.1f} s after the "
        f"server was ready ({scrapes} scrapes)   bar first < {SCRAPE_BAR_MS:.0f} ms: "
        f"{verdict(first < SCRAPE_BAR_MS)}",
        flush=True,
    )


def scrape(client: httpx.Client, pid: int, h50: float, results: dict[str, Any]) -> None:
    def get() -> float:
        t = time.perf_counter()
        r = client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
        r.raise_for_status()
        return (time.perf_counter() - t) * 1000

    before = results.get("memory_before") or memory_kb(pid)
    expired = []
    used = cpu_ms(pid)
    for _ in range(3):
        time.sleep(EVENTS_CACHE_S + 0.2)
        expired.append(get())
    expired_cpu = (cpu_ms(pid) - used) / len(expired)
    used = cpu_ms(pid)
    warm = [get() for _ in range(5)]
    warm_cpu = (cpu_ms(pid) - used) / len(warm)
    after = memory_kb(pid)
    body = client.get("/metrics").text
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    added = (after["VmHWM"] - before["VmRSS"]) / 1024
    worst = max(expired)
    results["scrape"] = (expired, warm, added, h50, worst)
    print(
        f"GET /metrics: after the event cache "
        f"expired p50 {statistics.median(expired):,.0f} ms ({expired_cpu:,.0f} ms CPU), cached p50 "
        f"{statistics.median(warm):,.0f} ms ({warm_cpu:,.0f} ms CPU); "
        f"{series:,} series, {len(body) / 1e6:.1f} MB of text",
        flush=True,
    )
    print(
        f"  server memory: VmRSS {before['VmRSS'] / 1024:.0f} MB before, peak {after['VmHWM'] / 1024:.0f} MB "
        f"(+{added:.0f} MB)   bars < {SCRAPE_BAR_MS:.0f} ms: {verdict(worst < SCRAPE_BAR_MS)}, "
        f"< {SCRAPE_MEMORY_BAR_MB:.0f} MB: {verdict(added < SCRAPE_MEMORY_BAR_MB)}",
        flush=True,
    )


def chart_phase(
    client: httpx.Client, pid: int, seconds: float, chart: dict[str, Any]
) -> tuple[list[float], float]:
    """The chart back to back for `seconds`: each request's time, and the server's CPU in all."""

    def get() -> None:
        client.get("/api/v1/series", params=chart).raise_for_status()

    get()
    used = cpu_ms(pid)
    times = run_for(seconds, get)
    return times, cpu_ms(pid) - used


def chart_summary(phases: list[tuple[list[float], float]], label: str, seconds: float) -> dict[str, float]:
    times = [t for phase, _ in phases for t in phase]
    cpu = sum(c for _, c in phases) / len(times)
    p50, p99 = statistics.median(times), percentile(times, 99)
    print(
        f"30-day fleet chart, {label}: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {max(times):6.0f} ms "
        f"({len(times)} requests in {len(phases)} x {seconds:.0f} s; server CPU {cpu:.1f} ms per request)",
        flush=True,
    )
    return {"p50": p50, "p99": p99, "n": len(times), "cpu": cpu}


def idle_phases(engine: Engine, pid: int, seconds: float) -> tuple[float, float]:
    """The idle server's CPU share with the evaluator held off, then running."""
    with lease_held(engine):
        used = cpu_ms(pid)
        time.sleep(seconds)
        held = (cpu_ms(pid) - used) / 1000 / seconds
    # The evaluator takes the free lease at its next cycle.
    used = cpu_ms(pid)
    time.sleep(seconds)
    running = (cpu_ms(pid) - used) / 1000 / seconds
    print(
        f"idle server CPU: {held:.1%} of a core with the evaluator held off, {running:.1%} with it running "
        f"(+{running - held:.1%}; bar < {EVALUATOR_BAR_SHARE:.0%}: "
        f"{verdict(running - held < EVALUATOR_BAR_SHARE)})",
        flush=True,
    )
    return held, running


def summary(results: dict[str, Any]) -> None:
    print("summary")
    if "scrape" in results:
        _expired, _warm, added, h50, worst = results["scrape"]
        first, warmed = results["first"]
        print(
            f"  /metrics first {first:,.0f} ms (every family after {warmed:.1f} s), worst after it "
            f"{worst:,.0f} ms ({worst / h50:,.0f}x healthz {h50:.1f} ms), +{added:.0f} MB: "
            f"{verdict(max(first, worst) < SCRAPE_BAR_MS and added < SCRAPE_MEMORY_BAR_MB)}"
        )
    if "evaluator" in results:
        ev, share = results["evaluator"]
        print(
            f"  evaluator {ev['cpu']:,.0f} ms CPU per cycle = {share:.1%} of a core: "
            f"{verdict(share < EVALUATOR_BAR_SHARE)}"
        )
    if "chart" in results:
        held, running, idle_held, idle_running, h50 = results["chart"]
        print(
            f"  chart p99 {running['p99']:.1f} ms with the evaluator running ({held['p99']:.1f} ms held off; "
            f"healthz p50 {h50:.1f} ms): {verdict(running['p99'] < CHART_BAR_MS)}; "
            f"idle share +{idle_running - idle_held:.1%}"
        )


if __name__ == "__main__":
    main()
