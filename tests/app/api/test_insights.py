"""GET /api/v1/insights/*: throttling cost, fatal readiness and kernel eras against hand counts.

Everything is arranged through the real ingest path (tests/app/fill.py): tracefs events carry
true counts, kmsg events are first sightings (count 0 or 1). Every expected figure below is
worked out by hand from what was sent: 10 ms per counted trap, written as a literal.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.store import insights
from app.store.engine import make_engine
from app.store.insights import host_throttling, read_hosts
from tests.app.conftest import Server, Tokens, assert_error, auth
from tests.app.fill import DAY, HOUR, MINUTE, SECOND, T0, Filler, ev, state

WINDOW = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T15:00:00Z"}  # T0 .. T0 + 3 h


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(
        server.url,
        tokens,
        kernels={
            "old-515": "5.15.0-91-generic",
            "e-54": "5.4.0-150-generic",
            "e-515": "5.15.0-91-generic",
            "e-61": "6.1.0",
            "e-66-0": "6.6.30",
            "e-66-1": "6.6.30",
            "e-615": "6.15.2",
            "e-el8": "4.18.0-394.el8.x86_64",
        },
    )


def get(client: httpx.Client, what: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/v1/insights/{what}", params={**WINDOW, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by(rows: list[dict[str, Any]], *keys: str) -> dict[Any, dict[str, Any]]:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


# ----------------------------------------------------------------------------- §2 throttling


def fill_throttling(fill: Filler) -> None:
    # kvm-1: 6.8, warn, mitigate 1 since an hour before the window: misery mode all along.
    fill.send(
        "kvm-1",
        state=state(T0 - HOUR, mitigate=1),
        events=[
            ev(T0 + 10 * MINUTE + 17 * SECOND, guest="web", source="tracefs", action="throttle", count=120),
            ev(T0 + 70 * MINUTE, guest="web", source="tracefs", action="throttle", count=80),
            ev(
                T0 + 10 * MINUTE, guest="web", source="kmsg", action="throttle", count=1
            ),  # same traps, a line
            ev(
                T0 + 2 * HOUR + 59 * MINUTE + 30 * SECOND, source="tracefs", action="throttle", count=50
            ),  # gcc
            ev(T0 + 20 * MINUTE, guest="quiet", source="kmsg", action="throttle", count=1),
            ev(T0 + 25 * MINUTE, guest="quiet", source="kmsg", action="throttle", count=0),
            ev(
                T0 + 4 * HOUR, guest="web", source="tracefs", action="throttle", count=999
            ),  # after the window
        ],
    )
    # kvm-off: mitigate 0: a plain warning, no sleep.
    fill.send(
        "kvm-off",
        state=state(T0 - HOUR, mitigate=0),
        events=[ev(T0 + HOUR, guest="web-off", source="tracefs", action="warn", count=1000)],
    )
    # old-515: 5.15 has no misery mode.
    fill.send(
        "old-515",
        state=state(T0 - HOUR, mitigate=None),
        events=[ev(T0 + HOUR, guest="legacy", source="tracefs", action="warn", count=500)],
    )
    # kvm-flip: misery until T0 + 1 h, then mitigate 0 (its current row says 0: history decides).
    fill.send("kvm-flip", state=state(T0 - HOUR, mitigate=1))
    fill.send(
        "kvm-flip",
        state=state(T0 + HOUR, mitigate=0),
        events=[
            ev(T0 + 30 * MINUTE, guest="batch", source="tracefs", action="throttle", count=30),
            ev(T0 + 90 * MINUTE, guest="batch", source="tracefs", action="warn", count=70),
        ],
    )
    # kvm-fatal: fatal mode kills, it does not throttle.
    fill.send(
        "kvm-fatal",
        state=state(T0 - HOUR, mode="fatal"),
        events=[ev(T0 + HOUR, guest="db", source="tracefs", action="sigbus", count=3)],
    )


def test_throttling_cost_is_the_tracefs_count_times_10_ms_per_guest_host_and_fleet(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill_throttling(fill)
    body = get(viewer_client, "throttling")
    window_s = 3 * 3600
    assert body["window_s"] == window_s
    assert body["bound"].startswith("at least")

    guests = by(body["guests"], "host", "guest")
    web = guests[("kvm-1", "web")]
    assert web["counted_traps"] == 200  # 120 + 80; the kmsg line is not added
    assert web["vcpu_seconds_lower_bound"] == 2.0  # 200 x 10 ms
    assert web["vcpu_share"] == pytest.approx(2.0 / window_s)
    assert guests[("kvm-1", "(host)")]["vcpu_seconds_lower_bound"] == 0.5  # gcc: 50 x 10 ms
    assert guests[("kvm-flip", "batch")]["vcpu_seconds_lower_bound"] == 0.3  # only the 30 before mitigate=0

    quiet = guests[("kvm-1", "quiet")]
    assert quiet["vcpu_seconds_lower_bound"] is None and quiet["vcpu_share"] is None
    assert quiet["uncounted_sightings"] == 2  # a line with count 1 and one with count 0
    assert quiet["no_figure_reason"].startswith("no count known")

    hosts = by(body["hosts"], "host")
    assert set(hosts) == {"kvm-1", "kvm-flip"}  # mitigate 0, 5.15 and fatal cost nothing
    assert hosts["kvm-1"]["vcpu_seconds_lower_bound"] == 2.5 and hosts["kvm-1"]["counted_traps"] == 250
    assert hosts["kvm-1"]["uncounted_sightings"] == 2  # quiet's; web's line is the same traps as its count
    assert hosts["kvm-1"]["misery_s"] == window_s
    assert hosts["kvm-flip"]["misery_s"] == 3600
    assert body["total"]["vcpu_seconds_lower_bound"] == 2.8  # 280 traps
    fleet = body["guests_total"]
    assert fleet["vcpu_seconds_lower_bound"] == 2.3  # 230 guest traps (gcc is a host process)
    assert fleet["vcpu_hours_lower_bound"] == pytest.approx(2.3 / 3600)
    assert fleet["sentence"] == (
        "Guests lost at least 2.3 vCPU-seconds to throttling in this window (230 counted traps x 10 ms)."
    )
    # Most vCPU time first; the no-count guest after every figure.
    assert [(g["host"], g["guest"]) for g in body["guests"]] == [
        ("kvm-1", "web"),
        ("kvm-1", "(host)"),
        ("kvm-flip", "batch"),
        ("kvm-1", "quiet"),
    ]


def test_a_host_filter_and_a_limit_bound_the_answer(fill: Filler, viewer_client: httpx.Client) -> None:
    fill_throttling(fill)
    body = get(viewer_client, "throttling", host=["kvm-flip", "kvm-off"])
    assert [h["host"] for h in body["hosts"]] == ["kvm-flip"]
    assert body["total"]["vcpu_seconds_lower_bound"] == 0.3
    limited = get(viewer_client, "throttling", limit=1)
    assert len(limited["guests"]) == 1 and limited["more_guests"] == 3
    assert len(limited["hosts"]) == 1 and limited["more_hosts"] == 1
    assert limited["total"]["vcpu_seconds_lower_bound"] == 2.8  # totals are never cut


def test_a_host_known_only_from_kmsg_has_no_count_known_not_a_made_up_figure(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send(
        "kvm-log",
        state=state(T0 - HOUR, mitigate=1),
        events=[ev(T0 + HOUR, guest="vm", source="kmsg", action="throttle", count=1)],
    )
    body = get(viewer_client, "throttling")
    assert body["total"]["vcpu_seconds_lower_bound"] is None
    assert body["total"]["no_figure_reason"].startswith("no count known")
    assert body["guests_total"]["sentence"].startswith(
        "Guests lost vCPU time to throttling in this window, but"
    )


# ----------------------------------------------------------------------- §3 fatal readiness

READY_WINDOW = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-27T12:00:00Z"}  # T0 .. T0 + 3 days


def fill_readiness(fill: Filler) -> None:
    fill.send("r-ready", state=state(T0 - HOUR))
    fill.send(
        "r-guest",
        state=state(T0 - HOUR),
        events=[
            ev(T0 + DAY, guest="legacy", source="kmsg", action="throttle"),
            ev(T0 + 2 * DAY, guest="legacy", source="tracefs", action="throttle", count=5),
            ev(T0 + HOUR, comm="java", tid=77, tgid=77, source="kmsg", action="throttle"),
            ev(T0 + HOUR, guest="ac-guest", source="tracefs", action="reflect", count=4),  # its own #AC
            ev(T0 + HOUR, comm="memcpy-test", kind="bus_lock", source="tracefs", action="warn", count=3),
        ],
    )
    # A CPU with bus-lock #DB but no split-lock #AC: fatal mode would SIGBUS the bus lock.
    fill.send(
        "r-bld",
        state=state(T0 - HOUR, sld_supported=False),
        events=[
            ev(T0 + 3 * HOUR, comm="dpdk-worker", kind="bus_lock", source="tracefs", action="warn", count=9)
        ],
    )
    fill.send("r-off", state=state(T0 - HOUR, mode="off"))
    fill.send(
        "r-fatal",
        state=state(T0 - HOUR, mode="fatal"),
        events=[ev(T0 + 2 * HOUR, guest="db", source="kmsg", action="sigbus")],
    )


def test_readiness_lists_exactly_the_offenders_fatal_mode_would_kill(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill_readiness(fill)
    body = viewer_client.get("/api/v1/insights/fatal-readiness", params=READY_WINDOW).json()
    got = {
        (
            o["host"],
            o["guest"],
            o["comm"],
            o["kind"],
            o["count"],
            o["sightings"],
            o["killed"],
            o["last_trap_at"],
        )
        for o in body["offenders"]
    }
    assert got == {
        ("r-guest", "legacy", "CPU 0/KVM", "split_lock", 5, 1, False, "2026-11-26T12:00:00Z"),
        ("r-guest", None, "java", "split_lock", None, 1, False, "2026-11-24T13:00:00Z"),
        ("r-bld", None, "dpdk-worker", "bus_lock", 9, 0, False, "2026-11-24T15:00:00Z"),
        ("r-fatal", "db", "CPU 0/KVM", "split_lock", None, 1, True, "2026-11-24T14:00:00Z"),
    }
    assert body["offenders"][0]["last_trap_at"] == "2026-11-26T12:00:00Z"  # newest first
    assert body["more_offenders"] == 0

    hosts = by(body["hosts"], "host")
    assert hosts["r-ready"]["ready"] is True
    assert hosts["r-ready"]["verdict"] == "ready: no offender in 3 days"
    assert hosts["r-guest"]["ready"] is False and hosts["r-guest"]["offenders"] == 2
    assert hosts["r-guest"]["last_offence_at"] == "2026-11-26T12:00:00Z"
    assert hosts["r-off"]["ready"] is None and hosts["r-off"]["verdict"].startswith("cannot tell")
    assert hosts["r-fatal"]["verdict"].startswith("already fatal")
    assert (body["hosts_ready"], body["hosts_not_ready"], body["hosts_unknown"]) == (1, 3, 1)
    assert [h["ready"] for h in body["hosts"]] == [False, False, False, None, True]  # not ready first


def test_readiness_of_a_pool_is_bounded_and_counts_what_it_cut(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill_readiness(fill)
    params = {**READY_WINDOW, "host": ["r-guest", "r-ready"], "limit": 1}
    body = viewer_client.get("/api/v1/insights/fatal-readiness", params=params).json()
    assert len(body["offenders"]) == 1 and body["more_offenders"] == 1
    assert [h["host"] for h in body["hosts"]] == ["r-guest"] and body["more_hosts"] == 1


# --------------------------------------------------------------------------- §4 kernel eras


def test_kernel_eras_name_floors_upgrade_impact_and_stuck_off_hosts(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("e-54", state=state(T0 - HOUR, mitigate=None))
    fill.send(
        "e-515",
        state=state(T0 - HOUR, mitigate=None),
        events=[
            ev(T0 + HOUR, guest="vm-a", source="tracefs", action="warn", count=90),
            ev(T0 + 2 * HOUR, guest="vm-a", source="tracefs", action="warn", count=30),
            ev(T0 + HOUR, comm="java", source="kmsg", action="warn"),
        ],
    )
    fill.send("e-61", state=state(T0 - HOUR, mitigate=None))
    fill.send("e-66-0", state=state(T0 - HOUR, mitigate=0))
    fill.send("e-66-1", state=state(T0 - HOUR, mitigate=1))
    fill.send("e-615", state=state(T0 - HOUR, mitigate=0))
    fill.send("e-el8", state=state(T0 - HOUR, mitigate=None))
    body = get(viewer_client, "kernel-eras")
    assert body["as_of"] == "now"
    assert body["by_era"] == {
        "mitigate_off": 1,
        "mitigate_on": 1,
        "misery": 1,
        "none": 1,
        "per_task": 1,
        "stuck_off": 1,
        "unknown": 1,
    }
    eras = {h["host"]: h["era"] for h in body["hosts"]}
    assert eras == {
        "e-54": "none",
        "e-515": "per_task",
        "e-61": "misery",
        "e-66-0": "stuck_off",
        "e-66-1": "mitigate_on",
        "e-615": "mitigate_off",
        "e-el8": "unknown",
    }
    assert [h["host"] for h in body["floors"]] == ["e-515"]
    assert [h["host"] for h in body["stuck_off"]] == ["e-66-0"]
    assert by(body["floors"], "host")["e-515"]["counts_are_floors"] is True

    assert [u["host"] for u in body["upgrade"]] == ["e-515"]  # 5.4 and el8 have no known offender
    rates = by(body["upgrade"][0]["offenders"], "comm")
    vm = rates["CPU 0/KVM"]
    assert vm["guest"] == "vm-a" and vm["count"] == 120
    assert vm["per_hour"] == 40.0  # 120 traps over the 3-hour window
    assert vm["throttled_s_per_hour_after_upgrade"] == pytest.approx(0.4)  # 40/h x 10 ms
    java = rates["java"]
    assert java["basis"] == "kernel-log sightings" and java["throttled_s_per_hour_after_upgrade"] is None


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("what", ["throttling", "fatal-readiness", "kernel-eras"])
def test_an_unknown_host_in_the_filter_is_a_404_naming_it(
    what: str, fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("kvm-1", state=state(T0))
    response = viewer_client.get(f"/api/v1/insights/{what}", params={"host": ["kvm-1", "kvm-typo"]})
    body = assert_error(response, 404, "host_not_found")
    assert "'kvm-typo'" in body["message"]


@pytest.mark.parametrize("what", ["throttling", "fatal-readiness", "kernel-eras"])
def test_insights_need_a_viewer_token_and_a_sane_limit(
    what: str, client: httpx.Client, tokens: Tokens, viewer_client: httpx.Client
) -> None:
    assert_error(client.get(f"/api/v1/insights/{what}"), 401)
    assert_error(client.get(f"/api/v1/insights/{what}", headers=auth(tokens.agent("h1"))), 403)
    assert_error(viewer_client.get(f"/api/v1/insights/{what}", params={"limit": 0}), 422)
    assert_error(viewer_client.get(f"/api/v1/insights/{what}", params={"host": ["x"] * 501}), 422)
    assert_error(
        viewer_client.get(f"/api/v1/insights/{what}", params={"since": "2026-11-25", "until": "2026-11-24"}),
        422,
    )


def test_a_host_upgraded_from_5_15_to_6_8_mid_window_pays_only_after_the_upgrade(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send(
        "kvm-up",
        kernel="5.15.0-91-generic",
        state=state(T0 - HOUR, mitigate=None),
        events=[ev(T0 + 30 * MINUTE, guest="vm", source="tracefs", action="warn", count=400)],
    )
    fill.send(
        "kvm-up",
        kernel="6.8.0-51-generic",
        boot_id="boot-2",
        state=state(T0 + HOUR, mitigate=1),
        events=[ev(T0 + 2 * HOUR, guest="vm", source="tracefs", action="throttle", count=60)],
    )
    body = get(viewer_client, "throttling")
    (host,) = body["hosts"]
    assert host["counted_traps"] == 60 and host["vcpu_seconds_lower_bound"] == 0.6
    assert host["misery_s"] == 2 * 3600  # from the upgrade to the window's end
    eras = get(viewer_client, "kernel-eras")
    assert eras["by_era"] == {"mitigate_on": 1}  # the kernel it runs now


def test_host_throttling_gives_each_host_the_figure_the_throttling_answer_gives_it(
    fill: Filler, viewer_client: httpx.Client, settings: Settings
) -> None:
    # /metrics reads host_throttling (per host, no guest dimension: #13); it must agree with
    # the API's per-host answer on every kind of host: counted, log-only, flipped, none.
    fill_throttling(fill)
    fill.send("kvm-log", state=state(T0 - HOUR, mitigate=1), events=[ev(T0 + MINUTE, guest="vm", count=1)])
    api = {h["host"]: h["vcpu_seconds_lower_bound"] for h in get(viewer_client, "throttling")["hosts"]}
    since, until = (dt.datetime.fromisoformat(WINDOW[k].replace("Z", "+00:00")) for k in ("since", "until"))
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            rows, _ = read_hosts(conn, None)
            names = {r.id: r.name for r in rows}
            figures = host_throttling(conn, list(names), since=since, until=until)
    finally:
        engine.dispose()
    assert {names[h]: v for h, v in figures.items()} == api
    assert api["kvm-log"] is None and api["kvm-1"] == 2.5  # the log-only host and a counted one


def test_throttling_names_every_guest_however_many_name_lookups_it_takes(
    fill: Filler, viewer_client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At fleet size a week names 70,000+ guests: more than PostgreSQL takes in one statement.
    fill_throttling(fill)
    whole = get(viewer_client, "throttling")["guests"]
    monkeypatch.setattr(insights, "NAMES_PER_QUERY", 1)
    assert get(viewer_client, "throttling")["guests"] == whole
    assert {g["guest"] for g in whole} >= {"web", "quiet", "(host)"}
