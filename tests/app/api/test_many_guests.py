"""40,000 guests (#14: one agent token made `/series?group_by=guest` answer 320 MB): every answer
stays bounded, and what is folded away still adds up.

The guests and their hourly rollups are written with one Core executemany each, as ingest
would have left them; 40,000 ingest calls would say nothing more about the read side.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Engine, insert, select

from app.store.tables import guest, host, rollup_1h
from tests.app.conftest import Server, Tokens
from tests.app.fill import T0, Filler, ev

GUESTS = 40_000
RANGE = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T13:00:00Z"}


def count_of(n: int) -> int:
    return n % 97 + 1  # uneven, so there is a real top


def fill_guests(engine: Engine) -> int:
    with engine.begin() as conn:
        host_id = conn.execute(select(host.c.id).where(host.c.name == "h1")).scalar_one()
        conn.execute(
            insert(guest),
            [
                {"name": f"vm-{n:05d}", "uuid": None, "vmm": "qemu", "first_seen_at": T0, "last_seen_at": T0,
                 "last_host_id": host_id, "last_action": "warn"}
                for n in range(GUESTS)
            ],
        )  # fmt: skip
        ids = dict(conn.execute(select(guest.c.name, guest.c.id)).all())
        conn.execute(
            insert(rollup_1h),
            [
                {"bucket": T0, "host_id": host_id, "guest_id": ids[f"vm-{n:05d}"], "kind": "split_lock",
                 "action": "warn", "source": "kmsg", "count": count_of(n), "events": 1}
                for n in range(GUESTS)
            ],
        )  # fmt: skip
    return sum(count_of(n) for n in range(GUESTS))


def test_40000_guests_give_a_bounded_series_whose_top_and_other_add_up_and_a_paged_guest_list(
    server: Server, tokens: Tokens, engine: Engine, viewer_client: httpx.Client
) -> None:
    Filler(server.url, tokens).send("h1", events=[ev(T0, guest="vm-first", count=5)])
    total = fill_guests(engine) + 5

    response = viewer_client.get("/api/v1/series", params={**RANGE, "group_by": "guest", "step": 3600})
    assert response.status_code == 200
    assert len(response.content) < 4096  # 40,001 lines would be megabytes
    body = response.json()
    lines = body["series"]
    assert len(lines) == 11 and body["others"] == GUESTS + 1 - 10
    assert lines[-1]["key"] == "(other)"
    top = [sum(c for _, c in line["points"]) for line in lines[:-1]]
    assert top == [97] * 10  # the largest guests, largest first
    assert sum(top) + sum(c for _, c in lines[-1]["points"]) == total
    summary = viewer_client.get("/api/v1/summary", params=RANGE).json()
    assert summary["events"] == total

    wide = viewer_client.get(
        "/api/v1/series", params={**RANGE, "group_by": "guest", "step": 3600, "top": 50}
    ).json()
    assert len(wide["series"]) == 51
    assert viewer_client.get("/api/v1/series", params={**RANGE, "top": 51}).status_code == 422

    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {**RANGE, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = viewer_client.get("/api/v1/guests", params=params)
        assert page.status_code == 200 and len(page.content) < 1_000_000
        names += [g["name"] for g in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(names) == len(set(names)) == GUESTS + 1 and names == sorted(names)
    busiest = viewer_client.get("/api/v1/guests", params={**RANGE, "sort": "events", "limit": 3}).json()
    assert [g["events"] for g in busiest["items"]] == [97, 97, 97]
