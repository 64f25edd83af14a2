"""/healthz answers while the process runs; /readyz only when the database is at head."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine, text

from tests.app.conftest import assert_error


def test_healthz_answers_ok_without_a_token(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_answers_ready_with_the_revision_when_at_head(client: httpx.Client) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "revision": "2026_12_01_backend_break"}


def test_readyz_is_503_with_the_reason_when_the_database_falls_behind(
    client: httpx.Client, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '2026_01_01_older'"))
    body = assert_error(client.get("/readyz"), 503, "database_not_ready")
    assert "2026_01_01_older" in body["message"] and "splitwatch db upgrade" in body["message"]
