"""Fixtures for backend tests: real databases, a real uvicorn, real tokens.

    db_url           a fresh, EMPTY database, parametrized: "sqlite" (a file in tmp_path) and
                     "postgres" (CREATE DATABASE sw_test_<random> on the server at PG_URL,
                     dropped afterwards; skipped via require() when PostgreSQL is unreachable,
                     a failure under CI=true). Limit a test to one engine with
                     `@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)`.
    migrated_db_url  db_url upgraded to the migration head. SQLite: a copy of one file migrated
                     once per session (a migration costs ~0.1-0.2 s, a copy ~1 ms). PostgreSQL:
                     one migrated database per session, every table TRUNCATEd (RESTART
                     IDENTITY) before each test (CREATE DATABASE per test cost ~1 s); a test
                     using it gets the same URL from db_url.
    engine           a SQLAlchemy Engine on migrated_db_url (disposed afterwards).
    settings         Settings(database_url=migrated_db_url, log_level="warning"); override
                     fields in a test with `settings.model_copy(update={...})`.
    server           a real uvicorn serving create_app(settings) on 127.0.0.1:<free port>, in
                     a background thread: `.url`, `.app`, `.stop()`, `.start()` (a new app
                     on the same port and database: an outage and a restart). Build your own
                     with `Server(settings, configure=fn)` to add test routes to the app.
                     No 500, ever (issue 14): every Server counts the 500s it answers (any
                     route, and splitwatch_ingest_requests_total{status="500"}) and stop()
                     fails the test that caused one, naming the requests; only
                     `Server(..., allow_500=True)` (tests of the 500 answer itself) opts out.
    tokens           creates tokens in the server's database: `tokens.agent("h1")`,
                     `tokens.viewer()`, `tokens.admin()` → the raw token; `auth(token)` makes
                     the header dict.
    client           an httpx.Client with base_url=server.url and no token.
    viewer_client    the same with a viewer token; agent_client(host) via `tokens`.

And plain helpers: `assert_error(response, status, code=None)` checks the one error shape
(`from tests.app.conftest import assert_error`), returns the body; `waiting_on_locks(engine)`
counts the PostgreSQL sessions of the engine's database waiting for a lock.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, make_url, text

from app.settings import Settings
from tests.conftest import PG_URL, require

# --------------------------------------------------------------------------- helpers


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response has `status` and the one error shape; returns the body."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    body = response.json()
    assert set(body) == {"error", "message", "details"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str) and len(body["message"]) > 10, body
    assert body["details"] is None or isinstance(body["details"], list), body
    if code is not None:
        assert body["error"] == code, body
    return body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upgrade(url: str, revision: str = "head", *, down: bool = False) -> None:
    """Migrate `url` to `revision` (head: the way `splitwatch db upgrade` does; `down`: back)."""
    from app.store.engine import make_engine
    from app.store.schema_check import migrate

    engine = make_engine(url)
    try:
        migrate(engine, revision, down=down)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- PostgreSQL


class _Postgres:
    """Databases on the test server.

    CREATE DATABASE costs the better part of a second, so tests that want a migrated
    database share ONE per session, emptied (TRUNCATE ... RESTART IDENTITY) before each test:
    fresh data, same schema. Tests that want an empty database get a new one each.
    """

    def __init__(self) -> None:
        self._error: str | None = None
        self._checked = False
        self._shared: str | None = None
        self._created: list[str] = []

    def _admin(self) -> Any:
        import psycopg

        url = make_url(PG_URL)
        return psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
            connect_timeout=3,
        )

    def available(self) -> tuple[bool, str]:
        if not self._checked:
            self._checked = True
            try:
                self._admin().close()
            except Exception as exc:
                self._error = (
                    f"PostgreSQL at {PG_URL} unreachable ({exc}): start it or set SPLITWATCH_TEST_PG_URL"
                )
        return self._error is None, self._error or ""

    def _url(self, name: str) -> str:
        return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    def create(self) -> str:
        """A new, empty database."""
        name = f"sw_test_{secrets.token_hex(6)}"
        with self._admin() as admin:
            admin.execute(f"CREATE DATABASE {name}")
        url = self._url(name)
        self._created.append(url)
        return url

    def migrated(self) -> str:
        """The session's migrated database, every table emptied."""
        if self._shared is None:
            url = self.create()
            upgrade(url)
            self._shared = url
            return url
        import psycopg

        from app.store.schema_check import head_revision
        from app.store.tables import metadata

        url = make_url(self._shared)
        tables = ", ".join(f'"{t}"' for t in metadata.tables)
        # Connections an earlier test left in a pool it never disposed (an engine of a stopped
        # app, a worker thread's) would pile up over the session until PostgreSQL refuses new
        # clients (max_connections 100): end every one still open on the shared database. A
        # live engine reconnects (app/store/engine.py replaces a dead connection on checkout).
        with self._admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (url.database,),
            )
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
        ) as conn:
            conn.execute(f"TRUNCATE TABLE {tables} RESTART IDENTITY CASCADE")
            # A test may have moved the revision (readiness tests): back to head.
            conn.execute("DELETE FROM alembic_version")
            conn.execute("INSERT INTO alembic_version (version_num) VALUES (%s)", (head_revision(),))
        return self._shared

    def drop(self, url: str) -> None:
        if url == self._shared:
            return
        name = make_url(url).database
        with self._admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        if self._shared is not None:
            self._shared, shared = None, self._shared
            self.drop(shared)


