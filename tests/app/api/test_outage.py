"""A database outage answers 503 with Retry-After on every route, never 500 (issue 14).

PostgreSQL really goes away: the test database stops accepting connections and every backend
serving it is terminated (pg_terminate_backend), as in a failover or a restart. Before issue
14 the token lookup and the read routes answered 500 internal_error; only /readyz said 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url

from app.settings import Settings
from tests.app.conftest import PG_URL, Server, Tokens, assert_error, auth
from tests.app.ingest.payloads import events, payload, state

pytestmark = pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def _admin() -> Any:
    import psycopg

    url = make_url(PG_URL)
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    )


class Outage:
    def __init__(self, database_url: str) -> None:
        self.name = make_url(database_url).database

    def begin(self) -> None:
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid()",
                (self.name,),
            )

    def end(self) -> None:
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def outage(migrated_db_url: str) -> Iterator[Outage]:
    o = Outage(migrated_db_url)
    yield o
    o.end()


def _unavailable(r: httpx.Response, code: str = "database_unavailable") -> None:
    body = assert_error(r, 503, code)
    assert "again" in body["message"]
    assert int(r.headers["retry-after"]) > 0


@pytest.mark.parametrize("cache_ttl_s", [0, 60], ids=["token-looked-up", "token-cached"])
def test_reads_and_ingest_answer_503_with_retry_after_while_postgres_is_gone_then_recover(
    settings: Settings, tokens: Tokens, outage: Outage, cache_ttl_s: int
) -> None:
    srv = Server(settings.model_copy(update={"token_cache_ttl_s": cache_ttl_s, "db_pool_timeout_s": 3}))
    srv.start()
    try:
        viewer, agent = tokens.viewer(), tokens.agent("host-1")
        batch = payload(events(0, 3), state()).to_json()
        ingest_headers = {**auth(agent), "Content-Type": "application/json"}
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.post("/api/v1/ingest", content=batch, headers=ingest_headers).status_code == 200
            for path in ("/api/v1/hosts", "/api/v1/events", "/api/v1/summary", "/api/v1/guests"):
                assert c.get(path, headers=auth(viewer)).status_code == 200
            outage.begin()
            for path in ("/api/v1/hosts", "/api/v1/hosts/host-1", "/api/v1/events", "/api/v1/series"):
                _unavailable(c.get(path, headers=auth(viewer)))
            # ingest names it itself when the write fails (app/api/ingest.py); the token lookup
            # (not cached) fails first otherwise
            ingest = c.post("/api/v1/ingest", content=batch, headers=ingest_headers)
            _unavailable(ingest, "database_busy" if cache_ttl_s else "database_unavailable")
            assert c.get("/readyz").status_code == 503
            outage.end()
            assert c.get("/api/v1/hosts", headers=auth(viewer)).status_code == 200
            again = c.post("/api/v1/ingest", content=batch, headers=ingest_headers)
            assert again.json() == {"accepted": 0, "duplicates": 3}  # nothing half-stored
    finally:
        srv.stop()  # and no 500 on the way (tests/app/conftest.Server)
