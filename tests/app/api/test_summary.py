"""GET /api/v1/summary: the fleet overview's figures agree with the lists they summarise."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import update

from app.settings import Settings
from app.store.engine import make_engine
from app.store.tables import host
from tests.app.conftest import Server, Tokens, assert_error
from tests.app.fill import HOUR, MINUTE, T0, Filler, ev, lost, state


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def test_summary_counts_events_guests_and_hosts_by_condition(
    fill: Filler, viewer_client: httpx.Client, settings: Settings
) -> None:
    for i in range(3):  # kvm-1 drifts: its agent says so (core 1 off in three samples)
        fill.send("kvm-1", state=state(T0 + i * MINUTE, off=[1], verdict="drift" if i == 2 else "transient"))
    fill.send("kvm-1", events=[ev(T0, guest="web", count=5), ev(T0, count=2)])
    fill.send("kvm-2", state=state(T0, mode="fatal"), events=[ev(T0 + HOUR, guest="legacy", action="sigbus")])
    fill.send("kvm-3", state=state(T0, mode="off", verdict="off_by_design"), gaps=[lost(6)])
    fill.send("kvm-4", events=[ev(T0 - HOUR, guest="old", count=100)])  # before the range, no state
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:  # kvm-3's agent stopped reporting 10 minutes ago
        conn.execute(
            update(host)
            .where(host.c.name == "kvm-3")
            .values(last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
        )
    engine.dispose()

    body = viewer_client.get(
        "/api/v1/summary", params={"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T15:00:00Z"}
    ).json()
    assert body == {
        "events": 8,
        "guests_affected": 2,
        "guests_killed": 1,
        "hosts_total": 4,
        "hosts_by_mode": {"fatal": 1, "off": 1, "unknown": 1, "warn": 1},
        "hosts_by_status": {"consistent": 1, "drift": 1, "silent": 1, "unknown": 1},
        "hosts_need_action": 1,
        "hosts_silent": 1,
        "gaps": 0,  # the gap was received now, outside this range
    }
    now = dt.datetime.now(dt.UTC)
    recent = {"since": (now - HOUR).isoformat(), "until": (now + HOUR).isoformat()}
    assert viewer_client.get("/api/v1/summary", params=recent).json()["gaps"] == 6


def test_summary_events_equal_the_sum_of_the_host_list(fill: Filler, viewer_client: httpx.Client) -> None:
    fill.send("kvm-1", events=[ev(T0 + i * 7 * MINUTE, guest=f"vm{i % 3}", count=i) for i in range(20)])
    fill.send("kvm-2", events=[ev(T0 + i * 11 * MINUTE, count=2) for i in range(10)])
    params = {"since": "2026-11-24T12:03:30Z", "until": "2026-11-24T13:41:10Z"}
    summary = viewer_client.get("/api/v1/summary", params=params).json()
    listed = viewer_client.get("/api/v1/hosts", params=params).json()["items"]
    events = viewer_client.get("/api/v1/events", params={**params, "limit": 1000}).json()["items"]
    assert summary["events"] == sum(h["events"] for h in listed) == sum(e["count"] for e in events)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_summary_of_an_empty_fleet_is_all_zeros(viewer_client: httpx.Client, client: httpx.Client) -> None:
    body = viewer_client.get("/api/v1/summary").json()
    assert body["hosts_total"] == 0 and body["events"] == 0 and body["hosts_by_mode"] == {}
    assert_error(client.get("/api/v1/summary"), 401)
