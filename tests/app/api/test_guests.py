"""GET /api/v1/guests and /guests/{name}: who split-locks, where, how the hosts answered."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.app.conftest import Server, Tokens, assert_error
from tests.app.fill import HOUR, SECOND, T0, Filler, ev

RANGE = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T15:00:00Z"}


@pytest.fixture
def fleet(server: Server, tokens: Tokens) -> Filler:
    fill = Filler(server.url, tokens)
    fill.send(
        "kvm-1",
        events=[
            ev(T0 - SECOND, guest="web", count=50),  # before the range
            ev(T0, guest="web", count=3, address="0x401000", uuid="5a3a7f1e-0000-4000-8000-000000000001"),
            ev(T0 + SECOND, guest="web", count=1, address="0xffffffff8104c2a1"),
            ev(T0 + 2 * SECOND, guest="batch", kind="bus_lock", action="ratelimit", count=2),
            ev(T0 + 3 * SECOND, count=9),  # a host process: no guest
        ],
    )
    fill.send(
        "kvm-2",
        events=[
            ev(T0 + HOUR, guest="web", action="throttle", count=4, address="0x401000"),
            ev(T0 + 2 * HOUR, guest="legacy", action="sigbus", vmm="firecracker", address=None),
        ],
    )
    return fill


def guests(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/guests", params={**RANGE, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_guests_are_listed_busiest_first_with_their_range_totals_and_hosts(
    fleet: Filler, viewer_client: httpx.Client
) -> None:
    listed = guests(viewer_client)
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
    assert [g["name"] for g in guests(viewer_client, host="kvm-1")] == ["web", "batch"]
    assert [g["name"] for g in guests(viewer_client, host="kvm-2")] == ["web", "legacy"]
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