@pytest.fixture(scope="session")
def _postgres() -> Iterator[_Postgres]:
    pg = _Postgres()
    yield pg
    pg.close()


def _pg(pg: _Postgres) -> None:
    ok, reason = pg.available()
    require(ok, reason)


# --------------------------------------------------------------------------- databases


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, _postgres: _Postgres) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'splitwatch.db'}"
        return
    _pg(_postgres)
    if "migrated_db_url" in request.fixturenames:
        # The test migrates anyway: hand it the session's shared database (see _Postgres).
        yield _postgres.migrated()
        return
    url = _postgres.create()
    yield url
    _postgres.drop(url)


@pytest.fixture(scope="session")
def _sqlite_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head (per session, so per xdist worker). The migrations write
    schema only, no rows, so a copy is the database `upgrade` would have made; the engine is
    disposed before the copy, so the file holds everything (no -wal left beside it)."""
    path = tmp_path_factory.mktemp("sqlite-head") / "head.db"
    upgrade(f"sqlite:///{path}")
    assert not path.with_name("head.db-wal").exists()
    return path


@pytest.fixture
def migrated_db_url(db_url: str, request: pytest.FixtureRequest) -> str:
    if db_url.startswith("sqlite"):
        target = Path(make_url(db_url).database or "")
        assert not target.exists(), f"{target} exists before it was migrated"
        shutil.copyfile(request.getfixturevalue("_sqlite_head"), target)
    # PostgreSQL: db_url is already the session's migrated database, emptied for this test.
    return db_url


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    from app.store.engine import make_engine

    eng = make_engine(migrated_db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(migrated_db_url: str) -> Settings:
    return Settings(database_url=migrated_db_url, log_level="warning")


# --------------------------------------------------------------------------- server


# Test servers' ports come from below the kernel's ephemeral range (32768-60999 here), each
# pytest-xdist worker from a slice of its own: a port the OS picked with bind(0) is released
# before the server binds it, and in that gap another worker's bind(0), or any outgoing
# connection's source port, could take it.
_PORTS_LOW, _PORTS_HIGH = 20000, 32000
_PORT_SLICE = (_PORTS_HIGH - _PORTS_LOW) // 8  # 8 workers at most


def _port_candidates() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = _PORTS_LOW + (int(worker) % 8 if worker.isdigit() else 0) * _PORT_SLICE
    start = secrets.randbelow(_PORT_SLICE)  # another run (a helper's, a second CI) starts elsewhere
    while True:
        for i in range(_PORT_SLICE):
            yield low + (start + i) % _PORT_SLICE


_next_port = _port_candidates()
_port_lock = threading.Lock()


def free_port() -> int:
    """A port nothing listens on now, and that no other worker of this run will be given."""
    with _port_lock:
        for _ in range(_PORT_SLICE):
            port = next(_next_port)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue  # in use (another run's server, a socket in TIME_WAIT)
                return port
    raise RuntimeError(f"no free port in this worker's slice of {_PORTS_LOW}-{_PORTS_HIGH}")


class ServerErrorCounter:
    """ASGI wrapper: notes every request answered 500 (or whose exception escaped the app)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        what = f"{scope['method']} {scope['path']}"

        async def send_noting(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 500:
                self.seen.append(what)
            await send(message)

        try:
            await self.app(scope, receive, send_noting)
        except BaseException as exc:
            self.seen.append(f"{what} (raised {type(exc).__name__})")
            raise


def waiting_on_locks(engine: Engine) -> int:
    """PostgreSQL: how many sessions of the engine's database wait for a lock now."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def ingest_500s(app: Any) -> float:
    """splitwatch_ingest_requests_total{status="500"} of `app` (0 when never counted)."""
    registry = getattr(app.state, "metrics_registry", None)
    if registry is None:
        return 0.0
    return float(registry.get_sample_value("splitwatch_ingest_requests_total", {"status": "500"}) or 0.0)


def _prompt_uvicorn() -> Any:
    """uvicorn.Server whose main loop notices should_exit within 10 ms instead of 100 ms: the
    suite stops well over a thousand servers, and each stop waited half a tick on average."""
    import asyncio

    import uvicorn

    class PromptServer(uvicorn.Server):
        async def main_loop(self) -> None:
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 1) % 864000
                await asyncio.sleep(0.01)

    return PromptServer


class Server:
    """A real uvicorn in a thread; stop() and start() again for outages (same port, same DB)."""

    def __init__(
        self,
        settings: Settings,
        port: int | None = None,
        configure: Callable[[Any], None] | None = None,
        allow_500: bool = False,
    ) -> None:
        self.settings = settings
        self.configure = configure  # called with each new app before it serves (test routes)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: Any = None
        self.allow_500 = allow_500
        self.errors: ServerErrorCounter | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        import uvicorn

        from app.main import create_app
        from app.server import uvicorn_options

        if self._thread is not None:
            raise RuntimeError("server already running")
        self.app = create_app(self.settings)
        if self.configure is not None:
            self.configure(self.app)
        self.errors = ServerErrorCounter(self.app)
        config = uvicorn.Config(
            self.errors,
            **uvicorn_options(self.settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = _prompt_uvicorn()(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                self._thread = None
                raise RuntimeError(f"uvicorn on port {self.port} exited during startup (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn on port {self.port} did not start within {timeout_s}s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._thread = None
        self._server = None
        self.check_no_500()

    def check_no_500(self) -> None:
        """Fail (AssertionError) if this server answered any request with 500."""
        if self.allow_500 or self.errors is None:
            return
        seen, counted = list(self.errors.seen), ingest_500s(self.app)
        if seen or counted:
            raise AssertionError(
                f"the server answered 500 (issue 14: no input may cause one): {seen[:10]}; "
                f'splitwatch_ingest_requests_total{{status="500"}} = {counted:g}'
            )

    @property
    def running(self) -> bool:
        return self._thread is not None


@pytest.fixture
def server(settings: Settings) -> Iterator[Server]:
    srv = Server(settings)
    srv.start()
    yield srv
    srv.stop()


class Tokens:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def create(self, role: str, host: str | None = None, label: str | None = None) -> str:
        from app.store.engine import make_engine
        from app.store.tokens import create_token

        engine = make_engine(self.database_url)
        try:
            with engine.begin() as conn:
                raw, _id = create_token(conn, role, host, label)
        finally:
            engine.dispose()
        return raw

    def agent(self, host: str = "host-1") -> str:
        return self.create("agent", host)

    def viewer(self) -> str:
        return self.create("viewer")

    def admin(self) -> str:
        return self.create("admin")


@pytest.fixture
def tokens(settings: Settings) -> Tokens:
    return Tokens(settings.database_url)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def viewer_client(server: Server, tokens: Tokens) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, headers=auth(tokens.viewer())) as c:
        yield c
