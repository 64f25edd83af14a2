"""Alerting with `splitwatch serve` as real processes (issue 12):

- a backend killed with SIGKILL between the state change and the send delivers every
  notification once after the restart (the outbox), none twice;
- two worker processes on PostgreSQL fire each alert once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.alerts.conftest import Receiver, poll
from tests.app.conftest import Tokens, _pg, _Postgres, auth, free_port, upgrade
from tests.app.ingest.payloads import event, host_info, payload

SPLITWATCH = Path(sys.executable).parent / "splitwatch"

pytestmark = pytest.mark.slow


class Serve:
    """`splitwatch serve` in its own process group, restartable, killed at teardown."""

    def __init__(self, database_url: str, tmp_path: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"serve-{self.port}.log"
        self.env = {
            **os.environ,
            "SPLITWATCH_DATABASE_URL": database_url,
            "SPLITWATCH_PORT": str(self.port),
            "SPLITWATCH_WORKERS": str(workers),
            "SPLITWATCH_ALERT_INTERVAL": "0.3",
            "SPLITWATCH_WEBHOOK_ALLOW_PRIVATE": "true",
            "SPLITWATCH_WEBHOOK_BACKOFF_CAP_S": "0.5",
            "SPLITWATCH_WEBHOOK_MAX_ATTEMPTS": "1000",
            "SPLITWATCH_LOG_LEVEL": "info",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Serve:
        self.proc = subprocess.Popen(
            [str(SPLITWATCH), "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 (the child owns it)
            start_new_session=True,
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"splitwatch serve exited:\n{self.log.read_text()}", pytrace=False)
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        poll(up, "splitwatch serve to be ready")
        return self

    def kill(self) -> None:
        """SIGKILL to the whole process group (the uvicorn supervisor and its workers)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for s in started:
        s.stop()


def send_events(url: str, tokens: Tokens, host: str, guests: list[str], first_seq: int) -> None:
    now = datetime.now(UTC)
    evs = [event(first_seq + i, now, guest=g) for i, g in enumerate(guests)]
    body = payload(evs, host=host_info(name=host)).to_json()
    r = httpx.post(
        f"{url}/api/v1/ingest",
        content=body,
        timeout=30,
        headers={**auth(tokens.agent(host)), "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text


def configure(url: str, admin: dict[str, str], hook_url: str) -> dict[str, Any]:
    r = httpx.post(
        f"{url}/api/v1/alert-rules",
        headers=admin,
        timeout=30,
        json={"name": "t", "type": "threshold", "group_by": "guest", "window": "10m", "threshold": 1},
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{url}/api/v1/webhooks", headers=admin, json={"url": hook_url, "match": {"alertname": "t"}}
    )
    assert r.status_code == 201, r.text
    hook: dict[str, Any] = r.json()
    return hook


def deliveries(url: str, admin: dict[str, str], hook_id: int) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/webhooks/{hook_id}/deliveries", headers=admin, timeout=30)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_backend_killed_between_state_change_and_send_delivers_every_notice_once_after_restart(
    tmp_path: Path, serves: list[Serve]
) -> None:
    db = f"sqlite:///{tmp_path / 'splitwatch.db'}"
    upgrade(db)
    tokens = Tokens(db)
    admin = auth(tokens.admin())
    receiver = Receiver()  # not listening: every send fails until it starts
    serve = Serve(db, tmp_path)
    serves.append(serve)
    serve.start()
    hook = configure(serve.url, admin, receiver.url)
    guests = [f"vm-{i}" for i in range(5)]
    send_events(serve.url, tokens, "kvm-k", guests, 1)

    # The alerts changed state and their notices sit in the outbox, not yet sent.
    def queued_and_tried() -> bool:
        items = deliveries(serve.url, admin, hook["id"])
        return len(items) == 5 and any(d["attempts"] >= 2 for d in items)

    poll(queued_and_tried, "five notices queued, the first tried")
    assert all(d["status"] == "pending" for d in deliveries(serve.url, admin, hook["id"]))
    serve.kill()

    receiver.start()
    try:
        serve.start()
        poll(
            lambda: all(d["status"] == "delivered" for d in deliveries(serve.url, admin, hook["id"])),
            "every notice delivered after the restart",
        )
        # Another kill and restart with everything delivered: nothing is sent again.
        serve.kill()
        serve.start()
        seen = len(receiver.requests)
        r = httpx.get(f"{serve.url}/api/v1/alerts", params={"status": "firing", "rule": "t"}, headers=admin)
        before = {a["fingerprint"]: a["last_evaluated_at"] for a in r.json()["items"]}

        def evaluated_again() -> bool:
            r = httpx.get(
                f"{serve.url}/api/v1/alerts", params={"status": "firing", "rule": "t"}, headers=admin
            )
            return all(a["last_evaluated_at"] > before[a["fingerprint"]] for a in r.json()["items"])

        poll(evaluated_again, "the restarted backend to evaluate")
        assert len(receiver.requests) == seen == 5
        ids = Counter(r.headers["webhook-id"] for r in receiver.requests)
        assert all(n == 1 for n in ids.values())
        fired = Counter(b["alerts"][0]["labels"]["guest"] for b in receiver.bodies("firing"))
        assert fired == dict.fromkeys(guests, 1)
    finally:
        receiver.stop()


@pytest.mark.postgres
def test_two_workers_on_postgresql_fire_each_alert_once(
    tmp_path: Path, serves: list[Serve], _postgres: _Postgres, receiver: Receiver
) -> None:
    _pg(_postgres)
    db = _postgres.create()
    try:
        upgrade(db)
        tokens = Tokens(db)
        admin = auth(tokens.admin())
        serve = Serve(db, tmp_path, workers=2)
        serves.append(serve)
        serve.start()
        hook = configure(serve.url, admin, receiver.url)
        guests = [f"vm-{i}" for i in range(8)]
        send_events(serve.url, tokens, "kvm-pg", guests[:4], 1)
        send_events(serve.url, tokens, "kvm-pg", guests[4:], 100)
        poll(lambda: len(receiver.bodies("firing")) >= 8, "eight firing notices")
        r = httpx.get(f"{serve.url}/api/v1/alerts", params={"rule": "t"}, headers=admin)
        before = {a["fingerprint"]: a["last_evaluated_at"] for a in r.json()["items"]}

        def evaluated_again() -> bool:
            r = httpx.get(f"{serve.url}/api/v1/alerts", params={"rule": "t"}, headers=admin)
            return all(a["last_evaluated_at"] > before[a["fingerprint"]] for a in r.json()["items"])

        for _ in range(3):  # several more evaluation rounds: still nothing twice
            poll(evaluated_again, "another evaluation")
            before = {
                a["fingerprint"]: a["last_evaluated_at"]
                for a in httpx.get(f"{serve.url}/api/v1/alerts", params={"rule": "t"}, headers=admin).json()[
                    "items"
                ]
            }
        fired = Counter(b["alerts"][0]["labels"]["guest"] for b in receiver.bodies("firing"))
        assert fired == dict.fromkeys(guests, 1)
        assert len(before) == 8  # one alert row per label set
        assert all(d["status"] == "delivered" for d in deliveries(serve.url, admin, hook["id"]))
        # Both workers served: the log names two processes.
        log = serve.log.read_text()
        assert (
            log.count("Started server process") >= 2 or log.count("Waiting for application startup") >= 2
        ), log
    finally:
        for s in serves:
            s.stop()
        _postgres.drop(db)
