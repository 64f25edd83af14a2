"""app/store/hosts.py: host views from the host row, the range, and the state history."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from app.store.hosts import CpuView, StatusRule, cpu_views, get_host, list_hosts
from tests.app.conftest import Server, Tokens
from tests.app.fill import HOUR, MINUTE, T0, Filler, ev, state


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def rule(silent_after_s: float = 300) -> StatusRule:
    return StatusRule(now=dt.datetime.now(dt.UTC), silent_after_s=silent_after_s, drift_streak=3)


def test_cpu_list_is_read_in_cpu_order_and_malformed_entries_are_skipped() -> None:
    stored = [
        {"cpu": 2, "test_ctrl": 0, "sld_on": False, "bld_on": None, "error": None},
        {"cpu": 0, "test_ctrl": 536870912, "sld_on": True, "bld_on": True},  # no "error" key
        {"test_ctrl": 1},
        "junk",
    ]
    assert cpu_views(stored) == [CpuView(0, 536870912, True, True, None), CpuView(2, 0, False, None, None)]
    assert cpu_views(None) == [] and cpu_views({"cpu": 1}) == []


def test_hosts_are_listed_by_name_with_range_figures(fill: Filler, engine: Engine) -> None:
    fill.send(
        "b-host", events=[ev(T0, guest="vm1", count=4), ev(T0, guest="vm2"), ev(T0 + 2 * HOUR, count=7)]
    )
    fill.send("a-host", state=state(T0))
    with engine.connect() as conn:
        views = list_hosts(conn, since=T0, until=T0 + HOUR, rule=rule()).items
    assert [(v.name, v.events, v.guests) for v in views] == [("a-host", 0, 0), ("b-host", 5, 2)]


def test_a_rule_with_a_tiny_silence_window_marks_every_host_silent(fill: Filler, engine: Engine) -> None:
    fill.send("h1", state=state(T0))
    late = StatusRule(now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5), silent_after_s=1, drift_streak=3)
    with engine.connect() as conn:
        assert [v.status for v in list_hosts(conn, since=T0, until=T0 + HOUR, rule=late).items] == ["silent"]


def test_state_history_is_led_by_the_latest_state_before_the_range_only(fill: Filler, engine: Engine) -> None:
    fill.send("h1", state=state(T0 - 2 * HOUR, mode="off"))
    fill.send("h1", state=state(T0 - HOUR, mode="warn"))
    fill.send("h1", state=state(T0 + 10 * MINUTE, mode="fatal"))
    fill.send("h1", state=state(T0 + 2 * HOUR, mode="off"))  # after the range
    with engine.connect() as conn:
        detail = get_host(conn, "h1", since=T0, until=T0 + HOUR, rule=rule())
        assert get_host(conn, "h9", since=T0, until=T0 + HOUR, rule=rule()) is None
    assert detail is not None
    assert [(s.observed_at, s.mode) for s in detail.states] == [
        (T0 - HOUR, "warn"),
        (T0 + 10 * MINUTE, "fatal"),
    ]


def test_a_host_flapping_for_weeks_lists_its_newest_1000_state_changes_led_by_the_one_before(
    fill: Filler, engine: Engine
) -> None:
    from sqlalchemy import insert, select

    from app.store.tables import host, host_state

    fill.send("h1", state=state(T0))
    with engine.begin() as conn:
        host_id = conn.execute(select(host.c.id).where(host.c.name == "h1")).scalar_one()
        conn.execute(
            insert(host_state),
            [
                {"host_id": host_id, "observed_at": T0 + n * MINUTE, "boot_id": "b", "kernel": "6.8",
                 "mode": "warn" if n % 2 else "off", "sld_supported": True, "bld_supported": True,
                 "cpus_on": 0, "cpus_off": 0, "cpus_error": 0, "drift": False, "cpus": []}
                for n in range(1, 1201)
            ],
        )  # fmt: skip
    with engine.connect() as conn:
        detail = get_host(conn, "h1", since=T0, until=T0 + 30 * HOUR, rule=rule())
    assert detail is not None
    assert len(detail.states) == 1001
    assert [s.observed_at for s in detail.states[:2]] == [T0 + 200 * MINUTE, T0 + 201 * MINUTE]
    assert detail.states[-1].observed_at == T0 + 1200 * MINUTE
