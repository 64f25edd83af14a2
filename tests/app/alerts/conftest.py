"""Fixtures for alerting tests: real HTTP receivers, a real Alertmanager, a backend with a short
evaluation interval, and helpers to make alerts fire through the real ingest route.

    Receiver          a threaded http.server on 127.0.0.1 recording every request (headers,
                      body, time) and answering what the test scripts: `.answer(status,
                      headers, body, delay_s)` for every request, `.script([...])` for the next
                      ones in turn; `.stop()` / `.start()` for a receiver that is down then up.
    receiver          one Receiver, stopped at teardown
    alerting          a Server (tests.app.conftest) with alert_interval 0.3 s, private webhook
                      URLs allowed, short backoff; `.admin`, `.viewer` clients, `.ingest(host,
                      ...)` through the real route, `.webhook(url)`, `.rule(...)`, `.alerts()`;
                      make_alerting(**settings) for other settings
    alertmanager      a real prometheus-alertmanager (Debian 0.25) on 127.0.0.1 with a webhook
                      receiver; skipped with the reason locally, a failure under CI=true
    poll(fn, what)    polls fn() until it returns something truthy, bounded (no timed asserts)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from agent.payload import Action, Kind
from app.settings import Settings
from tests.app.conftest import Server, Tokens, auth, free_port
from tests.app.ingest.payloads import event, host_info, payload, state
from tests.conftest import require

T = TypeVar("T")

POLL_BOUND_S = 60.0


def poll(fn: Callable[[], T], what: str, timeout_s: float = POLL_BOUND_S) -> T:
    """fn()'s first truthy result; fails with `what` after a generous bound (liveness only)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout_s}s waiting for: {what}", pytrace=False)
        time.sleep(0.1)


# ------------------------------------------------------------------------------ receivers


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0


class Receiver:
    """A webhook receiver on 127.0.0.1; what it answers is up to the test."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[Request] = []
        self._default = Answer()
        self._script: list[Answer] = []
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0  # most requests it was answering at once
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def answer(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: bytes = b"ok",
        delay_s: float = 0.0,
    ) -> None:
        self._default = Answer(status, headers or {}, body, delay_s)

    def script(self, answers: Sequence[Answer]) -> None:
        with self._lock:
            self._script = list(answers)

    def _next(self) -> Answer:
        with self._lock:
            return self._script.pop(0) if self._script else self._default

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Request(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                        )
                    )
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                a = receiver._next()
                if a.delay_s:
                    time.sleep(a.delay_s)
                try:
                    self.send_response(a.status)
                    for k, v in a.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(a.body)))
                    self.end_headers()
                    self.wfile.write(a.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting (a slow-receiver test)
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self, notice: str | None = None) -> list[Any]:
        with self._lock:
            out = [r.json() for r in self.requests]
        if notice is None:
            return out
        return [b for b in out if b.get("status") == notice]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


# ------------------------------------------------------------------------------ a backend that alerts


def alerting_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "log_level": "warning",
        "alert_interval": 0.3,
        "webhook_allow_private": True,
        "webhook_backoff_cap_s": 0.4,
        "webhook_timeout_s": 2.0,
        "webhook_max_attempts": 4,
        "public_url": "https://splitwatch.example.com",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Alerting:
    server: Server
    tokens: Tokens
    admin: httpx.Client
    viewer: httpx.Client
    seq: int = 0

    def agent(self, host: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30, headers=auth(self.tokens.agent(host)))

    def ingest(
        self,
        host: str,
        *,
        guest: str | None = "vm-1",
        n: int = 1,
        action: Action = Action.WARN,
        kind: Kind = Kind.SPLIT_LOCK,
        at: datetime | None = None,
        mode: str | None = None,
        sld_on: Sequence[bool] | None = None,
        gaps: Sequence[Any] = (),
    ) -> None:
        """Send n events (and optionally a state sample and gaps) for `host` through POST /ingest."""
        at = at or datetime.now(UTC)
        evs = []
        for _ in range(n):
            self.seq += 1
            evs.append(event(self.seq, at, guest=guest, action=action, kind=kind))
        st = None
        if mode is not None or sld_on is not None:
            from agent.payload import Mode

            st = state(at=at, mode=Mode(mode or "warn"), sld_on=tuple(sld_on or (True, True, True, True)))
        body = payload(evs, st, gaps, host=host_info(name=host))
        with self.agent(host) as client:
            r = client.post(
                "/api/v1/ingest", content=body.to_json(), headers={"Content-Type": "application/json"}
            )
        assert r.status_code == 200, r.text

    def webhook(self, url: str, **fields: Any) -> dict[str, Any]:
        r = self.admin.post("/api/v1/webhooks", json={"url": url, **fields})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def rule(self, **fields: Any) -> dict[str, Any]:
        r = self.admin.post("/api/v1/alert-rules", json=fields)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def disable_builtins(self) -> None:
        for rule in self.viewer.get("/api/v1/alert-rules").json()["items"]:
            if rule["builtin"]:
                r = self.admin.patch(f"/api/v1/alert-rules/{rule['id']}", json={"enabled": False})
                assert r.status_code == 200, r.text

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        r = self.viewer.get("/api/v1/alerts", params=params)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def deliveries(self, webhook_id: int) -> list[dict[str, Any]]:
        r = self.admin.get(f"/api/v1/webhooks/{webhook_id}/deliveries")
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


def recent(seconds: float = 5) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


@pytest.fixture
def make_alerting(migrated_db_url: str) -> Iterator[Callable[..., Alerting]]:
    """make_alerting(**settings overrides) -> a started Alerting (one per test)."""
    made: list[Alerting] = []

    def make(**overrides: Any) -> Alerting:
        srv = Server(alerting_settings(migrated_db_url, **overrides))
        srv.start()
        tokens = Tokens(migrated_db_url)
        admin = httpx.Client(base_url=srv.url, timeout=30, headers=auth(tokens.admin()))
        viewer = httpx.Client(base_url=srv.url, timeout=30, headers=auth(tokens.viewer()))
        made.append(Alerting(srv, tokens, admin, viewer))
        return made[-1]

    yield make
    for a in made:
        a.admin.close()
        a.viewer.close()
        a.server.stop()


@pytest.fixture
def alerting(make_alerting: Callable[..., Alerting]) -> Alerting:
    return make_alerting()


# ------------------------------------------------------------------------------ Alertmanager

ALERTMANAGER = "prometheus-alertmanager"


@dataclass
class Alertmanager:
    url: str
    receiver: Receiver
    proc: subprocess.Popen[bytes]
    log: Path

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=10)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()
        return items


def require_alertmanager() -> str:
    path = shutil.which(ALERTMANAGER)
    require(
        path is not None,
        "no prometheus-alertmanager: apt-get install --no-install-recommends prometheus-alertmanager",
    )
    assert path is not None
    return path


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    binary = require_alertmanager()
    hook = Receiver().start()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: hook\n  group_by: ['alertname']\n  group_wait: 0s\n  group_interval: 1s\n"
        "  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n"
        f"      - url: {hook.url}\n        send_resolved: true\n"
    )
    port = free_port()
    log = tmp_path / "alertmanager.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 (the child owns it)
    )
    am = Alertmanager(f"http://127.0.0.1:{port}", hook, proc, log)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"alertmanager exited:\n{log.read_text()}", pytrace=False)
        try:
            return httpx.get(f"{am.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    poll(ready, "alertmanager to be ready")
    yield am
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    hook.stop()
