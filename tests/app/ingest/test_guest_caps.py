"""How many guest names one host may bring (#14): a clear 413 per batch, a counted gap in total.

One agent token once created 40,000 guests. SPLITWATCH_MAX_NEW_GUESTS_PER_BATCH bounds the
guests a batch may bring that its host never reported: over it the batch is refused with 413,
and the agent (agent/transport.py) sends it again in smaller parts, so nothing is lost.
SPLITWATCH_MAX_GUESTS_PER_HOST bounds a host's guests in total: the events of a guest beyond it
are stored without their guest and counted in a `guest_cap` gap, never silently dropped.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.spool import Spool
from agent.transport import Sender, Transport
from app.settings import Settings
from tests.app.conftest import Server, Tokens, assert_error, auth
from tests.app.fill import HOUR, T0, Filler, ev

RANGE = {"since": "2026-11-24T11:00:00Z", "until": "2026-11-24T14:00:00Z"}


@pytest.fixture
def capped(settings: Settings) -> Iterator[Server]:
    srv = Server(settings.model_copy(update={"max_guests_per_host": 5, "max_new_guests_per_batch": 3}))
    srv.start()
    yield srv
    srv.stop()


def guest_names(client: httpx.Client, **params: Any) -> list[str]:
    body = client.get("/api/v1/guests", params={**RANGE, "limit": 1000, **params}).json()
    return [g["name"] for g in body["items"]]


def test_a_batch_bringing_more_new_guests_than_allowed_gets_413_naming_the_setting(
    capped: Server, tokens: Tokens
) -> None:
    fill = Filler(capped.url, tokens)
    response = fill.post(fill.payload("h1", events=[ev(T0, guest=f"vm-{n}") for n in range(4)]))
    body = assert_error(response, 413, "too_many_new_guests")
    assert "4 guests" in body["message"] and "SPLITWATCH_MAX_NEW_GUESTS_PER_BATCH" in body["message"]
    with httpx.Client(base_url=capped.url, headers=auth(tokens.viewer())) as viewer:
        assert guest_names(viewer) == []  # nothing of it was stored
        # Guests the host already reported are not new: 3 new per batch, any number known.
        fill.send("h1", events=[ev(T0, guest=f"vm-{n}") for n in range(3)])
        fill.send("h1", events=[ev(T0, guest=f"vm-{n}") for n in range(3)] + [ev(T0, guest="vm-3")])
        assert guest_names(viewer) == ["vm-0", "vm-1", "vm-2", "vm-3"]


def test_the_agent_answers_413_by_sending_smaller_parts_and_every_event_arrives_once(
    capped: Server, tokens: Tokens, tmp_path: Path
) -> None:
    fill = Filler(capped.url, tokens)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    try:
        five_new = fill.payload("h1", events=[ev(T0, guest=f"vm-{n}") for n in range(5)])
        spool.append([five_new.to_json().encode()])
        sender = Sender(spool, Transport(capped.url, tokens.agent("h1"), timeout_s=10), rng=random.Random(1))
        report = sender.send_pending(force=True)
        assert (spool.depth, report.set_aside, report.accepted) == (0, 0, 5)
    finally:
        spool.close()
    with httpx.Client(base_url=capped.url, headers=auth(tokens.viewer())) as viewer:
        assert guest_names(viewer) == [f"vm-{n}" for n in range(5)]


def test_guests_beyond_the_hosts_total_keep_their_events_without_guest_and_are_a_counted_gap(
    capped: Server, tokens: Tokens
) -> None:
    fill = Filler(capped.url, tokens)
    fill.send("h1", events=[ev(T0, guest=f"vm-{n}") for n in range(3)])
    fill.send("h1", events=[ev(T0, guest=f"vm-{n}") for n in range(3, 5)])  # 5: the cap
    over = fill.payload("h1", events=[ev(T0 + HOUR, guest="vm-5", count=7), ev(T0 + HOUR, guest="vm-6")])
    assert fill.post(over).json() == {"accepted": 2, "duplicates": 0}
    assert fill.post(over).json() == {"accepted": 0, "duplicates": 2}  # a resend counts nothing twice
    fill.send("h2", events=[ev(T0, guest="vm-5")])  # another host's cap is its own

    with httpx.Client(base_url=capped.url, headers=auth(tokens.viewer())) as viewer:
        assert guest_names(viewer, host="h1") == [f"vm-{n}" for n in range(5)]
        gaps = viewer.get("/api/v1/gaps", params={"host": "h1"}).json()["items"]
        assert [(g["reason"], g["count"], g["first_seq"], g["last_seq"]) for g in gaps] == [
            ("guest_cap", 2, 6, 7)
        ]
        stored = viewer.get("/api/v1/events", params={**RANGE, "host": "h1", "limit": 1000}).json()["items"]
        assert sum(e["count"] for e in stored) == 5 + 7 + 1  # every event kept
        assert sorted(e["guest"] or "-" for e in stored if e["seq"] >= 6) == ["-", "-"]
        assert [e["vmm"] for e in stored if e["seq"] >= 6] == ["qemu", "qemu"]  # still a guest's trap
        # The charts count them too, as the host's own (the rollups of the hour and the minute).
        for step in (3600, 60):
            params = {**RANGE, "host": "h1", "group_by": "guest", "step": step}
            body = viewer.get("/api/v1/series", params=params).json()
            totals = {line["key"]: sum(c for _, c in line["points"]) for line in body["series"]}
            assert totals == {**{f"vm-{n}": 1 for n in range(5)}, "(host)": 7 + 1}, step
