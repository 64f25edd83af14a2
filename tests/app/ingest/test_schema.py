"""The ingest schema accepts schema 1 exactly and names the field of every rejection."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from app.ingest.schema import parse_payload
from tests.app.ingest.payloads import event, gap, payload, state


def good() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        payload([event(1), event(2, guest=None)], state(), [gap(5, 9)]).to_json()
    )
    return body


def problems(body: Any) -> list[tuple[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ValidationError) as info:
        parse_payload(raw)
    return [(".".join(str(p) for p in e["loc"]), e["type"]) for e in info.value.errors()]


def test_agent_payload_is_accepted_and_times_become_aware_utc() -> None:
    parsed = parse_payload(json.dumps(good()).encode())
    assert parsed.events[0]["time"].utcoffset() is not None
    assert parsed.events[0]["time"].utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("suffix", ["Z", "+00:00"])
def test_utc_time_with_z_or_zero_offset_is_accepted(suffix: str) -> None:
    body = good()
    body["events"][0]["time"] = f"2026-11-25T10:00:00{suffix}"
    assert parse_payload(json.dumps(body).encode()).events[0]["time"].hour == 10


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("2026-11-25T10:00:00", "timezone_aware"),  # no zone
        ("2026-11-25T10:00:00+02:00", "timezone_offset"),  # not UTC
        ("yesterday", "string_pattern_mismatch"),
        (1764064800, "string_type"),  # strict: no epoch numbers
        ("1764064800", "string_pattern_mismatch"),  # nor epoch numbers as text (issue 14)
        ("1764064800.5", "string_pattern_mismatch"),
        ("2026-11-25", "string_pattern_mismatch"),  # a date alone is no instant
    ],
)
def test_time_that_is_not_iso_8601_utc_is_rejected_naming_the_field(value: object, kind: str) -> None:
    body = good()
    body["events"][0]["time"] = value
    assert problems(body) == [("events.0.time", kind)]


def test_schema_other_than_1_is_rejected() -> None:
    body = good()
    body["schema"] = 2
    assert problems(body) == [("schema", "literal_error")]


@pytest.mark.parametrize("value", [True, 1.0, "1"])
def test_schema_that_only_equals_1_in_python_is_rejected(value: object) -> None:
    # issue 14: `"schema": true` was accepted (True == 1)
    body = good()
    body["schema"] = value
    assert [field for field, _kind in problems(body)] == ["schema"]


def test_last_microsecond_of_year_9999_is_a_valid_time() -> None:
    body = good()
    body["events"][0]["time"] = "9999-12-31T23:59:59.999999Z"
    at = parse_payload(json.dumps(body).encode()).events[0]["time"]
    assert (at.year, at.second, at.microsecond) == (9999, 59, 999999)


def test_nan_and_infinity_in_health_are_stored_as_null() -> None:
    # Not JSON (PostgreSQL's json refuses them): the figure becomes null, the batch is kept.
    text = json.dumps({**good(), "health": {"ok": 1.5, "bad": float("nan"), "nested": [float("inf")]}})
    assert "NaN" in text and "Infinity" in text
    payload = parse_payload(text.encode())
    assert payload.health == {"ok": 1.5, "bad": None, "nested": [None]}


def test_unknown_key_is_rejected_but_health_is_allowed() -> None:
    body = good()
    body["health"] = {"spool_bytes": 10}
    parse_payload(json.dumps(body).encode())
    body["extra"] = 1
    body["events"][0]["colour"] = "red"
    assert sorted(problems(body)) == [("events.0.colour", "extra_forbidden"), ("extra", "extra_forbidden")]


def test_missing_key_is_rejected() -> None:
    body = good()
    del body["events"][1]["guest"]
    assert problems(body) == [("events.1.guest", "missing")]


def test_strict_types_refuse_strings_for_numbers_and_numbers_for_bools() -> None:
    body = good()
    body["events"][0]["seq"] = "7"
    body["state"]["sld_supported"] = 1
    assert sorted(problems(body)) == [("events.0.seq", "int_type"), ("state.sld_supported", "bool_type")]


@pytest.mark.parametrize(
    ("path", "value", "expected_type"),
    [
        (("events", 0, "action"), "explode", "literal_error"),
        (("events", 0, "kind"), "SPLIT_LOCK", "literal_error"),
        (("events", 0, "source"), "dmesg", "literal_error"),
        (("state", "mode"), "on", "literal_error"),
        (("gaps", 0, "reason"), "lost", "literal_error"),
        (("events", 0, "address"), "0xFFFF", "string_pattern_mismatch"),
        (("events", 0, "address"), "ffff", "string_pattern_mismatch"),
        (("events", 0, "seq"), -1, "greater_than_equal"),
        (("events", 0, "count"), -5, "greater_than_equal"),
        (("events", 0, "comm"), "x" * 65, "string_too_long"),
        (("events", 0, "comm"), "a\x00b", "string_pattern_mismatch"),
        (("host", "name"), "", "string_too_short"),
        (("host", "name"), "web\n01", "string_pattern_mismatch"),
        (("state", "ratelimit"), 0, "greater_than_equal"),
        (("state", "mitigate"), 2, "literal_error"),
    ],
)
def test_out_of_contract_values_are_rejected_naming_the_field(
    path: tuple[str | int, ...], value: object, expected_type: str
) -> None:
    body = good()
    node: Any = body
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    assert problems(body) == [(".".join(map(str, path)), expected_type)]


def test_comm_with_slash_spaces_and_colons_is_accepted() -> None:
    body = good()
    body["events"][0]["comm"] = "CJobMgr::m_Work"
    body["events"][1]["comm"] = "CPU 0/KVM"
    parse_payload(json.dumps(body).encode())


def test_gap_whose_last_seq_is_before_its_first_is_rejected() -> None:
    body = good()
    body["gaps"][0]["last_seq"] = 1
    assert problems(body) == [("gaps.0", "value_error")]


def test_state_listing_a_cpu_twice_is_rejected() -> None:
    body = good()
    body["state"]["cpus"][1]["cpu"] = 0
    assert problems(body) == [("state", "value_error")]


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b"[]", b"null", b'"schema"'])
def test_non_json_or_non_object_body_is_rejected(raw: bytes) -> None:
    assert problems(raw)
