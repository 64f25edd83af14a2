"""GET /api/v1/series: sums per bucket from the rollups, checked against a hand count.

The arranged events (all through the real ingest endpoint) sit on bucket edges on purpose:
an event at exactly an edge belongs to the bucket starting there, one a millisecond before
to the previous one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from app.store.engine import make_engine
from app.store.tables import event
from tests.app.conftest import Server, Tokens, assert_error
from tests.app.fill import HOUR, MINUTE, SECOND, T0, Filler, ev

MS = dt.timedelta(milliseconds=1)


def iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def fleet(server: Server, tokens: Tokens) -> Filler:
    fill = Filler(server.url, tokens)
    fill.send(
        "h1",
        events=[
            ev(T0 - SECOND, guest="vm1", count=7),  # before the range: bucket 11:00
            ev(T0, guest="vm1", count=3),  # exactly on the 12:00 edge
            ev(T0 + MINUTE - MS, guest="vm1", count=2),
            ev(T0 + MINUTE, action="throttle"),  # a plain host process, on the 12:01 edge
            ev(
                T0 + 2 * HOUR + 30 * MINUTE,
                guest="vm2",
                kind="bus_lock",
                action="ratelimit",
                source="tracefs",
                count=5,
            ),
        ],
    )
    fill.send(
        "h2",
        events=[
            ev(T0 + HOUR - MS, guest="vm2", action="sigbus"),  # last instant of hour 12
            ev(T0 + HOUR, guest="vm2", count=4),  # first instant of hour 13
        ],
    )
    return fill


def series(client: httpx.Client, **params: Any) -> dict[str, list[int]]:
    params.setdefault("since", iso(T0))
    params.setdefault("until", iso(T0 + 3 * HOUR))
    response = client.get("/api/v1/series", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return {line["key"]: [count for _, count in line["points"]] for line in body["series"]}


def test_hourly_series_by_action_matches_the_hand_count_edges_included(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    assert series(viewer_client, step=3600, group_by="action") == {
        "warn": [5, 4, 0],
        "ratelimit": [0, 0, 5],
        "sigbus": [1, 0, 0],
        "throttle": [1, 0, 0],
    }


def test_series_by_guest_names_plain_host_processes_host_in_parentheses(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    assert series(viewer_client, step=3600, group_by="guest") == {
        "vm2": [1, 4, 5],
        "vm1": [5, 0, 0],
        "(host)": [1, 0, 0],
    }


def test_series_by_host_and_by_kind(fleet: Filler, viewer_client: httpx.Client) -> None:
    assert series(viewer_client, step=3600, group_by="host") == {"h1": [6, 0, 5], "h2": [1, 4, 0]}
    assert series(viewer_client, step=3600, group_by="kind") == {
        "split_lock": [7, 4, 0],
        "bus_lock": [0, 0, 5],
    }


def test_minute_series_puts_an_event_on_the_edge_into_the_bucket_starting_there(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    assert series(viewer_client, step=60, until=iso(T0 + 3 * MINUTE)) == {
        "warn": [5, 0, 0],
        "throttle": [0, 1, 0],
    }


def test_step_that_is_not_a_whole_hour_reads_the_minute_rollup_correctly(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    assert series(viewer_client, step=1800) == {
        "warn": [5, 0, 4, 0, 0, 0],
        "ratelimit": [0, 0, 0, 0, 0, 5],
        "sigbus": [0, 1, 0, 0, 0, 0],
        "throttle": [1, 0, 0, 0, 0, 0],
    }


def test_step_of_several_hours_sums_hourly_rollups_into_epoch_aligned_buckets(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    assert series(viewer_client, step=7200, group_by="guest") == {
        "vm2": [5, 5],
        "vm1": [5, 0],
        "(host)": [1, 0],
    }


def test_every_bucket_of_the_range_is_present_with_its_start_time_even_when_empty(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    response = viewer_client.get(
        "/api/v1/series",
        params={"since": iso(T0), "until": iso(T0 + 3 * HOUR), "step": 3600, "action": "throttle"},
    )
    body = response.json()
    assert body["step"] == 3600
    assert body["series"] == [
        {"key": "throttle", "points": [[iso(T0), 1], [iso(T0 + HOUR), 0], [iso(T0 + 2 * HOUR), 0]]}
    ]


def test_since_inside_a_bucket_starts_at_that_whole_bucket(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    response = viewer_client.get(
        "/api/v1/series",
        params={
            "since": iso(T0 + 30 * MINUTE),
            "until": iso(T0 + 90 * MINUTE),
            "step": 3600,
            "action": "warn",
        },
    )
    assert response.json()["series"] == [{"key": "warn", "points": [[iso(T0), 5], [iso(T0 + HOUR), 4]]}]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"host": "h2"}, {"warn": [0, 4, 0], "sigbus": [1, 0, 0]}),
        ({"guest": "(host)"}, {"throttle": [1, 0, 0]}),
        ({"guest": "vm1"}, {"warn": [5, 0, 0]}),
        ({"kind": "bus_lock"}, {"ratelimit": [0, 0, 5]}),
        ({"source": "tracefs"}, {"ratelimit": [0, 0, 5]}),
        ({"host": "h1", "guest": "vm2"}, {"ratelimit": [0, 0, 5]}),
        ({"host": "no-such-host"}, {}),
        ({"guest": "no-such-guest"}, {}),
    ],
)
def test_filters_narrow_what_is_counted(
    fleet: Filler, viewer_client: httpx.Client, filters: dict[str, str], expected: dict[str, list[int]]
) -> None:
    assert series(viewer_client, step=3600, **filters) == expected


def test_series_comes_from_the_rollups_not_from_raw_events(
    fleet: Filler, viewer_client: httpx.Client, settings: Any
) -> None:
    before = series(viewer_client, step=3600)
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(delete(event))
    engine.dispose()
    assert series(viewer_client, step=3600) == before


def test_default_step_gives_about_300_buckets_of_a_nice_width(viewer_client: httpx.Client) -> None:
    day = viewer_client.get("/api/v1/series", params={"since": iso(T0), "until": iso(T0 + 24 * HOUR)}).json()
    month = viewer_client.get(
        "/api/v1/series", params={"since": iso(T0), "until": iso(T0 + 30 * 24 * HOUR)}
    ).json()
    assert (day["step"], month["step"]) == (300, 10800)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_step_not_a_multiple_of_60_is_refused_saying_so(viewer_client: httpx.Client) -> None:
    body = assert_error(viewer_client.get("/api/v1/series", params={"step": 90}), 422, "invalid_request")
    assert "query.step" in body["message"] and "multiple of 60" in body["message"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("params", [{"step": 30}, {"step": "hour"}, {"group_by": "vmm"}, {"kind": "lock"}])
def test_malformed_series_parameters_are_refused_naming_the_field(
    viewer_client: httpx.Client, params: dict[str, Any]
) -> None:
    body = assert_error(viewer_client.get("/api/v1/series", params=params), 422, "invalid_request")
    assert body["details"][0]["field"] == f"query.{next(iter(params))}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_range_with_more_than_10000_buckets_is_refused_with_the_step_that_would_do(
    viewer_client: httpx.Client,
) -> None:
    params = {"since": iso(T0), "until": iso(T0 + 30 * 24 * HOUR), "step": 60}
    body = assert_error(viewer_client.get("/api/v1/series", params=params), 422, "too_many_buckets")
    assert (
        "43200 buckets" in body["message"]
        and "10000" in body["message"]
        and "at least 300s" in body["message"]
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_since_after_until_is_refused_with_a_sentence(viewer_client: httpx.Client) -> None:
    params = {"since": iso(T0 + HOUR), "until": iso(T0)}
    body = assert_error(viewer_client.get("/api/v1/series", params=params), 422, "invalid_range")
    assert "since" in body["message"] and "after until" in body["message"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_series_needs_a_viewer_token(client: httpx.Client, tokens: Tokens) -> None:
    assert_error(client.get("/api/v1/series"), 401)
    agent = tokens.agent("h1")
    assert_error(client.get("/api/v1/series", headers={"Authorization": f"Bearer {agent}"}), 403)
