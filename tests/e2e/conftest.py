"""End-to-end fixtures: a real uvicorn backend on SQLite and PostgreSQL, real agents as
subprocesses on fake hosts.

    backend          tests.app.conftest.Server on a fresh migrated database, parametrized:
                     "sqlite" (a file) and "postgres" (a new database on SPLITWATCH_TEST_PG_URL,
                     dropped afterwards; skipped with the reason when PostgreSQL is unreachable,
                     a failure under CI=true): `.url`, `.stop()` / `.start()` for outages (same
                     port, same database). One engine only: `@pytest.mark.parametrize("backend",
                     ["postgres"], indirect=True)`.
    terminate_db_sessions(url)  pg_terminate_backend on every session of that database but
                     the caller's own: what a PostgreSQL restart does to the server's
                     connections, without disturbing other databases on the same server
    tokens           Tokens on that database: `tokens.agent("host-1")`, `tokens.viewer()`
    agents           starts agents: `agents.start(host, token, **AgentConfig fields)` runs
                     agent.loop.run(AgentConfig(...)) in a new Python process (so tests can pass
                     small backoff caps and spool limits); `cli=True` runs `splitwatch agent`
                     itself. Every agent is SIGKILLed at teardown if still running.
    api              reads what the backend stored, as a user would: `api.events(host)`,
                     `api.gaps(host)` (viewer token, every page)

And `wait_until(predicate, what)`: polls until true, failing with `what` after a generous bound
(a liveness bound: a hang fails the test instead of blocking the suite).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.fakehost import FakeHost
from app.settings import Settings
from tests.app.conftest import Server, Tokens, _Postgres, auth, upgrade
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
SPLITWATCH = Path(sys.executable).parent / "splitwatch"

LAUNCHER = """
import json, sys
from pathlib import Path
from agent.config import AgentConfig
from agent.loop import run
cfg = json.loads(sys.argv[1])
for key in ("root", "spool_dir", "state_dir"):
    cfg[key] = Path(cfg[key])
sys.exit(run(AgentConfig(**cfg)))
"""


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 25.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting after {timeout_s}s: {what}", pytrace=False)
        time.sleep(0.2)


@pytest.fixture(scope="session")
def _e2e_postgres() -> Iterator[_Postgres]:
    pg = _Postgres()
    yield pg
    pg.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path, _e2e_postgres: _Postgres) -> Iterator[Server]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'splitwatch.db'}"
    else:
        ok, reason = _e2e_postgres.available()
        require(ok, reason)
        url = _e2e_postgres.create()
    upgrade(url)
    srv = Server(Settings(database_url=url, log_level="warning"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        if request.param == "postgres":
            _e2e_postgres.drop(url)


def terminate_db_sessions(url: str) -> int:
    """pg_terminate_backend every session on `url`'s database (not this one); how many."""
    import psycopg
    from sqlalchemy import make_url

    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database, autocommit=True
    ) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def tokens(backend: Server) -> Tokens:
    return Tokens(backend.settings.database_url)


@dataclass
class AgentProcess:
    args: list[str]
    stderr_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.stderr_path, "ab"),  # noqa: SIM115  (the child owns it)
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then the exit code (fails the test if it does not exit)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"agent did not exit {timeout_s}s after SIGTERM:\n{self.stderr}", pytrace=False)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Agents:
    tmp_path: Path
    server_url: str
    running: list[AgentProcess] = field(default_factory=list)

    def command(self, host: FakeHost, token: str, *, cli: bool = False, **config: Any) -> list[str]:
        base = self.tmp_path / f"agent-{host.hostname}"
        spool_dir = base / "spool"
        state_dir = base / "state"
        if cli:
            return [
                str(SPLITWATCH), "agent", "--server", self.server_url, "--token", token,
                "--root", str(host.root), "--interval", str(config.get("interval_s", 0.2)),
                "--spool", str(spool_dir), "--state-dir", str(state_dir), "--no-tracefs",
            ]  # fmt: skip
        cfg: dict[str, Any] = {
            "server": self.server_url,
            "token": token,
            "root": str(host.root),
            "spool_dir": str(spool_dir),
            "state_dir": str(state_dir),
            "interval_s": 0.2,
            "use_tracefs": False,
            "backoff_base_s": 0.05,
            "backoff_cap_s": 0.5,
            "timeout_s": 5.0,
            "shutdown_flush_s": 2.0,
        }
        cfg.update(config)
        return [sys.executable, "-c", LAUNCHER, json.dumps(cfg)]

    def start(self, host: FakeHost, token: str, *, cli: bool = False, **config: Any) -> AgentProcess:
        stderr = self.tmp_path / f"agent-{host.hostname}.stderr"
        agent = AgentProcess(self.command(host, token, cli=cli, **config), stderr).start()
        self.running.append(agent)
        return agent

    def spool_dir(self, host: FakeHost) -> Path:
        return self.tmp_path / f"agent-{host.hostname}" / "spool"


@pytest.fixture
def agents(tmp_path: Path, backend: Server) -> Iterator[Agents]:
    a = Agents(tmp_path, backend.url)
    yield a
    for agent in a.running:
        if agent.alive():
            agent.kill()


@dataclass
class Api:
    url: str
    token: str

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        response = httpx.get(self.url + path, params=params, headers=auth(self.token), timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def events(self, host: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"host": host, "since": "2000-01-01T00:00:00Z", "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = self._get("/api/v1/events", **params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def seqs(self, host: str, source: str = "kmsg") -> list[int]:
        return sorted(e["seq"] for e in self.events(host) if e["source"] == source)

    def gaps(self, host: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._get("/api/v1/gaps", host=host, since="2000-01-01T00:00:00Z")[
            "items"
        ]
        return items

    def reachable(self) -> bool:
        try:
            httpx.get(self.url + "/healthz", timeout=2)
        except httpx.HTTPError:
            return False
        return True


@pytest.fixture
def api(backend: Server, tokens: Tokens) -> Api:
    return Api(backend.url, tokens.viewer())
