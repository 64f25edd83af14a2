"""GET /api/v1/gaps: every counted loss, by host, newest received first."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from tests.app.conftest import Server, Tokens, assert_error
from tests.app.fill import Filler, lost


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def around_now() -> dict[str, str]:
    # A gap's time is when the backend received it: the range must hold "now".
    now = dt.datetime.now(dt.UTC)
    return {
        "since": (now - dt.timedelta(hours=1)).isoformat(),
        "until": (now + dt.timedelta(hours=1)).isoformat(),
    }


def test_gaps_list_every_loss_with_its_reason_and_count_newest_first(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("kvm-1", gaps=[lost(12, reason="overrun", first_seq=100)])
    fill.send(
        "kvm-2", gaps=[lost(40, reason="suppressed", first_seq=7, last_seq=7), lost(1, reason="forged")]
    )
    response = viewer_client.get("/api/v1/gaps", params=around_now())
    assert response.status_code == 200
    items = response.json()["items"]
    assert items[0]["host"] == "kvm-2"  # received last, listed first
    assert sorted((g["host"], g["reason"], g["first_seq"], g["last_seq"], g["count"]) for g in items) == [
        ("kvm-1", "overrun", 100, 111, 12),
        ("kvm-2", "forged", 1000, 1000, 1),
        ("kvm-2", "suppressed", 7, 7, 40),
    ]
    assert all(
        g["source"] == "kmsg" and g["boot_id"] == "boot-1" and g["received_at"].endswith("Z") for g in items
    )


def test_gaps_filter_by_host_and_range(fill: Filler, viewer_client: httpx.Client) -> None:
    fill.send("kvm-1", gaps=[lost(3)])
    fill.send("kvm-2", gaps=[lost(4)])
    only = viewer_client.get("/api/v1/gaps", params={**around_now(), "host": "kvm-2"}).json()["items"]
    assert [(g["host"], g["count"]) for g in only] == [("kvm-2", 4)]
    past = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}
    assert viewer_client.get("/api/v1/gaps", params=past).json()["items"] == []


def test_resent_gap_is_listed_once(fill: Filler, viewer_client: httpx.Client) -> None:
    fill.send("kvm-1", gaps=[lost(3)])
    fill.send("kvm-1", gaps=[lost(3)])
    assert len(viewer_client.get("/api/v1/gaps", params=around_now()).json()["items"]) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_gaps_need_a_viewer_token_and_a_sane_limit(client: httpx.Client, viewer_client: httpx.Client) -> None:
    assert_error(client.get("/api/v1/gaps"), 401)
    assert_error(viewer_client.get("/api/v1/gaps", params={"limit": 0}), 422, "invalid_request")


def test_gaps_page_newest_first_with_a_cursor(fill: Filler, viewer_client: httpx.Client) -> None:
    for n in range(5):
        fill.send("kvm-1", gaps=[lost(n + 1, first_seq=100 * n)])
    counts: list[int] = []
    cursor = None
    while True:
        params = {**around_now(), "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = viewer_client.get("/api/v1/gaps", params=params).json()
        counts += [g["count"] for g in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert counts == [5, 4, 3, 2, 1]
    assert_error(viewer_client.get("/api/v1/gaps", params={"cursor": "bm9wZQ"}), 422, "invalid_cursor")
