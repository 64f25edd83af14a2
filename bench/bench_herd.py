"""A fleet coming back after an outage: every agent replays its spool at the same moment (#13).

N agents, each with B backlog batches of E events (gzip, as agents send), start at once against a
real `splitwatch serve` on a fresh SQLite file. Each behaves as agent/transport.py does: one
keep-alive connection, one batch at a time, a 10 s timeout, and after a timeout, a 5xx or a
refused connection an exponential backoff with full jitter (base 1 s, cap 300 s, Retry-After
when sent). Printed per server setting: the time until every batch is acknowledged, requests
sent, timeouts, 503s, events answered as duplicates (a batch stored while its agent had given
up on it, then sent again: work done twice), the server's CPU and its peak memory (VmHWM).

Rows, one run, the same herd (--limits MOST[:WAIT_S],...):
  0          SPLITWATCH_INGEST_MAX_IN_FLIGHT=0: every request read, parsed and queued at once
  64:0       at most 64 in progress; one more answered 503 at once, unread, and backs off
  64:5       the defaults: one more waits, unread, up to 5 s for a place, then 503

Run: .venv/bin/python bench/bench_herd.py [--agents 1000] [--batches 1] [--events 1000]
     [--limits 0,64:0,64:5] [--bound-s 300] [--pg-url URL]
Bounded: each row stops after --bound-s; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_fleet import read_answer  # noqa: E402
from bench_ingest import cpu_seconds, free_port, make_events, pg_database  # noqa: E402
from bench_series import memory_kb, wait_ready  # noqa: E402

from agent.payload import HostInfo, Payload  # noqa: E402
from app.store.engine import make_engine  # noqa: E402
from app.store.tokens import create_token  # noqa: E402

SPLITWATCH = str(Path(sys.executable).with_name("splitwatch"))
TIMEOUT_S = 10.0  # the agent's default timeout_s
BACKOFF_BASE_S, BACKOFF_CAP_S = 1.0, 300.0  # the agent's defaults


@dataclass
class Tally:
    requests: int = 0
    timeouts: int = 0
    refused: int = 0  # 503 (overloaded or database_busy)
    errors: int = 0  # connection refused or reset, other statuses
    accepted: int = 0
    duplicates: int = 0
    done_at: list[float] = field(default_factory=list)


def bodies(agent: int, batches: int, events: int, at: datetime) -> list[bytes]:
    host = f"herd-{agent:05d}"
    out = []
    for b in range(batches):
        payload = Payload(
            host=HostInfo(host, "boot-1", "6.8.0-45-generic", "Intel Xeon Gold 6338", "0.1.0"),
            state=None,
            events=make_events(b * events, events, at, host),
        )
        out.append(gzip.compress(payload.to_json().encode(), compresslevel=1))
    return out


async def exchange(port: int, conn: list[object], token: str, body: bytes) -> tuple[int, bytes]:
    """One POST on the agent's kept-alive connection (opened when there is none). As the agent's
    transport does, a reused connection that the server closed while it was idle (its
    keep-alive timeout, during a backoff) is replaced and the request sent again once."""
    reused = bool(conn)
    try:
        return await _exchange(port, conn, token, body)
    except (ConnectionResetError, BrokenPipeError):
        drop(conn)
        if not reused:
            raise
    return await _exchange(port, conn, token, body)


async def _exchange(port: int, conn: list[object], token: str, body: bytes) -> tuple[int, bytes]:
    if not conn:
        conn.extend(await asyncio.open_connection("127.0.0.1", port))
    reader, writer = conn  # type: ignore[misc]
    head = (
        f"POST /api/v1/ingest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)  # type: ignore[attr-defined]
    status, answer, close = await read_answer(reader, "POST /api/v1/ingest")  # type: ignore[arg-type]
    if close:
        drop(conn)
    return status, answer


def drop(conn: list[object]) -> None:
    if conn:
        conn[1].close()  # type: ignore[attr-defined]
        conn.clear()


async def agent(
    port: int, token: str, batches: list[bytes], tally: Tally, started: float, rng: random.Random
) -> None:
    conn: list[object] = []
    failures = 0
    for body in batches:
        while True:
            tally.requests += 1
            after: float | None = None
            try:
                status, answer = await asyncio.wait_for(exchange(port, conn, token, body), TIMEOUT_S)
            except TimeoutError:
                tally.timeouts += 1
                drop(conn)
                status = 0
            except OSError:
                tally.errors += 1
                drop(conn)
                status = 0
            if status == 200:
                result = json.loads(answer)
                tally.accepted += result["accepted"]
                tally.duplicates += result["duplicates"]
                failures = 0
                break
            if status == 503:
                tally.refused += 1
            elif status:
                tally.errors += 1
            failures += 1
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(failures - 1, 62))
            await asyncio.sleep(after if after is not None else rng.uniform(0, ceiling))
    drop(conn)
    tally.done_at.append(time.monotonic() - started)


def run_row(
    spec: str, args: argparse.Namespace, tmp: Path, work: dict[str, list[bytes]]
) -> dict[str, object]:
    limit, _, wait = spec.partition(":")
    if args.pg_url:
        url = pg_database(
            args.pg_url, f"bench_herd_{limit}_{wait or 'default'}".replace(".", "_"), create=True
        )
    else:
        url = f"sqlite:///{tmp}/herd-{limit}-{wait or 'default'}.db"
    env = {
        **os.environ,
        "SPLITWATCH_DATABASE_URL": url,
        "SPLITWATCH_LOG_LEVEL": "warning",
        "SPLITWATCH_INGEST_MAX_IN_FLIGHT": limit,
        **({"SPLITWATCH_INGEST_MAX_WAIT_S": wait} if wait else {}),
    }
    subprocess.run([SPLITWATCH, "db", "upgrade"], env=env, check=True, capture_output=True)
    engine = make_engine(url)
    with engine.begin() as conn:
        tokens = {h: create_token(conn, "agent", h)[0] for h in work}
    engine.dispose()
    port = free_port()
    server = subprocess.Popen([SPLITWATCH, "serve", "--port", str(port)], env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            wait_ready(client)
        rss_before = memory_kb(server.pid)["VmRSS"]
        cpu_before = cpu_seconds(server.pid)
        tally = Tally()

        async def herd() -> float:
            started = time.monotonic()
            rng = random.Random(spec)
            tasks = [asyncio.create_task(agent(port, tokens[h], work[h], tally, started, rng)) for h in work]
            _, pending = await asyncio.wait(tasks, timeout=args.bound_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return time.monotonic() - started

        elapsed = asyncio.run(herd())
        return {
            "limit": spec,
            "agents_done": len(tally.done_at),
            "drain_s": max(tally.done_at) if len(tally.done_at) == len(work) else float("inf"),
            "elapsed_s": elapsed,
            "p50_done_s": sorted(tally.done_at)[len(tally.done_at) // 2] if tally.done_at else float("inf"),
            "tally": tally,
            "cpu_s": cpu_seconds(server.pid) - cpu_before,
            "rss_before_mb": rss_before / 1024,
            "hwm_mb": memory_kb(server.pid)["VmHWM"] / 1024,
        }
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        if args.pg_url:
            pg_database(args.pg_url, url.rsplit("/", 1)[1], create=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=1, help="backlog batches per agent")
    parser.add_argument("--events", type=int, default=1000, help="events per batch")
    parser.add_argument(
        "--limits", default="0,64:0,64:5", help="SPLITWATCH_INGEST_MAX_IN_FLIGHT[:..._MAX_WAIT_S] per row"
    )
    parser.add_argument("--bound-s", type=float, default=300.0)
    parser.add_argument(
        "--pg-url",
        help="PostgreSQL instead of SQLite: an admin URL, e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres; each row gets a database of its own, "
        "dropped after (the server's CPU and memory are then serve's alone, not PostgreSQL's)",
    )
    args = parser.parse_args()

    at = datetime.now(UTC).replace(microsecond=0)
    work = {f"herd-{i:05d}": bodies(i, args.batches, args.events, at) for i in range(args.agents)}
    total = args.agents * args.batches * args.events
    print(
        f"{args.agents} agents x {args.batches} batches x {args.events} events = {total:,} events, "
        f"gzip {sum(len(b) for bs in work.values() for b in bs) / 1e6:.1f} MB; all start at once"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-herd-") as tmp:
        for spec in args.limits.split(","):
            row = run_row(spec, args, Path(tmp), work)
            rows.append(row)
            t: Tally = row["tally"]  # type: ignore[assignment]
            print(
                f"limit {spec:>6}: {row['agents_done']}/{args.agents} agents done, drain "
                f"{row['drain_s']:.1f} s (half done by {row['p50_done_s']:.1f} s); {t.requests} requests, "
                f"{t.timeouts} timeouts, {t.refused} 503, {t.errors} other errors; stored {t.accepted:,} "
                f"+ {t.duplicates:,} answered as duplicates; server CPU {row['cpu_s']:.1f} s, peak RSS "
                f"{row['hwm_mb']:.0f} MB (idle {row['rss_before_mb']:.0f} MB)"
            )
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
