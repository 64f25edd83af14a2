"""What every answer gets at the edge (app/edge.py), through a real uvicorn: security headers,
one access log line, and the ingest request figures, for answers made by the ingest route and
for those made before it (401 from the token check, 413, 404, 405).

SQLite only: nothing here depends on the database engine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from app.deps import get_settings
from app.headers import HEADERS
from app.settings import Settings
from tests.app.conftest import Server, Tokens, assert_error, auth
from tests.app.ingest.payloads import events, payload

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

URL = "/api/v1/ingest"


@pytest.fixture
def small_server(settings: Settings) -> Iterator[Server]:
    srv = Server(settings.model_copy(update={"max_body_bytes": 4096}))
    srv.start()
    yield srv
    srv.stop()


def _answers(url: str, agent: str) -> dict[str, httpx.Response]:
    body = payload(events(0, 3)).to_json().encode()
    with httpx.Client(base_url=url, timeout=30) as c:
        return {
            "stored": c.post(URL, content=body, headers=auth(agent)),
            "no token": c.post(URL, content=body),
            "too large": c.post(URL, content=b"[" + b" " * 5000 + b"]", headers=auth(agent)),
            "not json": c.post(URL, content=b"{nope", headers=auth(agent)),
            "no route": c.get("/api/v1/nowhere"),
            "wrong method": c.get(URL),
        }


def test_every_answer_carries_the_security_headers(small_server: Server, tokens: Tokens) -> None:
    answers = _answers(small_server.url, tokens.agent())
    assert [r.status_code for r in answers.values()] == [200, 401, 413, 422, 404, 405]
    for what, r in answers.items():
        for name, value in HEADERS.items():
            assert r.headers.get_list(name) == [value], (what, name, r.headers)


def test_every_request_writes_one_access_log_line(
    small_server: Server, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    agent = tokens.agent()
    with caplog.at_level(logging.INFO, logger="splitwatch.access"):
        answers = _answers(small_server.url, agent)
    lines = [r for r in caplog.records if r.name == "splitwatch.access"]
    got = [(r.__dict__["method"], r.__dict__["path"], r.__dict__["status"]) for r in lines]
    assert got == [
        ("POST", URL, 200),
        ("POST", URL, 401),
        ("POST", URL, 413),
        ("POST", URL, 422),
        ("GET", "/api/v1/nowhere", 404),
        ("GET", URL, 405),
    ], answers
    assert all(isinstance(r.__dict__["ms"], float) and r.__dict__["ms"] >= 0 for r in lines)
    assert lines[0].getMessage() == f"POST {URL} 200"


def test_ingest_requests_are_counted_by_status_the_ones_refused_before_the_route_included(
    small_server: Server, tokens: Tokens
) -> None:
    _answers(small_server.url, tokens.agent())
    registry = small_server.app.state.metrics_registry
    counts = {
        status: registry.get_sample_value("splitwatch_ingest_requests_total", {"status": status})
        for status in ("200", "401", "413", "422", "405", "404")
    }
    # GET /api/v1/ingest (405) and other paths are not ingest requests.
    assert counts == {"200": 1.0, "401": 1.0, "413": 1.0, "422": 1.0, "405": None, "404": None}
    assert registry.get_sample_value("splitwatch_ingest_duration_seconds_count") == 4.0
    assert registry.get_sample_value("splitwatch_ingest_events_total", {"result": "accepted"}) == 3.0


def test_a_large_error_answer_is_gzipped_for_a_client_that_accepts_it_with_the_headers(
    server: Server, tokens: Tokens
) -> None:
    body = json.loads(payload(events(0, 40)).to_json())
    for e in body["events"]:
        e["seq"] = "not a number"  # 40 details: over gzip's 1 KiB threshold
    with httpx.Client(base_url=server.url, timeout=30) as c:
        plain = c.post(URL, json=body, headers={**auth(tokens.agent()), "Accept-Encoding": "identity"})
        zipped = c.post(URL, json=body, headers={**auth(tokens.agent()), "Accept-Encoding": "gzip"})
    assert assert_error(plain, 422, "invalid_payload") == assert_error(zipped, 422, "invalid_payload")
    assert "content-encoding" not in plain.headers and zipped.headers["content-encoding"] == "gzip"
    for r in (plain, zipped):
        assert r.headers["vary"] == "Accept-Encoding"
        assert r.headers["x-frame-options"] == "DENY"


def test_the_ingest_route_honours_a_dependency_override(settings: Settings, tokens: Tokens) -> None:
    # The route is served without FastAPI's dependency solving, except when overrides are set.
    small = settings.model_copy(update={"max_body_bytes": 1024})
    overrides = {get_settings: lambda: small}
    srv = Server(settings, configure=lambda app: app.dependency_overrides.update(overrides))
    srv.start()
    try:
        body = payload(events(0, 20)).to_json().encode()
        assert len(body) > 1024
        r = httpx.post(srv.url + URL, content=body, headers=auth(tokens.agent()), timeout=30)
    finally:
        srv.stop()
    assert "1024 bytes" in assert_error(r, 413, "payload_too_large")["message"]
