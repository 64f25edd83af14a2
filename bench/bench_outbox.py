"""How fast an outage's webhook notices reach a receiver (issue 13, app/alerts/outbox.py).

A fleet-wide outage writes one notice per alert: 1,000 AgentSilent alerts are 1,000 notices per
webhook, delivered one at a time per webhook, oldest first. This bench enqueues N notices the
way the evaluator does (alert rows of the built-in AgentSilent rule, `outbox.notify`) on a
migrated SQLite file, runs the real sender with the app's writer against a receiver on
127.0.0.1 (uvicorn in its own process, answering 200 after --receiver-ms), and times until
every delivery is recorded `delivered`.

Baseline, same run: the same N signed bodies POSTed one after another by one httpx client to
the same receiver (what the network and the receiver allow). Printed: the drain time, notices/s,
and the ratio of the sender's rate to the baseline's.

Before the sender woke itself after each delivery (#13, tenth pass) it sent one notice per
webhook per poll (SENDER_POLL_S, 1 s): N notices took N seconds whatever the receiver did.

Run: .venv/bin/python bench/bench_outbox.py [--notices 1000] [--receiver-ms 0] [--rounds 3]
Bounded: about rounds x (2 x drain time) plus set-up (~20 s with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import Engine, delete, func, insert, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ingest import free_port  # noqa: E402
from bench_series import migrate  # noqa: E402

from app.alerts import outbox  # noqa: E402
from app.alerts.evaluate import ensure_builtin_rules  # noqa: E402
from app.alerts.outbox import Sender  # noqa: E402
from app.alerts.signing import signed_headers  # noqa: E402
from app.ingest.writer import make_writer  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store import alerting as store  # noqa: E402
from app.store.engine import make_engine  # noqa: E402
from app.store.tables import alert, alert_rule, webhook_delivery  # noqa: E402

RECEIVER_APP = """
import asyncio, sys
import uvicorn

DELAY = float(sys.argv[2]) / 1000

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if DELAY:
        await asyncio.sleep(DELAY)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False)
"""
SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


def start_receiver(port: int, delay_ms: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER_APP, str(port), str(delay_ms)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/", content=b"x", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("bench: the receiver did not come up within 30 s")


def enqueue(engine: Engine, settings: Settings, n: int, webhook_id: int) -> list[str]:
    """n AgentSilent alerts with their notices, as the evaluator writes them; the bodies."""
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(delete(webhook_delivery))
        conn.execute(delete(alert))
        ensure_builtin_rules(conn, now)
        rule_id = conn.execute(select(alert_rule.c.id).where(alert_rule.c.name == "AgentSilent")).scalar_one()
        hooks = outbox.enabled_webhooks(conn)
        for i in range(n):
            labels = {"alertname": "AgentSilent", "host": f"kvm-{i:05d}", "severity": "warning"}
            alert_id = conn.execute(
                insert(alert)
                .values(
                    rule_id=rule_id,
                    fingerprint=f"{i:016x}",
                    labels=labels,
                    annotations={"summary": f"host kvm-{i:05d}: agent silent for 6m"},
                    status="firing",
                    value=360,
                    pending_since=now,
                    starts_at=now,
                    ends_at=None,
                    last_evaluated_at=now,
                    notified_at=now,
                )
                .returning(alert.c.id)
            ).scalar_one()
            outbox.notify(conn, hooks, alert_id, settings, now)
        bodies = conn.execute(
            select(webhook_delivery.c.body)
            .where(webhook_delivery.c.webhook_id == webhook_id)
            .order_by(webhook_delivery.c.id)
        ).scalars()
        return list(bodies)


def delivered(engine: Engine) -> int:
    with engine.connect() as conn:
        d = webhook_delivery
        query = select(func.count()).select_from(d).where(d.c.status == "delivered")
        return int(conn.execute(query).scalar_one())


class Leading:
    def held(self) -> bool:
        return True


async def drain(engine: Engine, settings: Settings, n: int, bound_s: float) -> float:
    """Seconds until the sender has recorded all n deliveries."""
    writer = make_writer(engine)
    writer.start()
    stop, wake = asyncio.Event(), asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(Sender(engine, writer, settings, Leading()).run(stop, wake))
    while True:
        done = await asyncio.to_thread(delivered, engine)
        elapsed = time.perf_counter() - started
        if done >= n or elapsed > bound_s:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task
    writer.stop()
    if done < n:
        print(f"  sender: {done} of {n} delivered within {bound_s:.0f} s (bounded)")
    return elapsed if done >= n else float("inf")


async def bare(url: str, bodies: list[str]) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10) as client:
        for i, body in enumerate(bodies):
            headers = signed_headers(SECRET, f"msg_bench{i}", body, dt.datetime.now(dt.UTC))
            headers["content-type"] = "application/json"
            response = await client.post(url, content=body.encode(), headers=headers)
            response.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notices", type=int, default=1000)
    parser.add_argument("--receiver-ms", type=float, default=0.0, help="the receiver's time per answer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bound-s", type=float, default=300.0, help="give a drain up after this long")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        url = f"sqlite:///{tmp}/outbox.db"
        migrate(url)
        engine = make_engine(url)
        settings = Settings(database_url=url, webhook_allow_private=True, public_url="https://sw.example.com")
        port = free_port()
        receiver = start_receiver(port, args.receiver_ms)
        hook_url = f"http://127.0.0.1:{port}/hook"
        try:
            with engine.begin() as conn:
                hook = {"url": hook_url, "format": "alertmanager", "secret": SECRET, "match": {}}
                webhook_id = store.insert_webhook(conn, {**hook, "enabled": True}, dt.datetime.now(dt.UTC))
            sender_s: list[float] = []
            bare_s: list[float] = []
            for r in range(args.rounds):
                bodies = enqueue(engine, settings, args.notices, webhook_id)
                bare_s.append(asyncio.run(bare(hook_url, bodies)))
                sender_s.append(asyncio.run(drain(engine, settings, args.notices, args.bound_s)))
                print(
                    f"round {r + 1}: sender {sender_s[-1]:.2f} s, bare POSTs {bare_s[-1]:.2f} s "
                    f"({args.notices} notices, receiver {args.receiver_ms:g} ms)"
                )
        finally:
            receiver.terminate()
            receiver.wait(10)
            engine.dispose()

    n = args.notices
    s, b = statistics.median(sender_s), statistics.median(bare_s)
    ratio = statistics.median(bs / ss for bs, ss in zip(bare_s, sender_s, strict=True))
    print()
    print(f"{'':24} {'drain s':>8} {'notices/s':>10}")
    print(f"{'bare httpx POSTs':24} {b:8.2f} {n / b:10.0f}")
    print(f"{'splitwatch sender':24} {s:8.2f} {n / s:10.0f}   x bare {ratio:.2f}")
    poll = outbox.SENDER_POLL_S
    print(f"one notice per poll ({poll:g} s), the sender before: {n * poll:.0f} s")
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
