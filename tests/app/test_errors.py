"""Every error answer has one shape: {"error", "message", "details"}, and never a 500 page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Query

from app.errors import ErrorBody, NotFound, error_responses
from app.settings import Settings
from tests.app.conftest import Server, assert_error

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def add_test_routes(app: FastAPI) -> None:
    @app.get("/test/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("secret internal detail")

    @app.get("/test/missing")
    async def missing() -> dict[str, str]:
        raise NotFound("guest 'web-01' not found: see GET /api/v1/guests", code="guest_not_found")

    @app.get("/test/typed")
    async def typed(limit: int = Query(ge=1, le=10)) -> dict[str, int]:
        return {"limit": limit}


@pytest.fixture
def test_server(settings: Settings) -> Iterator[Server]:
    srv = Server(settings, configure=add_test_routes, allow_500=True)  # /test/boom is a 500
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def c(test_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=test_server.url) as client:
        yield client


@SQLITE
def test_unknown_route_is_404_in_the_error_shape(c: httpx.Client) -> None:
    assert "openapi.json" in assert_error(c.get("/nope"), 404, "not_found")["message"]


@SQLITE
def test_wrong_method_is_405_in_the_error_shape(c: httpx.Client) -> None:
    assert_error(c.delete("/healthz"), 405, "method_not_allowed")


@SQLITE
def test_api_error_keeps_its_code_and_sentence(c: httpx.Client) -> None:
    body = assert_error(c.get("/test/missing"), 404, "guest_not_found")
    assert body["message"] == "guest 'web-01' not found: see GET /api/v1/guests"


@SQLITE
def test_invalid_query_parameter_is_422_naming_the_parameter(c: httpx.Client) -> None:
    body = assert_error(c.get("/test/typed", params={"limit": "many"}), 422, "invalid_request")
    assert "query.limit" in body["message"]
    assert body["details"][0]["field"] == "query.limit"
    assert_error(c.get("/test/typed", params={"limit": 11}), 422, "invalid_request")


@SQLITE
def test_unexpected_exception_is_a_500_in_the_same_shape_without_internals(c: httpx.Client) -> None:
    body = assert_error(c.get("/test/boom"), 500, "internal_error")
    assert "secret internal detail" not in body["message"]


@SQLITE
def test_a_test_server_that_answered_500_fails_its_test_at_stop(settings: Settings) -> None:
    # The suite-wide guard of issue 14 ("the 500 count stays 0"): every Server checks itself.
    srv = Server(settings, configure=add_test_routes)
    srv.start()
    try:
        with httpx.Client(base_url=srv.url) as client:
            assert client.get("/test/missing").status_code == 404
            assert client.get("/test/boom").status_code == 500
    finally:
        with pytest.raises(AssertionError, match=r"GET /test/boom"):
            srv.stop()


def test_error_responses_declare_the_error_body_for_openapi() -> None:
    declared: dict[Any, Any] = error_responses(401, 404, 422)
    assert set(declared) == {401, 404, 422}
    assert all(v["model"] is ErrorBody and v["description"] for v in declared.values())
