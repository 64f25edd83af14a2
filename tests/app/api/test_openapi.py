"""The read API's OpenAPI document: stable operation ids, typed answers, every error declared."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

READ_OPERATIONS = {
    ("/api/v1/hosts", "list_hosts"),
    ("/api/v1/hosts/{name}", "get_host"),
    ("/api/v1/guests", "list_guests"),
    ("/api/v1/guests/{name}", "get_guest"),
    ("/api/v1/events", "list_events"),
    ("/api/v1/series", "get_series"),
    ("/api/v1/gaps", "list_gaps"),
    ("/api/v1/summary", "get_summary"),
    ("/api/v1/insights/throttling", "get_throttling_cost"),
    ("/api/v1/insights/fatal-readiness", "get_fatal_readiness"),
    ("/api/v1/insights/kernel-eras", "get_kernel_eras"),
}

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def spec(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _get(spec: dict[str, Any], path: str) -> dict[str, Any]:
    operation: dict[str, Any] = spec["paths"][path]["get"]
    return operation


def test_every_read_route_is_published_under_its_stable_operation_id(spec: dict[str, Any]) -> None:
    published = {
        (path, _get(spec, path)["operationId"]) for path in spec["paths"] if path in dict(READ_OPERATIONS)
    }
    assert published == READ_OPERATIONS


@pytest.mark.parametrize("path", sorted(p for p, _ in READ_OPERATIONS))
def test_read_route_declares_its_json_answer_as_a_schema_not_any(spec: dict[str, Any], path: str) -> None:
    schema = _get(spec, path)["responses"]["200"]["content"]["application/json"]["schema"]
    assert "$ref" in schema, schema


@pytest.mark.parametrize("path", sorted(p for p, _ in READ_OPERATIONS))
def test_read_route_declares_401_403_and_422_in_the_one_error_shape(spec: dict[str, Any], path: str) -> None:
    responses = _get(spec, path)["responses"]
    for status in ("401", "403", "422"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }


@pytest.mark.parametrize("path", ["/api/v1/hosts/{name}", "/api/v1/guests/{name}"])
def test_routes_naming_one_thing_declare_404(spec: dict[str, Any], path: str) -> None:
    assert "404" in _get(spec, path)["responses"]


def test_events_declare_csv_as_a_second_content_type(spec: dict[str, Any]) -> None:
    assert set(_get(spec, "/api/v1/events")["responses"]["200"]["content"]) == {
        "application/json",
        "text/csv",
    }


def test_contract_words_are_enums_in_the_filters(spec: dict[str, Any]) -> None:
    params = {p["name"]: p for p in _get(spec, "/api/v1/series")["parameters"]}
    text = str(params["group_by"]["schema"])
    for word in ("action", "kind", "host", "guest"):
        assert f"'{word}'" in text
    assert "throttle" in str(spec["components"]["schemas"]) and "sigbus" in str(spec["components"]["schemas"])


def test_read_routes_require_a_bearer_token_in_the_document(spec: dict[str, Any]) -> None:
    for path, _ in READ_OPERATIONS:
        assert _get(spec, path).get("security"), path
