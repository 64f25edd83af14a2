"""GET /api/v1/guests and /guests/{name}: who split-locks, where, how the hosts answered."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.app.conftest import Server, Tokens, assert_error
from tests.app.fill import HOUR, SECOND, T0, Filler, ev

RANGE = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T15:00:00Z"}
WEB = "5a3a7f1e-0000-4000-8000-000000000001"  # libvirt passes -uuid: the same on every host it runs on


@pytest.fixture
def fleet(server: Server, tokens: Tokens) -> Filler:
    fill = Filler(server.url, tokens)
    fill.send(
        "kvm-1",
        events=[
            ev(T0 - SECOND, guest="web", count=50, uuid=WEB),  # before the range
            ev(T0, guest="web", count=3, address="0x401000", uuid=WEB),
            ev(T0 + SECOND, guest="web", count=1, address="0xffffffff8104c2a1", uuid=WEB),
            ev(T0 + 2 * SECOND, guest="batch", kind="bus_lock", action="ratelimit", count=2),
            ev(T0 + 3 * SECOND, count=9),  # a host process: no guest
        ],
    )
    fill.send(
        "kvm-2",
        events=[
            ev(T0 + HOUR, guest="web", action="throttle", count=4, address="0x401000", uuid=WEB),
            ev(T0 + 2 * HOUR, guest="legacy", action="sigbus", vmm="firecracker", address=None),
        ],
    )
    return fill


def guests(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/guests", params={**RANGE, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_guests_sorted_by_events_are_listed_busiest_first_with_their_range_totals_and_hosts(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    listed = guests(viewer_client, sort="events")
    assert [(g["name"], g["events"], g["hosts"]) for g in listed] == [
        ("web", 8, ["kvm-1", "kvm-2"]),
        ("batch", 2, ["kvm-1"]),
        ("legacy", 1, ["kvm-2"]),
    ]
    web = listed[0]
    assert (web["uuid"], web["vmm"], web["last_host"], web["last_action"]) == (
        "5a3a7f1e-0000-4000-8000-000000000001", "qemu", "kvm-2", "throttle",
    )  # fmt: skip
    assert (web["first_seen_at"], web["last_seen_at"]) == ("2026-11-24T11:59:59Z", "2026-11-24T13:00:00Z")
    assert (web["killed"], web["killed_at"]) == (False, None)


def test_guest_killed_by_sigbus_says_so_and_when(fleet: Filler, viewer_client: httpx.Client) -> None:
    legacy = {g["name"]: g for g in guests(viewer_client)}["legacy"]
    assert (legacy["killed"], legacy["killed_at"], legacy["vmm"]) == (
        True,
        "2026-11-24T14:00:00Z",
        "firecracker",
    )


def test_host_filter_lists_the_guests_that_ran_there(fleet: Filler, viewer_client: httpx.Client) -> None:
    assert [g["name"] for g in guests(viewer_client, host="kvm-1")] == ["batch", "web"]
    assert [g["name"] for g in guests(viewer_client, host="kvm-2")] == ["legacy", "web"]
    assert guests(viewer_client, host="kvm-404") == []


def test_guest_outside_the_range_is_listed_with_zero_events(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    listed = guests(viewer_client, since="2026-11-24T14:30:00Z", until="2026-11-24T15:00:00Z")
    assert [(g["name"], g["events"], g["hosts"]) for g in listed] == [
        ("batch", 0, []),
        ("legacy", 0, []),
        ("web", 0, []),
    ]


def test_guest_detail_counts_actions_and_tells_kernel_from_user_addresses(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    response = viewer_client.get("/api/v1/guests/web", params=RANGE)
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["events"], body["hosts"]) == ("web", 8, ["kvm-1", "kvm-2"])
    assert body["actions"] == {"throttle": 4, "warn": 4}
    assert body["top_addresses"] == [
        {"address": "0x401000", "count": 7, "space": "guest-user"},
        {"address": "0xffffffff8104c2a1", "count": 1, "space": "guest-kernel"},
    ]


def test_guest_detail_of_a_guest_with_no_addresses_has_none(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    body = viewer_client.get("/api/v1/guests/legacy", params=RANGE).json()
    assert (body["actions"], body["top_addresses"]) == ({"sigbus": 1}, [])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unknown_guest_is_404_naming_it(viewer_client: httpx.Client) -> None:
    body = assert_error(viewer_client.get("/api/v1/guests/nobody"), 404, "guest_not_found")
    assert "'nobody'" in body["message"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_guest_reads_need_a_viewer_token(client: httpx.Client) -> None:
    assert_error(client.get("/api/v1/guests"), 401)
    assert_error(client.get("/api/v1/guests/web"), 401)


# ----------------------------------------------------------------- one host cannot speak for another (#14)

PROD_DB = "3b0c8a52-7d1e-4f6a-9c2b-5e8d7f6a1b20"  # prod-db's -uuid on h2, where it runs


def guest_detail(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/guests/{name}", params=RANGE)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("claimed_uuid", [None, "00000000-0000-4000-8000-0000000000ff"])
def test_sigbus_from_h1_for_a_guest_that_only_ran_on_h2_neither_kills_it_nor_moves_it(
    server: Server, tokens: Tokens, viewer_client: httpx.Client, claimed_uuid: str | None
) -> None:
    fill = Filler(server.url, tokens)
    fill.send("h2", events=[ev(T0, guest="prod-db", uuid=PROD_DB, count=2)])
    # h1's agent token says prod-db took a split lock there and was killed for it, later.
    fill.send("h1", events=[ev(T0 + HOUR, guest="prod-db", uuid=claimed_uuid, action="sigbus")])

    body = guest_detail(viewer_client, "prod-db")
    assert (body["last_host"], body["killed"], body["killed_at"]) == ("h2", False, None)
    assert (body["uuid"], body["last_action"]) == (PROD_DB, "warn")
    assert body["last_seen_at"] == "2026-11-24T12:00:00Z"
    # What h1 said is kept as h1's own view, marked as not this guest.
    seen = {s["host"]: s for s in body["sightings"]}
    assert (seen["h1"]["same_guest"], seen["h1"]["killed_at"], seen["h1"]["uuid"]) == (
        False, "2026-11-24T13:00:00Z", claimed_uuid,
    )  # fmt: skip
    assert (seen["h2"]["same_guest"], seen["h2"]["killed_at"]) == (True, None)
    summary = viewer_client.get("/api/v1/summary", params=RANGE).json()
    assert summary["guests_killed"] == 0


def test_a_guest_that_really_moves_keeps_its_uuid_and_is_one_guest_on_its_new_host(
    server: Server, tokens: Tokens, viewer_client: httpx.Client
) -> None:
    fill = Filler(server.url, tokens)
    fill.send("h2", events=[ev(T0, guest="prod-db", uuid=PROD_DB)])
    fill.send("h1", events=[ev(T0 + HOUR, guest="prod-db", uuid=PROD_DB, action="sigbus")])  # migrated

    body = guest_detail(viewer_client, "prod-db")
    assert (body["last_host"], body["killed"], body["killed_at"]) == ("h1", True, "2026-11-24T13:00:00Z")
    assert (body["events"], body["hosts"]) == (2, ["h1", "h2"])
    assert all(s["same_guest"] for s in body["sightings"])


def test_a_guest_without_uuid_seen_on_two_hosts_is_one_guest_that_moved(
    server: Server, tokens: Tokens, viewer_client: httpx.Client
) -> None:
    # Firecracker reports no uuid anywhere: nothing tells a move from a claim (docs/api.md).
    fill = Filler(server.url, tokens)
    fill.send("h2", events=[ev(T0, guest="fc-7", vmm="firecracker")])
    fill.send("h1", events=[ev(T0 + HOUR, guest="fc-7", vmm="firecracker", action="throttle")])
    body = guest_detail(viewer_client, "fc-7")
    assert (body["last_host"], body["last_action"], body["uuid"]) == ("h1", "throttle", None)


def test_guests_page_by_name_with_a_cursor_each_guest_once(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {**RANGE, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = viewer_client.get("/api/v1/guests", params=params).json()
        assert len(body["items"]) <= 2
        seen += [g["name"] for g in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        fleet.send("kvm-1", events=[ev(T0, guest="aaa-new-but-before-the-cursor")])  # never shifts a page
    assert (seen, pages) == (["batch", "legacy", "web"], 2)


def test_guests_sorted_by_events_page_with_a_cursor(fleet: Filler, viewer_client: httpx.Client) -> None:
    first = viewer_client.get("/api/v1/guests", params={**RANGE, "sort": "events", "limit": 2}).json()
    assert [g["name"] for g in first["items"]] == ["web", "batch"]
    rest = viewer_client.get(
        "/api/v1/guests", params={**RANGE, "sort": "events", "limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert ([g["name"] for g in rest["items"]], rest["next_cursor"]) == (["legacy"], None)


def test_guests_sorted_by_events_pages_walk_ties_in_first_seen_order_each_guest_once(
    server: Server, tokens: Tokens, viewer_client: httpx.Client
) -> None:
    # Equal totals across page boundaries: the ranking breaks ties by guest (the order they were
    # first stored in), and the pages together are the whole ranking, each guest once.
    fill = Filler(server.url, tokens)
    counts = {"g-a": 5, "g-b": 7, "g-c": 5, "g-d": 5, "g-e": 7, "g-f": 1, "g-g": 5}
    for i, (name, count) in enumerate(counts.items()):
        fill.send("kvm-1", events=[ev(T0 + i * SECOND, guest=name, count=count)])
    fill.send("kvm-2", events=[ev(T0 + HOUR, guest="g-f", count=4)])  # 5 in all, on two hosts
    ranked: list[tuple[str, int]] = []
    cursor = None
    for _ in range(len(counts)):
        params: dict[str, Any] = {**RANGE, "sort": "events", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = viewer_client.get("/api/v1/guests", params=params).json()
        assert len(body["items"]) <= 2
        ranked += [(g["name"], g["events"]) for g in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert ranked == [
        ("g-b", 7), ("g-e", 7), ("g-a", 5), ("g-c", 5), ("g-d", 5), ("g-f", 5), ("g-g", 5),
    ]  # fmt: skip


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_cursor_this_server_never_gave_is_422_with_the_remedy(viewer_client: httpx.Client) -> None:
    for path in ("/api/v1/guests", "/api/v1/hosts"):
        body = assert_error(viewer_client.get(path, params={"cursor": "bm9wZQ"}), 422, "invalid_cursor")
        assert "next_cursor" in body["message"]
