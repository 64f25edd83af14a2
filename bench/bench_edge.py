"""The HTTP edge of POST /api/v1/ingest: event-loop CPU per request, against a bare Starlette app.

bench_fleet.py measures the whole server; this bench isolates what the event loop spends on an
ingest request (the middlewares, dependencies, body read, validation, the answer), which is what
caps one process when the writer is not the bottleneck. It drives the real app (app.main's
create_app, a real SQLite file migrated and filled with one agent token per host by the CLI, the
lifespan run so the writer thread and the auth cache are live) in-process through its ASGI
interface, wrapped in uvicorn's ProxyHeadersMiddleware as `splitwatch serve` is, with bench_fleet's
steady-state agent payload (Bodies: per host its own name, SEQs, times and state sample; the full
state in one request of 12, `state: null` in the others, as the agent sends; --state-every) from
SENDERS concurrent tasks. No sockets: uvicorn's own HTTP parsing is the same for every app and
is left out.

Rows, measured in alternating rounds of the same run:
  bare      bench_fleet's bare Starlette app (json-decodes the body, answers {"accepted", ...})
  app       the real app, the writer storing every batch in SQLite
  app noop  the real app, the writer's job a no-op (write_batch answers "all accepted" without
            touching the database): the edge alone, writer queue and future hop included
Columns: requests/s (in-process, so not comparable to bench_fleet's), event-loop CPU ms per
request (the CPU time of the thread running the loop: the client tasks are in it too, a few
µs), all threads' CPU ms per request (writer and auth lookups included), the ratio of
event-loop CPU to bare's (median of the rounds' ratios) and the best round's event-loop CPU ms
(the least disturbed by other processes on a shared machine: many short rounds make it steady).

--profile: cProfile of the event-loop thread during the first round of each app row (cProfile
sees only the thread it is enabled in: exactly the loop), top functions by own and inclusive time.

Run: .venv/bin/python bench/bench_edge.py [--rounds 3] [--seconds 3] [--rows bare,app,noop]
     [--profile] [--top 30]
Bounded: about rounds x rows x seconds plus ~10 s of set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_fleet import HOSTS, SENDERS, Bodies, agent_payload, prepare_database  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware  # noqa: E402

# uvicorn and starlette type ASGI apps differently; any callable app(scope, receive, send).
ASGI = Any


def bare_app() -> Starlette:
    """bench_fleet's BARE_APP, built in this process."""

    async def ingest(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        return JSONResponse({"accepted": len(body["events"]), "duplicates": 0})

    return Starlette(routes=[Route("/api/v1/ingest", ingest, methods=["POST"])])


async def post(app: ASGI, token: str, body: bytes) -> int:
    """One POST /api/v1/ingest through the ASGI interface, as uvicorn would call it."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/api/v1/ingest",
        "raw_path": b"/api/v1/ingest",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", b"Bearer " + token.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "state": {},
    }
    sent = False
    done = asyncio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    done.set()
    if status != 200:
        raise RuntimeError(f"HTTP {status}")
    return status


class NoopJobs:
    """The app's writer, running a no-op job in place of each ingest write: the job still goes
    through the writer's queue, thread and future; it answers "every event accepted"."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    async def run(self, fn: Any) -> Any:
        from app.ingest.write import WriteResult

        rows = getattr(fn, "rows", None)  # app/ingest/write.py BatchJob
        if rows is None:  # not an ingest write (a token touch): run it
            return await self._writer.run(fn)
        n = len(rows.events)
        return await self._writer.run(lambda _conn: WriteResult(accepted=n, duplicates=0, host_id=0))


@dataclass
class Row:
    key: str
    label: str
    app: ASGI
    tokens: dict[str, str]
    rates: list[float] = field(default_factory=list)
    loop_ms: list[float] = field(default_factory=list)
    all_ms: list[float] = field(default_factory=list)
    passes: dict[str, int] = field(default_factory=dict)


async def load(row: Row, hosts: list[str], bodies: Bodies, seconds: float | None) -> int:
    """SENDERS tasks; seconds None: every host once (the warm-up)."""
    count = 0
    deadline = None if seconds is None else time.perf_counter() + seconds

    async def sender(j: int) -> None:
        nonlocal count
        mine = hosts[j::SENDERS]
        i = 0
        while True:
            if seconds is None and i >= len(mine):
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            host = mine[i % len(mine)]
            i += 1
            k = row.passes.get(host, 0)
            row.passes[host] = k + 1
            await post(row.app, row.tokens[host], bodies.body(host, f"{row.key}-{host}", k))
            count += 1

    await asyncio.gather(*(sender(j) for j in range(SENDERS)))
    return count


def print_profile(label: str, prof: cProfile.Profile, n: int, top: int) -> None:
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats(sort).print_stats(top)
        print(f"--- cProfile of the event loop, {label}, {n} requests, by {sort}")
        lines = out.getvalue().splitlines()
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        print("\n".join(lines[start : start + top + 1]))


async def run(args: argparse.Namespace, tmp: Path) -> list[Row]:
    from app.main import create_app
    from app.settings import Settings

    splitwatch = str(Path(sys.executable).with_name("splitwatch"))
    payload = agent_payload(splitwatch, tmp / "agent")
    bodies = Bodies(payload, datetime.now(UTC).replace(microsecond=0) - timedelta(days=2), args.state_every)
    hosts = [f"fleet-{i:04d}" for i in range(HOSTS)]
    print(
        f"payload: bench_fleet's agent payload, {bodies.n_events} events, "
        f"{len(bodies.body(hosts[0], 'b', 0))} bytes with the state, {len(bodies.body(hosts[0], 'b', 1))} "
        f"without; the state in every {args.state_every}th request of a host; "
        f"{SENDERS} concurrent tasks over {HOSTS} hosts"
    )
    wanted = args.rows.split(",")
    rows: list[Row] = []
    contexts = []
    if "bare" in wanted:
        bare = ProxyHeadersMiddleware(bare_app(), trusted_hosts="127.0.0.1")
        rows.append(Row("bare", "bare Starlette, json.loads only", bare, {h: "x" for h in hosts}))
    for key, label in (("app", "app, SQLite writer"), ("noop", "app, no-op writer job")):
        if key not in wanted:
            continue
        url = f"sqlite:///{tmp / (key + '.db')}"
        # This tree's CLI (run from a copy of this file in another tree, that tree's).
        tokens = prepare_database(splitwatch, url, hosts, tmp, {**os.environ, "PYTHONPATH": str(ROOT)})
        app = create_app(Settings(database_url=url, log_level="warning"))
        if key == "noop":
            app.state.writer = NoopJobs(app.state.writer)
        contexts.append(app.router.lifespan_context(app))
        rows.append(Row(key, label, ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1"), tokens))
    for ctx in contexts:
        await ctx.__aenter__()
    try:
        for row in rows:
            await load(row, hosts, bodies, None)  # warm-up: hosts, guests, caches
        for r in range(args.rounds):
            for row in rows:
                prof = cProfile.Profile() if args.profile and r == 0 and row.key != "bare" else None
                loop0, all0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
                if prof is not None:
                    prof.enable()
                n = await load(row, hosts, bodies, args.seconds)
                if prof is not None:
                    prof.disable()
                loop1, all1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
                row.rates.append(n / (wall1 - wall0))
                row.loop_ms.append((loop1 - loop0) / n * 1000)
                row.all_ms.append((all1 - all0) / n * 1000)
                if prof is not None:
                    print_profile(row.label, prof, n, args.top)
    finally:
        for ctx in reversed(contexts):
            await ctx.__aexit__(None, None, None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rows", default="bare,app,noop", help="comma list of bare, app, noop")
    parser.add_argument(
        "--state-every",
        type=int,
        default=12,
        help="as bench_fleet's --state-every: full state in every Nth request of a host, state null "
        "in the others (12, the default: what the agent sends; 1: the full state every time)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the loop in the first round")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_edge_") as tmp:
        rows = asyncio.run(run(args, Path(tmp)))
    bare = next((r for r in rows if r.key == "bare"), None)
    print(f"{args.rounds} rounds x {args.seconds:g} s per row, in-process ASGI")
    print(
        f"{'row':32} {'req/s':>7} {'loop ms/req':>11} {'all ms/req':>10} {'loop x bare':>11} {'best loop':>9}"
    )
    for row in rows:
        loop = statistics.median(row.loop_ms)
        ratio = (
            f"{statistics.median(a / b for a, b in zip(row.loop_ms, bare.loop_ms, strict=True)):11.2f}"
            if bare is not None
            else f"{'-':>11}"
        )
        print(
            f"{row.label:32} {statistics.median(row.rates):7.0f} {loop:11.3f} "
            f"{statistics.median(row.all_ms):10.3f} {ratio} {min(row.loop_ms):9.3f}"
        )
        print(f"{'':32} rounds loop ms: " + ", ".join(f"{v:.3f}" for v in row.loop_ms))


if __name__ == "__main__":
    main()
