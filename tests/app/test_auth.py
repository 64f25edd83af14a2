"""Authentication comes before anything scarce (issue 14), through a real uvicorn.

Before issue 14 a read route took its pooled connection first and authentication then took a
second one: ~14 concurrent bogus-token requests emptied the pool and stalled every request,
ingest included. Now a request without a valid token takes no connection, a lookup's answer is
remembered (token_cache_ttl_s, token_negative_ttl_s), and one request holds at most one connection
at a time. Revocation across processes: tests/app/test_auth_cache.py.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import event as sa_event

from app.settings import Settings
from app.store.engine import make_engine
from app.store.tokens import find_token, revoke_token
from tests.app.conftest import Server, Tokens, assert_error, auth


def _background() -> bool:
    """The server's own threads (SQLite's WAL checkpoint, app/ingest/writer.py; /metrics' sums
    read from startup on, app/metrics.py) take connections on their own clock, not a request's."""
    return threading.current_thread().name.startswith(("splitwatch-sqlite-checkpoint", "splitwatch-metrics-"))


class Checkouts:
    """Counts connections taken from the server's read pool by requests (not by _background
    threads)."""

    def __init__(self, server: Server) -> None:
        self.n = 0
        self.out = 0
        self.most = 0

        def checkout(*_args: object) -> None:
            if _background():
                return
            self.n += 1
            self.out += 1
            self.most = max(self.most, self.out)

        def checkin(*_args: object) -> None:
            if _background():
                return
            self.out -= 1

        sa_event.listen(server.app.state.engine.pool, "checkout", checkout)
        sa_event.listen(server.app.state.engine.pool, "checkin", checkin)


def _server(settings: Settings, **update: object) -> Iterator[Server]:
    srv = Server(settings.model_copy(update=update))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def uncached(settings: Settings) -> Iterator[Server]:
    yield from _server(settings, token_cache_ttl_s=0)


def test_requests_without_a_usable_token_take_no_database_connection(server: Server) -> None:
    pool = Checkouts(server)
    with httpx.Client(base_url=server.url) as c:
        for headers in (
            {},
            auth("not-a-splitwatch-token"),
            auth("sw_" + "x" * 300),
            {"Authorization": "Basic x"},
        ):
            assert_error(c.get("/api/v1/hosts", headers=headers), 401)
    assert pool.n == 0


def test_a_bogus_token_repeated_is_looked_up_once(server: Server) -> None:
    pool = Checkouts(server)
    bogus = auth("sw_" + secrets.token_urlsafe(32))
    with httpx.Client(base_url=server.url) as c:
        for _ in range(20):
            assert_error(c.get("/api/v1/events", headers=bogus), 401, "invalid_token")
    assert pool.n == 1


def test_a_read_holds_one_connection_even_when_its_token_is_looked_up(
    settings: Settings, tokens: Tokens
) -> None:
    # One connection for reads (SQLite's writer keeps one more of the same pool for itself):
    # before issue 14 the route held it while authentication waited for a second, and the
    # request answered 500 after the pool timeout.
    extra = 1 if settings.database_url.startswith("sqlite") else 0
    srv = next(
        _server(settings, token_cache_ttl_s=0, db_pool_size=1 + extra, db_max_overflow=0, db_pool_timeout_s=3)
    )
    try:
        pool = Checkouts(srv)
        with httpx.Client(base_url=srv.url, headers=auth(tokens.viewer())) as c:
            for path in ("/api/v1/hosts", "/api/v1/events", "/api/v1/summary", "/api/v1/series"):
                assert c.get(path).status_code == 200, path
        assert pool.most == 1
    finally:
        srv.stop()


def test_revoked_token_is_refused_within_the_cache_ttl(settings: Settings, tokens: Tokens) -> None:
    srv = next(_server(settings, token_cache_ttl_s=1))
    try:
        raw = tokens.viewer()
        with httpx.Client(base_url=srv.url, headers=auth(raw)) as c:
            assert c.get("/api/v1/hosts").status_code == 200
            engine = make_engine(settings.database_url)
            try:
                with engine.begin() as conn:
                    info = find_token(conn, raw)
                    assert info is not None
                    revoke_token(conn, info.id)
            finally:
                engine.dispose()
            deadline = time.monotonic() + 10  # 1 s TTL; generous for a loaded machine
            while c.get("/api/v1/hosts").status_code == 200:
                assert time.monotonic() < deadline, "a revoked token still worked 10 s later"
                time.sleep(0.1)
            assert_error(c.get("/api/v1/hosts"), 401, "invalid_token")
    finally:
        srv.stop()


def test_without_a_cache_a_revoked_token_is_refused_at_once(uncached: Server, tokens: Tokens) -> None:
    raw = tokens.viewer()
    with httpx.Client(base_url=uncached.url, headers=auth(raw)) as c:
        assert c.get("/api/v1/hosts").status_code == 200
        engine = make_engine(uncached.settings.database_url)
        try:
            with engine.begin() as conn:
                info = find_token(conn, raw)
                assert info is not None
                revoke_token(conn, info.id)
        finally:
            engine.dispose()
        assert_error(c.get("/api/v1/hosts"), 401, "invalid_token")


def test_a_token_revoked_through_the_api_stops_at_once_despite_the_cache(
    server: Server, tokens: Tokens
) -> None:
    with httpx.Client(base_url=server.url, headers=auth(tokens.admin())) as admin:
        made = admin.post("/api/v1/tokens", json={"role": "viewer"}).json()
        with httpx.Client(base_url=server.url, headers=auth(made["token"])) as viewer:
            assert viewer.get("/api/v1/hosts").status_code == 200  # now remembered
            assert admin.delete(f"/api/v1/tokens/{made['id']}").status_code == 204
            assert_error(viewer.get("/api/v1/hosts"), 401, "invalid_token")
