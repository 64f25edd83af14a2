"""GET /api/v1/events: newest first, keyset pages stable under concurrent inserts, CSV of all pages."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import httpx
import pytest

from tests.app.conftest import Server, Tokens, assert_error
from tests.app.fill import HOUR, MINUTE, SECOND, T0, Filler, ev

RANGE = {"since": "2026-11-24T00:00:00Z", "until": "2026-11-25T00:00:00Z"}


def pages(client: httpx.Client, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a filter, following next_cursor."""
    out: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = {**RANGE, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/events", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        out.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def test_events_come_newest_first_with_every_field_of_the_contract(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send(
        "h1",
        events=[
            ev(
                T0,
                guest="vm1",
                uuid="7c9e6679-7425-40de-944b-e07fc1f90ae7",
                vcpu=3,
                address="0xffffffff81234567",
            ),
            ev(T0 + SECOND, comm="CJobMgr::m_Work", tid=77, tgid=70, action="throttle", count=4),
        ],
    )
    items = pages(viewer_client)[0]
    assert [e["comm"] for e in items] == ["CJobMgr::m_Work", "CPU 0/KVM"]
    newest, oldest = items
    assert set(newest) == {
        "id", "host", "boot_id", "source", "seq", "time", "received_at", "kind", "comm",
        "tid", "tgid", "address", "count", "action", "guest", "vcpu", "vmm",
    }  # fmt: skip
    assert newest | {"id": 0, "received_at": ""} == {
        "id": 0, "host": "h1", "boot_id": "boot-1", "source": "kmsg", "seq": 2,
        "time": "2026-11-24T12:00:01Z", "received_at": "", "kind": "split_lock", "comm": "CJobMgr::m_Work",
        "tid": 77, "tgid": 70,
        "address": "0x401a2b", "count": 4, "action": "throttle", "guest": None, "vcpu": None, "vmm": None,
    }  # fmt: skip
    assert (oldest["guest"], oldest["vcpu"], oldest["vmm"], oldest["address"]) == (
        "vm1",
        3,
        "qemu",
        "0xffffffff81234567",
    )
    assert oldest["received_at"].endswith("Z")


