"""GET /api/v1/hosts and /hosts/{name}: status, CPUs, state history, events and guests in range."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.settings import Settings
from app.store.engine import make_engine
from app.store.tables import host
from tests.app.conftest import Server, Tokens, assert_error
from tests.app.fill import HOUR, MINUTE, SECOND, T0, Filler, ev, state

RANGE = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T15:00:00Z"}


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def hosts(client: httpx.Client, **params: Any) -> dict[str, dict[str, Any]]:
    response = client.get("/api/v1/hosts", params={**RANGE, **params})
    assert response.status_code == 200, response.text
    return {h["name"]: h for h in response.json()["items"]}


def stop_reporting(settings: Settings, name: str, minutes: int) -> None:
    """The host's agent last reported `minutes` ago (time passing, without waiting for it)."""
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            update(host)
            .where(host.c.name == name)
            .values(last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes))
        )
    engine.dispose()


def test_host_with_detection_on_everywhere_is_consistent_with_its_facts(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send(
        "kvm-1",
        state=state(T0, mode="warn", cpus=8, errors=[7], mitigate=1),
        events=[ev(T0, guest="vm1", count=2), ev(T0 + SECOND)],
        health={"spool_bytes": 0},
    )
    h = hosts(viewer_client)["kvm-1"]
    assert (h["status"], h["verdict"], h["needs_action"]) == ("consistent", "consistent", False)
    assert h["reason"] == "split-lock detection is on on every CPU"
    assert (h["mode"], h["mitigate"], h["ratelimit"], h["sld_supported"], h["bld_supported"]) == (
        "warn", 1, None, True, True,
    )  # fmt: skip
    assert (h["cpus_total"], h["cpus_on"], h["cpus_off"], h["cpus_error"]) == (8, 7, 0, 1)
    assert (h["events"], h["guests"]) == (3, 1)
    assert h["health"] == {"spool_bytes": 0}
    assert (h["boot_id"], h["kernel"], h["agent_version"]) == ("boot-1", "6.8.0-51-generic", "0.1.0")
    assert h["last_seen_at"].endswith("Z") and h["first_seen_at"] <= h["last_seen_at"]


def test_the_agents_drift_verdict_is_the_status_with_its_reason_details_and_since(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("kvm-1", state=state(T0, cpus=8, off=[5], verdict="transient", reason="cpu 5 off once"))
    assert hosts(viewer_client)["kvm-1"]["status"] == "transient"
    drift = {"verdict": "drift", "reason": "cpu 5 off in 3 samples", "details": {"cpus": [5]}}
    fill.send("kvm-1", state=state(T0 + MINUTE, cpus=8, off=[5], **drift))
    fill.send("kvm-1", state=state(T0 + 2 * MINUTE, cpus=8, off=[5], **drift))
    h = hosts(viewer_client)["kvm-1"]
    assert (h["status"], h["needs_action"], h["reason"], h["verdict_details"], h["cpus_off"]) == (
        "drift", True, "cpu 5 off in 3 samples", {"cpus": [5]}, 1,
    )  # fmt: skip
    assert h["verdict_since"] == "2026-11-24T12:01:00Z"  # the first drift sample, not the latest


def test_verdict_endpoint_answers_name_label_reason_details_and_since(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    details = {"guests": ["win2012-app"], "floor": True}
    fill.send(
        "kvm-1", state=state(T0, verdict="per_task_off", reason="win2012-app ... a floor", details=details)
    )
    response = viewer_client.get("/api/v1/hosts/kvm-1/verdict", params=RANGE)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "host": "kvm-1",
        "status": "per_task_off",
        "label": "per-task off",
        "verdict": "per_task_off",
        "reason": "win2012-app ... a floor",
        "needs_action": False,
        "details": details,
        "since": "2026-11-24T12:00:00Z",
        "observed_at": "2026-11-24T12:00:00Z",
    }
    body = assert_error(viewer_client.get("/api/v1/hosts/kvm-404/verdict"), 404, "host_not_found")
    assert "kvm-404" in body["message"]


def test_cores_off_in_ratelimit_mode_are_off_by_design(fill: Filler, viewer_client: httpx.Client) -> None:
    for i in range(4):
        fill.send(
            "kvm-1",
            state=state(
                T0 + i * MINUTE, mode="ratelimit", ratelimit=10, mitigate=None, verdict="off_by_design"
            ),
        )
    h = hosts(viewer_client)["kvm-1"]
    assert (h["status"], h["mode"], h["ratelimit"], h["cpus_off"]) == ("off_by_design", "ratelimit", 10, 4)


def test_an_agent_that_sends_no_verdict_makes_the_status_unknown_never_ok(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("kvm-1", state=state(T0, verdict=None))
    assert (hosts(viewer_client)["kvm-1"]["status"], hosts(viewer_client)["kvm-1"]["needs_action"]) == (
        "unknown", False,
    )  # fmt: skip


def test_host_silent_for_longer_than_silent_after_is_silent(
    fill: Filler, viewer_client: httpx.Client, settings: Settings
) -> None:
    fill.send("kvm-1", state=state(T0))
    fill.send("kvm-2", state=state(T0))
    stop_reporting(settings, "kvm-1", minutes=6)  # silent_after_s defaults to 300
    listed = hosts(viewer_client)
    assert (listed["kvm-1"]["status"], listed["kvm-2"]["status"]) == ("silent", "consistent")
    assert listed["kvm-1"]["verdict"] == "consistent"  # the last verdict is kept while silent


def test_events_and_guests_count_only_the_range(fill: Filler, viewer_client: httpx.Client) -> None:
    fill.send(
        "kvm-1",
        events=[
            ev(T0 - SECOND, guest="vm-before", count=100),
            ev(T0, guest="vm1", count=2),
            ev(T0 + 90 * MINUTE + SECOND, guest="vm2", count=3),
            ev(T0 + 3 * HOUR, guest="vm-after", count=100),
        ],
    )
    h = hosts(viewer_client)["kvm-1"]
    assert (h["events"], h["guests"]) == (5, 2)
    assert (
        hosts(viewer_client, since="2026-11-24T12:00:30Z", until="2026-11-24T13:31:01Z")["kvm-1"]["events"]
        == 3
    )


def test_host_that_never_sent_a_state_has_null_mode_and_an_unknown_status(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("kvm-1", events=[ev(T0)])
    h = hosts(viewer_client)["kvm-1"]
    assert (h["mode"], h["status"], h["cpus_total"], h["sld_supported"]) == (None, "unknown", 0, None)


def test_host_created_by_an_import_is_silent_never_alive(fill: Filler, viewer_client: httpx.Client) -> None:
    fill.send("old-1", events=[ev(T0, source="import", seq=1)])
    h = hosts(viewer_client)["old-1"]
    assert (h["status"], h["last_seen_at"], h["needs_action"]) == ("silent", None, False)
    assert "splitwatch import" in h["reason"]


def test_host_detail_has_latest_cpus_state_history_and_guests_in_range(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("kvm-1", state=state(T0 - HOUR, mode="warn", cpus=2))
    fill.send("kvm-1", state=state(T0 + HOUR, mode="fatal", cpus=2), events=[ev(T0 + HOUR, guest="vm1")])
    fill.send(
        "kvm-1", state=state(T0 + 2 * HOUR, mode="fatal", cpus=2, errors=[1]), events=[ev(T0, guest="vm0")]
    )
    response = viewer_client.get("/api/v1/hosts/kvm-1", params=RANGE)
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "kvm-1" and body["mode"] == "fatal" and body["status"] == "consistent"
    assert body["guests"] == ["vm0", "vm1"]
    assert body["cpus"] == [
        {"cpu": 0, "test_ctrl": 1 << 29, "sld_on": True, "bld_on": True, "error": None},
        {"cpu": 1, "test_ctrl": None, "sld_on": None, "bld_on": None, "error": "EIO reading MSR 0x33"},
    ]
    # The state in force at `since` (observed an hour before it) leads; then the changes, oldest first.
    states = body["states"]
    assert [(s["observed_at"], s["mode"], s["cpus_error"]) for s in states] == [
        ("2026-11-24T11:00:00Z", "warn", 0),
        ("2026-11-24T13:00:00Z", "fatal", 0),
        ("2026-11-24T14:00:00Z", "fatal", 1),
    ]
    assert set(states[0]) == {
        "observed_at", "boot_id", "kernel", "mode", "ratelimit", "mitigate", "sld_supported",
        "bld_supported", "cpus_on", "cpus_off", "cpus_error", "verdict", "cpus",
    }  # fmt: skip
    assert states[2]["cpus"][1]["error"] == "EIO reading MSR 0x33"


def test_unchanged_state_samples_add_no_history(fill: Filler, viewer_client: httpx.Client) -> None:
    for i in range(3):
        fill.send("kvm-1", state=state(T0 + i * MINUTE))
    states = viewer_client.get("/api/v1/hosts/kvm-1", params=RANGE).json()["states"]
    assert [s["observed_at"] for s in states] == ["2026-11-24T12:00:00Z"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unknown_host_is_404_naming_it_and_where_to_look(viewer_client: httpx.Client) -> None:
    body = assert_error(viewer_client.get("/api/v1/hosts/kvm-404"), 404, "host_not_found")
    assert "kvm-404" in body["message"] and "GET /api/v1/hosts" in body["message"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_host_reads_need_a_viewer_token(client: httpx.Client, tokens: Tokens) -> None:
    assert_error(client.get("/api/v1/hosts"), 401)
    agent = {"Authorization": f"Bearer {tokens.agent('kvm-1')}"}
    assert_error(client.get("/api/v1/hosts", headers=agent), 403)
    assert_error(client.get("/api/v1/hosts/kvm-1", headers=agent), 403)
    admin = {"Authorization": f"Bearer {tokens.admin()}"}
    assert client.get("/api/v1/hosts", headers=admin).status_code == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("params", [{"since": "yesterday"}, {"until": "2026-13-01T00:00:00Z"}])
def test_unparseable_times_are_refused_naming_the_parameter(
    viewer_client: httpx.Client, params: dict[str, str]
) -> None:
    body = assert_error(viewer_client.get("/api/v1/hosts", params=params), 422, "invalid_request")
    assert body["details"][0]["field"] == f"query.{next(iter(params))}"


def test_hosts_page_by_name_with_a_cursor_each_host_once_and_figures_per_page(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    for name in ("c", "a", "d", "b", "e"):
        fill.send(name, events=[ev(T0, guest=f"vm-{name}", count=2)])
    seen: list[tuple[str, int, int]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T13:00:00Z"}
        params["limit"] = 2
        if cursor:
            params["cursor"] = cursor
        body = viewer_client.get("/api/v1/hosts", params=params).json()
        assert len(body["items"]) <= 2
        seen += [(x["name"], x["events"], x["guests"]) for x in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [(n, 2, 1) for n in "abcde"]
    assert hosts(viewer_client, needs_action="true") == {}  # no verdict yet: nothing to act on
    assert list(hosts(viewer_client, needs_action="false")) == list("abcde")


def test_needs_action_lists_every_host_that_needs_action_past_the_first_page_of_names_with_a_cursor(
    fill: Filler, viewer_client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    drift = {"verdict": "drift", "reason": "cpu 5 off in 3 samples", "details": {"cpus": [5]}}
    acting = ("b", "e", "g")  # "g" sorts past a first page of 2 names, and past the scan's chunk
    for name in "abcdefg":
        extra = drift if name in acting else {"verdict": "consistent", "reason": "on everywhere"}
        fill.send(name, state=state(T0, cpus=8, off=[5] if name in acting else [], **extra))
    # Small scan chunks, so the filter's walk over the names crosses several of them.
    monkeypatch.setattr("app.store.hosts.FILTER_SCAN_CHUNK", 2)

    def walk(needs_action: str) -> list[str]:
        names: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {**RANGE, "limit": 2, "needs_action": needs_action}
            if cursor:
                params["cursor"] = cursor
            body = viewer_client.get("/api/v1/hosts", params=params).json()
            assert len(body["items"]) <= 2 and all(
                x["needs_action"] == (needs_action == "true") for x in body["items"]
            )
            names += [x["name"] for x in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                return names

    assert walk("true") == ["b", "e", "g"]
    assert walk("false") == ["a", "c", "d", "f"]
    summary = viewer_client.get("/api/v1/summary", params=RANGE).json()
    assert summary["hosts_need_action"] == 3  # the card and the list agree
    one = viewer_client.get("/api/v1/hosts", params={**RANGE, "needs_action": "true", "limit": 1}).json()
    assert [x["name"] for x in one["items"]] == ["b"] and one["next_cursor"] is not None


def walk_hosts(client: httpx.Client, **params: Any) -> list[tuple[str, int]]:
    """Every page of /hosts with `params`, 2 at a time: (name, events) in the order listed."""
    listed: list[tuple[str, int]] = []
    cursor = None
    while True:
        query: dict[str, Any] = {**RANGE, **params, "limit": 2}
        if cursor:
            query["cursor"] = cursor
        body = client.get("/api/v1/hosts", params=query).json()
        assert len(body["items"]) <= 2, body
        listed += [(x["name"], x["events"]) for x in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return listed


def test_hosts_sorted_by_events_list_the_busiest_first_whatever_their_names_each_once(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    # In a fleet of thousands, the busiest host's name can sort anywhere: "zz" is last by name.
    # Ties keep the order the hosts were first seen; a host with no event in the range is not
    # among the busiest (it is in the name order, and in the status filters).
    counts = {"b": 5, "zz": 40, "a": 5, "quiet": 0, "c": 9, "d": 5}
    for name, count in counts.items():
        fill.send(name, state=state(T0), events=[ev(T0, guest=f"vm-{name}", count=count)] if count else [])
    fill.send("a", events=[ev(T0 + 4 * HOUR, guest="vm-a", count=100)])  # after the range: not counted
    assert walk_hosts(viewer_client, sort="events") == [("zz", 40), ("c", 9), ("b", 5), ("a", 5), ("d", 5)]
    first = viewer_client.get("/api/v1/hosts", params={**RANGE, "sort": "events", "limit": 1}).json()
    assert [(x["name"], x["events"], x["guests"], x["status"]) for x in first["items"]] == [
        ("zz", 40, 1, "consistent")
    ]
    assert walk_hosts(viewer_client) == sorted(counts.items())  # by name: every host, as before


def test_status_filter_lists_the_silent_hosts_past_the_first_page_of_names_alone_or_with_others(
    fill: Filler, viewer_client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    drift = {"verdict": "drift", "reason": "cpu 5 off in 3 samples", "details": {"cpus": [5]}}
    for name in "abcdefg":
        extra = drift if name == "c" else {}
        fill.send(name, state=state(T0, **extra), events=[ev(T0, guest=f"vm-{name}", count=ord(name) - 96)])
    for name in ("b", "g"):  # "g" sorts past a first page of 2 names, and past the scan's chunk
        stop_reporting(settings, name, minutes=6)
    monkeypatch.setattr("app.store.hosts.FILTER_SCAN_CHUNK", 2)
    assert walk_hosts(viewer_client, status="silent") == [("b", 2), ("g", 7)]
    assert walk_hosts(viewer_client, status=["silent", "drift"]) == [("b", 2), ("c", 3), ("g", 7)]
    assert walk_hosts(viewer_client, status="silent", sort="events") == [("g", 7), ("b", 2)]
    # Both filters: both must hold. A silent host does not need action (silence has its own alert).
    assert walk_hosts(viewer_client, status=["silent", "drift"], needs_action="true") == [("c", 3)]
    assert walk_hosts(viewer_client, status="consistent", sort="events") == [
        ("f", 6), ("e", 5), ("d", 4), ("a", 1)
    ]  # fmt: skip
    summary = viewer_client.get("/api/v1/summary", params=RANGE).json()
    assert summary["hosts_silent"] == 2  # the card and the list agree


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "dead"}, "query.status[0]"), ({"sort": "busiest"}, "query.sort")],
)
def test_an_unknown_status_or_sort_is_refused_naming_the_parameter(
    viewer_client: httpx.Client, params: dict[str, str], field: str
) -> None:
    body = assert_error(viewer_client.get("/api/v1/hosts", params=params), 422, "invalid_request")
    assert body["details"][0]["field"] == field
