"""No number of concurrent readers, with or without a valid token, stalls ingest (issue 14).

A real `splitwatch serve` (its own process, so the load below does not share its interpreter)
on SQLite and on PostgreSQL. While 8 agents each send their batches one after another, 64
requests with a bogus token and 64 viewer requests arrive at once, again half a second after
each such burst is answered, until the agents are done. Before issue 14, ~14 concurrent
bogus-token requests emptied the connection pool
(authentication took a second connection while the route held one) and every request, ingest
included, waited 30 s and answered 500.

What a user checks: every batch is stored, no ingest request stalls (the issue's p99 bar
of 1 s is printed with PASS/FAIL, beside the same agents' p99 with nobody reading, measured first), no
request answers 500, and the server's own splitwatch_ingest_requests_total has no status="500".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import Tokens, auth, free_port
from tests.app.ingest.payloads import event, host_info, payload, state

pytestmark = pytest.mark.slow

SPLITWATCH = str(Path(sys.executable).with_name("splitwatch"))
AGENTS = 8
BATCHES = 12  # per agent
EVENTS_PER_BATCH = 100
BOGUS = 64
VIEWERS = 64
P99_BAR_S = 1.0
STALL_S = 10.0  # no ingest request may wait this long: the old stall waited 30 s, then 500
BURST_GAP_S = 0.5
DEADLINE_S = 120.0  # the whole run; a stall shows as a failure, not a hung suite


def _serve(database_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "SPLITWATCH_DATABASE_URL": database_url,
        "SPLITWATCH_PORT": str(port),
        "SPLITWATCH_LOG_LEVEL": "warning",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen([SPLITWATCH, "serve"], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited during startup:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"serve did not become ready within 30 s:\n{log.read_text()}")


def _batch(host: str, n: int, now: datetime) -> bytes:
    first = n * EVENTS_PER_BATCH
    evs = [
        event(first + i, now - timedelta(seconds=EVENTS_PER_BATCH - i), guest=f"{host}-vm-{i % 4}")
        for i in range(EVENTS_PER_BATCH)
    ]
    return payload(evs, st=state(now), host=host_info(host)).to_json().encode()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(
    url: str, agent_tokens: dict[str, str], viewer: str, readers: bool = True
) -> dict[str, object]:
    now = datetime.now(UTC)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(60.0)
    ingest_s: list[float] = []
    ingest_status: Counter[int] = Counter()
    read_status: Counter[tuple[str, int]] = Counter()
    read_s: list[float] = []
    done = asyncio.Event()

    async def agent(host: str, token: str) -> None:
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
            for n in range(BATCHES):
                body = _batch(host, n, now)
                started = time.perf_counter()
                headers = {**auth(token), "Content-Type": "application/json"}
                r = await client.post("/api/v1/ingest", content=body, headers=headers)
                ingest_s.append(time.perf_counter() - started)
                ingest_status[r.status_code] += 1
                if r.status_code == 200:
                    assert r.json()["accepted"] == EVENTS_PER_BATCH, r.text

    paths = ["/api/v1/events?limit=100", "/api/v1/summary", "/api/v1/hosts", "/api/v1/series?group_by=host"]

    async def read(client: httpx.AsyncClient, i: int, token: str | None, kind: str) -> None:
        # A fresh bogus token each time: the worst case for a lookup cache.
        headers = auth(token or "sw_" + secrets.token_urlsafe(32))
        started = time.perf_counter()
        r = await client.get(paths[i % len(paths)], headers=headers)
        read_s.append(time.perf_counter() - started)
        read_status[(kind, r.status_code)] += 1

    async def bursts() -> int:
        # 64 bogus-token and 64 viewer requests at once, again and again (a pause of BURST_GAP_S
        # after each is answered) until the agents are done.
        # New connections for each burst: a connection left idle past the server's keep-alive
        # timeout during a long burst may be closed just as it is reused (a client retries that).
        n = 0
        while readers and not done.is_set():
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
                await asyncio.gather(
                    *(read(client, i, None, "bogus") for i in range(BOGUS)),
                    *(read(client, i, viewer, "viewer") for i in range(VIEWERS)),
                )
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), BURST_GAP_S)
        return n

    reader = asyncio.create_task(bursts())
    await asyncio.sleep(0.2)  # the first burst is in flight before the first batch
    started = time.perf_counter()
    await asyncio.gather(*(agent(h, t) for h, t in agent_tokens.items()))
    ingest_wall_s = time.perf_counter() - started
    done.set()
    n_bursts = await reader
    return {
        "ingest_s": ingest_s,
        "ingest_status": ingest_status,
        "read_status": read_status,
        "read_s": read_s,
        "ingest_wall_s": ingest_wall_s,
        "bursts": n_bursts,
    }


def test_bogus_tokens_and_viewers_at_once_do_not_stall_ingest(migrated_db_url: str, tmp_path: Path) -> None:
    tokens = Tokens(migrated_db_url)
    agent_tokens = {f"conc-{i}": tokens.agent(f"conc-{i}") for i in range(AGENTS)}
    # The same agents' work with nobody reading, first: printed beside the figures, so a slow
    # machine is told apart from readers that slow ingest down (bench/ habit: same-run baseline).
    alone_tokens = {f"alone-{i}": tokens.agent(f"alone-{i}") for i in range(AGENTS)}
    viewer = tokens.viewer()
    log = tmp_path / "server.log"
    proc, url = _serve(migrated_db_url, log)
    try:
        alone = asyncio.run(asyncio.wait_for(_load(url, alone_tokens, viewer, readers=False), DEADLINE_S))
        result = asyncio.run(asyncio.wait_for(_load(url, agent_tokens, viewer), DEADLINE_S))
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ingest_s = result["ingest_s"]
    read_s = result["read_s"]
    assert isinstance(ingest_s, list) and isinstance(read_s, list)
    figures = {
        "engine": migrated_db_url.split(":", 1)[0],
        "batches": len(ingest_s),
        "alone_ingest_p50_ms": round(_p(alone["ingest_s"], 0.50) * 1000, 1),  # type: ignore[arg-type]
        "alone_ingest_p99_ms": round(_p(alone["ingest_s"], 0.99) * 1000, 1),  # type: ignore[arg-type]
        "ingest_p50_ms": round(_p(ingest_s, 0.50) * 1000, 1),
        "ingest_p99_ms": round(_p(ingest_s, 0.99) * 1000, 1),
        "ingest_max_ms": round(max(ingest_s) * 1000, 1),
        "ingest_wall_s": round(float(result["ingest_wall_s"]), 2),  # type: ignore[arg-type]
        "bursts": result["bursts"],
        "reads": len(read_s),
        "read_p99_ms": round(_p(read_s, 0.99) * 1000, 1),
        "ingest_status": dict(result["ingest_status"]),  # type: ignore[call-overload]
        "read_status": {f"{k}:{s}": n for (k, s), n in result["read_status"].items()},  # type: ignore[attr-defined]
    }
    print("\nconcurrency figures:", json.dumps(figures))
    server_log = log.read_text()
    assert figures["ingest_status"] == {200: AGENTS * BATCHES}, (figures, server_log[-3000:])
    read_status = result["read_status"]
    assert isinstance(read_status, Counter)
    assert set(read_status) <= {("bogus", 401), ("viewer", 200)}, (figures, server_log[-3000:])
    assert read_status[("bogus", 401)] >= BOGUS and read_status[("viewer", 200)] >= VIEWERS
    assert 'splitwatch_ingest_requests_total{status="500"}' not in metrics
    assert f'splitwatch_ingest_requests_total{{status="200"}} {2 * AGENTS * BATCHES}.0' in metrics
    assert "Traceback" not in server_log, server_log[-3000:]
    # The bar (p99 < 1 s) is a speed figure: printed with its verdict, not asserted, since a
    # shared 2-core machine moves it by seconds. What a stall looked like before issue 14 (every
    # request waiting out the 30 s pool timeout) is asserted, with a tenfold margin over the bar.
    verdict = "PASS" if figures["ingest_p99_ms"] < P99_BAR_S * 1000 else "FAIL"
    print(f"ingest p99 {figures['ingest_p99_ms']} ms against the {P99_BAR_S:.0f} s bar: {verdict}")
    assert figures["ingest_max_ms"] < STALL_S * 1000, figures