def test_pages_walk_every_event_once_even_with_equal_times(fill: Filler, viewer_client: httpx.Client) -> None:
    # Groups of 3 events share a time: the id breaks the tie, so a page edge inside a group
    # neither repeats nor skips one.
    fill.send("h1", events=[ev(T0 + (i // 3) * SECOND, count=i + 1) for i in range(23)])
    walked = pages(viewer_client, limit=4)
    assert [len(p) for p in walked] == [4, 4, 4, 4, 4, 3]
    counts = [e["count"] for p in walked for e in p]
    assert sorted(counts) == list(range(1, 24))
    keys = [(e["time"], e["id"]) for p in walked for e in p]
    assert keys == sorted(keys, reverse=True)


def test_inserts_between_page_fetches_neither_repeat_nor_skip_an_existing_event(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("h1", events=[ev(T0 + i * MINUTE) for i in range(30)])
    existing = {e["id"] for p in pages(viewer_client) for e in p}
    first = viewer_client.get("/api/v1/events", params={**RANGE, "limit": 10}).json()
    seen = [e["id"] for e in first["items"]]
    cursor = first["next_cursor"]
    last_time = dt.datetime.fromisoformat(first["items"][-1]["time"])
    # Newer than everything, older than the cursor (a late batch), and at the cursor's very time.
    fill.send("h2", events=[ev(T0 + 2 * HOUR), ev(T0 + 5 * MINUTE + SECOND), ev(last_time), ev(T0 - HOUR)])
    while cursor:
        body = viewer_client.get("/api/v1/events", params={**RANGE, "limit": 10, "cursor": cursor}).json()
        seen += [e["id"] for e in body["items"]]
        cursor = body["next_cursor"]
        fill.send("h3", events=[ev(T0 + 10 * MINUTE + SECOND)])  # one more insert per page
    assert len(seen) == len(set(seen)), "an event was repeated"
    assert existing <= set(seen), f"skipped: {sorted(existing - set(seen))}"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"host": "h2"}, [5]),
        ({"guest": "vm1"}, [2, 1]),
        ({"guest": "(host)"}, [5, 4, 3]),
        ({"kind": "bus_lock"}, [4]),
        ({"action": "sigbus"}, [2]),
        ({"source": "tracefs"}, [3]),
        ({"host": "h1", "guest": "vm1", "action": "warn"}, [1]),
        ({"host": "nobody"}, []),
    ],
)
def test_filters_select_exactly_the_matching_events(
    fill: Filler, viewer_client: httpx.Client, filters: dict[str, str], expected: list[int]
) -> None:
    fill.send(
        "h1",
        events=[
            ev(T0, guest="vm1", count=1),
            ev(T0 + SECOND, guest="vm1", action="sigbus", count=2),
            ev(T0 + 2 * SECOND, source="tracefs", count=3),
            ev(T0 + 3 * SECOND, kind="bus_lock", action="ratelimit", count=4),
        ],
    )
    fill.send("h2", events=[ev(T0 + 4 * SECOND, count=5)])
    assert [e["count"] for p in pages(viewer_client, **filters) for e in p] == expected


def test_range_is_since_inclusive_until_exclusive(fill: Filler, viewer_client: httpx.Client) -> None:
    fill.send("h1", events=[ev(T0 - SECOND, count=1), ev(T0, count=2), ev(T0 + HOUR, count=3)])
    params = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T13:00:00Z"}
    assert [e["count"] for e in viewer_client.get("/api/v1/events", params=params).json()["items"]] == [2]


def test_csv_holds_the_same_rows_and_columns_as_json_over_all_pages(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send(
        "h1",
        events=[
            ev(T0 + i * SECOND, guest="vm,1" if i % 2 else None, comm='a "q" b', count=i)
            for i in range(1, 1201)
        ]
        + [ev(T0, action="sigbus")],
    )
    json_rows = [e for p in pages(viewer_client, action="warn", limit=1000) for e in p]
    response = viewer_client.get("/api/v1/events", params={**RANGE, "action": "warn", "format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == list(json_rows[0])
    csv_rows = list(reader)
    assert len(csv_rows) == len(json_rows) == 1200
    as_text = [{k: "" if v is None else str(v) for k, v in row.items()} for row in json_rows]
    assert csv_rows == as_text
    assert csv_rows[0]["guest"] == "" and csv_rows[1]["guest"] == "vm,1"


def test_csv_of_an_empty_filter_is_the_header_alone(viewer_client: httpx.Client) -> None:
    response = viewer_client.get("/api/v1/events", params={"host": "nobody", "format": "csv"})
    assert response.text.strip().split(",")[:3] == ["id", "host", "boot_id"]
    assert len(response.text.strip().splitlines()) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("cursor", ["garbage", "MXx5ZXN0ZXJkYXl8NQ", "A" * 300])
def test_cursor_this_server_never_gave_is_refused_with_the_remedy(
    viewer_client: httpx.Client, cursor: str
) -> None:
    body = assert_error(viewer_client.get("/api/v1/events", params={"cursor": cursor}), 422)
    assert "cursor" in body["message"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"format": "xml"}, {"action": "kill"}]
)
def test_malformed_event_parameters_are_refused_naming_the_field(
    viewer_client: httpx.Client, params: dict[str, Any]
) -> None:
    body = assert_error(viewer_client.get("/api/v1/events", params=params), 422, "invalid_request")
    assert body["details"][0]["field"] == f"query.{next(iter(params))}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_events_need_a_token(client: httpx.Client) -> None:
    assert_error(client.get("/api/v1/events"), 401)
    assert_error(client.get("/api/v1/events", params={"format": "csv"}), 401)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "params",
    [
        {"since": "0001-01-01T00:00:00+01:00"},  # year 0 in UTC
        {"until": "9999-12-31T23:00:00-02:00"},  # year 10000 in UTC
        {"since": "0001-01-01T00:30:00+00:31", "until": "2026-11-24T00:00:00Z"},
    ],
)
def test_time_that_leaves_the_years_1_to_9999_in_utc_is_a_422_not_a_500(
    viewer_client: httpx.Client, params: dict[str, str]
) -> None:
    # issue 14: astimezone() overflowed into a 500
    for path in ("/api/v1/events", "/api/v1/series", "/api/v1/summary", "/api/v1/hosts"):
        body = assert_error(viewer_client.get(path, params=params), 422, "invalid_time")
        assert body["details"][0]["field"] == f"query.{next(iter(params))}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"])
def test_cursor_with_a_time_that_overflows_in_utc_is_refused(viewer_client: httpx.Client, at: str) -> None:
    import base64

    cursor = base64.urlsafe_b64encode(f"1|{at}|5".encode()).decode().rstrip("=")
    body = assert_error(viewer_client.get("/api/v1/events", params={"cursor": cursor}), 422, "invalid_cursor")
    assert "cursor" in body["message"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralised(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    # OWASP "CSV injection": a cell starting with = + - @ tab or CR gets a leading quote, so
    # Excel and LibreOffice show it as text. COMM and guest names come from the hosts.
    hostile = ["=cmd|' /C calc'!A0", "@SUM(1)", "-2+3+cmd", "+1", "\tx", "\rx"]
    fill.send("h1", events=[ev(T0 + i * SECOND, guest=g, comm=g[:15]) for i, g in enumerate(hostile)])
    fill.send("h1", events=[ev(T0 + 10 * SECOND, guest="plain", comm="qemu", count=7)])
    response = viewer_client.get("/api/v1/events", params={**RANGE, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    guests = {row["guest"] for row in rows}
    assert guests == {"'" + g for g in hostile} | {"plain"}
    assert {row["comm"] for row in rows if row["guest"] != "plain"} == {"'" + g[:15] for g in hostile}
    plain = next(row for row in rows if row["guest"] == "plain")
    assert plain["count"] == "7" and plain["comm"] == "qemu"  # numbers stay numbers
    assert all(not row["id"].startswith("'") and int(row["tid"]) >= 0 for row in rows)
    # The JSON answer is data, not a spreadsheet: unchanged.
    items = viewer_client.get("/api/v1/events", params=RANGE).json()["items"]
    assert {e["guest"] for e in items} == set(hostile) | {"plain"}
