"""GET /metrics: Prometheus text read from the database at scrape, valid for promtool."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

import app.metrics
import app.metrics_events
from app.settings import Settings
from app.store.engine import make_engine
from tests.app.alerts.conftest import POLL_BOUND_S, poll
from tests.app.conftest import Server, Tokens, assert_error, auth
from tests.app.fill import MINUTE, T0, Filler, ev, lost, state
from tests.app.ingest.payloads import events, payload
from tests.conftest import require_promtool


def samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
def fleet(server: Server, tokens: Tokens) -> Filler:
    fill = Filler(server.url, tokens)
    for i in range(3):
        verdict = "drift" if i == 2 else "transient"  # the agent's verdict on its third sample
        fill.send("kvm-1", state=state(T0 + i * MINUTE, cpus=4, off=[3], errors=[2], verdict=verdict))
    fill.send(
        "kvm-1",
        events=[
            ev(T0, guest="web", count=3),
            ev(T0 + MINUTE, guest="web", count=4),
            ev(T0, count=2),
            ev(T0, guest="web", kind="bus_lock", action="ratelimit", source="tracefs"),
        ],
        gaps=[lost(5, reason="overrun"), lost(2, reason="forged", first_seq=9)],
    )
    fill.send(
        "kvm-2", state=state(T0, mode="fatal", cpus=2), events=[ev(T0, guest="legacy", action="sigbus")]
    )
    restart(server)
    return fill


def restart(server: Server) -> None:
    """A process started after the data was sent: it reads the kept sums at startup (within
    EVENTS_CACHE_S of it a scrape is served them, as it would a later scrape's)."""
    server.stop()
    server.start()


def test_metrics_need_no_token_and_pass_promtool_lint(fleet: Filler, client: httpx.Client) -> None:
    promtool = require_promtool()
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=response.text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0 and check.stdout.strip() == "", check.stdout + check.stderr


def test_openmetrics_is_served_when_the_scraper_asks_for_it(fleet: Filler, client: httpx.Client) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n") and "splitwatch_events_total{" in response.text
    plain = client.get("/metrics", headers={"Accept": "text/plain"})
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_events_total_sums_event_counts_per_host_guest_action_kind_source(
    fleet: Filler, client: httpx.Client
) -> None:
    got = samples(client)
    events = {k: v for k, v in got.items() if k[0] == "splitwatch_events_total"}
    assert events == {
        key(
            "splitwatch_events_total",
            host="kvm-1",
            guest="web",
            action="warn",
            kind="split_lock",
            source="kmsg",
        ): 7,
        key(
            "splitwatch_events_total",
            host="kvm-1",
            guest="(host)",
            action="warn",
            kind="split_lock",
            source="kmsg",
        ): 2,
        key(
            "splitwatch_events_total",
            host="kvm-1",
            guest="web",
            action="ratelimit",
            kind="bus_lock",
            source="tracefs",
        ): 1,
        key(
            "splitwatch_events_total",
            host="kvm-2",
            guest="legacy",
            action="sigbus",
            kind="split_lock",
            source="kmsg",
        ): 1,
    }


def test_gaps_cpus_status_and_fleet_sizes(fleet: Filler, client: httpx.Client) -> None:
    got = samples(client)
    assert got[key("splitwatch_gaps_total", host="kvm-1", reason="overrun")] == 5
    assert got[key("splitwatch_gaps_total", host="kvm-1", reason="forged")] == 2
    assert [got[key("splitwatch_host_cpus", host="kvm-1", state=s)] for s in ("on", "off", "error")] == [
        2,
        1,
        1,
    ]
    # One series per host: its current status / verdict with value 1, none for the other words.
    status = {k: v for k, v in got.items() if k[0] == "splitwatch_host_status"}
    assert status == {
        key("splitwatch_host_status", host="kvm-1", status="drift"): 1,
        key("splitwatch_host_status", host="kvm-2", status="consistent"): 1,
    }
    assert got[key("splitwatch_host_consistency", host="kvm-1", verdict="drift")] == 1
    assert got[key("splitwatch_host_consistency", host="kvm-2", verdict="consistent")] == 1
    assert got[key("splitwatch_host_needs_action", host="kvm-1")] == 1
    assert got[key("splitwatch_host_needs_action", host="kvm-2")] == 0
    assert got[key("splitwatch_host_last_seen_timestamp_seconds", host="kvm-2")] > T0.timestamp()
    assert (got[key("splitwatch_hosts")], got[key("splitwatch_guests")]) == (2, 2)
    assert got[key("splitwatch_database_up")] == 1


LEGACY_SIGBUS = key(
    "splitwatch_events_total", host="kvm-2", guest="legacy", action="sigbus", kind="split_lock", source="kmsg"
)


def test_counters_grow_with_new_events_between_scrapes_once_the_cache_window_passed(
    fleet: Filler, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.metrics, "EVENTS_CACHE_S", 0.0)
    before = samples(client)[LEGACY_SIGBUS]
    fleet.send("kvm-2", events=[ev(T0 + MINUTE, guest="legacy", action="sigbus", count=4)])
    assert samples(client)[LEGACY_SIGBUS] == before + 4


def test_scrape_within_the_cache_window_reuses_event_sums_but_reads_hosts_afresh(
    fleet: Filler, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.metrics, "EVENTS_CACHE_S", 3600.0)
    before = samples(client)
    fleet.send("kvm-3", events=[ev(T0 + MINUTE, guest="legacy", action="sigbus", count=4)])
    after = samples(client)
    assert after[LEGACY_SIGBUS] == before[LEGACY_SIGBUS]
    assert (before[key("splitwatch_hosts")], after[key("splitwatch_hosts")]) == (2, 3)


def test_metrics_live_on_the_apps_own_registry_not_the_global_one(
    fleet: Filler, client: httpx.Client
) -> None:
    assert samples(client)[key("splitwatch_hosts")] == 2
    assert b"splitwatch_" not in generate_latest(REGISTRY)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_past_the_series_cap_quiet_guests_fold_into_other_and_host_totals_stay_exact(
    server: Server, tokens: Tokens, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    Filler(server.url, tokens).send(
        "kvm-1",
        events=[ev(T0, guest="loud", count=10), ev(T0, guest="quiet-1", count=2), ev(T0, guest="quiet-2")],
    )
    monkeypatch.setattr(app.metrics, "MAX_EVENT_SERIES", 2)
    monkeypatch.setattr(app.metrics, "TOP_GUESTS", 1)
    restart(server)
    events = {dict(k[1])["guest"]: v for k, v in samples(client).items() if k[0] == "splitwatch_events_total"}
    assert events == {"loud": 10, "(other)": 3}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unreadable_database_reports_database_up_0_instead_of_failing_the_scrape(
    server: Server, client: httpx.Client, settings: Settings
) -> None:
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE rollup_1h RENAME TO rollup_1h_away"))
    engine.dispose()
    got = samples(client)
    assert got[key("splitwatch_database_up")] == 0


def test_ingest_figures_count_this_process_requests_events_and_batch_sizes(
    server: Server, tokens: Tokens, client: httpx.Client
) -> None:
    headers = {**auth(tokens.agent()), "Content-Type": "application/json"}
    batch = payload(events(0, 10)).to_json()
    assert client.post("/api/v1/ingest", content=batch, headers=headers).json()["accepted"] == 10
    assert client.post("/api/v1/ingest", content=batch, headers=headers).json()["duplicates"] == 10
    assert client.post("/api/v1/ingest", content=b"{", headers=headers).status_code == 422
    assert client.post("/api/v1/ingest", content=batch).status_code == 401
    got = samples(client)
    assert got[key("splitwatch_ingest_requests_total", status="200")] == 2
    assert got[key("splitwatch_ingest_requests_total", status="422")] == 1
    assert got[key("splitwatch_ingest_requests_total", status="401")] == 1
    assert got[key("splitwatch_ingest_events_total", result="accepted")] == 10
    assert got[key("splitwatch_ingest_events_total", result="duplicate")] == 10
    assert got[key("splitwatch_ingest_duration_seconds_count")] == 4
    assert got[key("splitwatch_ingest_batch_events_count")] == 2  # stored batches only
    assert got[key("splitwatch_ingest_batch_events_sum")] == 20
    assert got[key("splitwatch_ingest_batch_events_bucket", le="10.0")] == 2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_with_a_metrics_token_set_metrics_need_it_and_nothing_is_read_without_it(
    settings: Settings,
) -> None:
    # issue 14: /metrics lists every host and guest name
    secret = "m" * 24
    srv = Server(settings.model_copy(update={"metrics_token": secret}))
    srv.start()
    try:
        with httpx.Client(base_url=srv.url) as c:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-of-24-chars"},
                {"Authorization": secret},
            ):
                r = c.get("/metrics", headers=headers)
                assert_error(r, 401, "invalid_metrics_token")
                assert "SPLITWATCH_METRICS_TOKEN" in r.json()["message"]
            ok = c.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
            assert ok.status_code == 200 and "splitwatch_database_up 1.0" in ok.text
    finally:
        srv.stop()


def test_an_empty_metrics_token_setting_means_none() -> None:
    # docker-compose.yml passes `${SPLITWATCH_METRICS_TOKEN:-}`: empty when .env sets none
    assert Settings(metrics_token="").metrics_token is None


def test_throttled_vcpu_seconds_is_the_weeks_tracefs_count_times_10_ms_per_host(
    server: Server, tokens: Tokens, client: httpx.Client
) -> None:
    promtool = require_promtool()
    fill = Filler(server.url, tokens)
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    fill.send(
        "kvm-busy",
        state=state(recent - dt.timedelta(hours=1), mitigate=1),
        events=[
            ev(recent, guest="web", source="tracefs", action="throttle", count=200),
            ev(recent, guest="db", source="tracefs", action="throttle", count=50),
            ev(recent - dt.timedelta(days=8), guest="web", source="tracefs", action="throttle", count=7),
        ],
    )
    fill.send(
        "kvm-off",
        state=state(recent - dt.timedelta(hours=1), mitigate=0),
        events=[ev(recent, guest="web2", source="tracefs", action="warn", count=900)],
    )
    fill.send(
        "kvm-log",
        state=state(recent - dt.timedelta(hours=1), mitigate=1),
        events=[ev(recent, guest="vm", source="kmsg", action="throttle")],
    )
    restart(server)  # the week's figure is kept a minute from the startup read
    got = samples(client)
    name = "splitwatch_throttled_vcpu_seconds_lower_bound"
    assert got[key(name, host="kvm-busy")] == 2.5  # 250 traps in the last 7 days x 10 ms
    assert got[key(name, host="kvm-off")] == 0.0  # mitigate 0: warnings, no sleep
    assert key(name, host="kvm-log") not in got  # kernel-log sightings only: no count known
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=client.get("/metrics").text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and check.stdout.strip() == "", check.stdout + check.stderr


def test_past_an_inline_read_recent_events_count_at_once_and_late_ones_when_the_base_is_reread(
    server: Server, fleet: Filler, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every read of the older hours counts as costly (as at fleet size): they are kept for
    # EVENTS_BASE_S and re-read in the background; the last hours are read on every scrape.
    monkeypatch.setattr(app.metrics, "INLINE_READ_S", 0.0)
    monkeypatch.setattr(app.metrics, "EVENTS_CACHE_S", 0.0)
    monkeypatch.setattr(app.metrics, "EVENTS_BASE_S", 3600.0)
    restart(server)  # read at startup, costly: kept
    before = samples(client)[LEGACY_SIGBUS]
    now = dt.datetime.now(dt.UTC)
    fleet.send("kvm-2", events=[ev(now, guest="legacy", action="sigbus", count=4)])
    assert samples(client)[LEGACY_SIGBUS] == before + 4
    fleet.send("kvm-2", events=[ev(T0 + 2 * MINUTE, guest="legacy", action="sigbus", count=5)])  # days late
    assert samples(client)[LEGACY_SIGBUS] == before + 4  # its hour's sum is the kept one
    monkeypatch.setattr(app.metrics, "EVENTS_BASE_S", 0.0)
    poll(lambda: samples(client)[LEGACY_SIGBUS] == before + 9, "the late events in the re-read base")
    events_total = {k: v for k, v in samples(client).items() if k[0] == "splitwatch_events_total"}
    assert sum(events_total.values()) == 1 + 7 + 2 + 1 + 4 + 5  # counted once each, base or live


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_series_cap_folds_the_same_way_in_the_kept_hours_and_the_live_ones(
    server: Server, tokens: Tokens, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.metrics, "INLINE_READ_S", 0.0)
    monkeypatch.setattr(app.metrics, "EVENTS_CACHE_S", 0.0)
    monkeypatch.setattr(app.metrics, "MAX_EVENT_SERIES", 2)
    monkeypatch.setattr(app.metrics, "TOP_GUESTS", 1)
    fill = Filler(server.url, tokens)
    fill.send("kvm-1", events=[ev(T0, guest="loud", count=10), ev(T0, guest="quiet-1", count=2), ev(T0)])
    restart(server)
    assert guest_sums(client) == {"loud": 10, "(other)": 2, "(host)": 1}
    now = dt.datetime.now(dt.UTC)
    fill.send("kvm-1", events=[ev(now, guest="quiet-2", count=50), ev(now, guest="loud", count=1)])
    # quiet-2 is now the busiest, but the cut was made with the kept hours: it joins (other)
    # until they are re-read; host totals stay exact either way.
    assert guest_sums(client) == {"loud": 11, "(other)": 52, "(host)": 1}


def guest_sums(client: httpx.Client) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in samples(client).items():
        if k[0] == "splitwatch_events_total":
            guest = dict(k[1])["guest"]
            out[guest] = out.get(guest, 0) + v
    return out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_scrape_is_served_the_kept_sums_while_they_are_reread_in_the_background(
    server: Server, fleet: Filler, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.metrics, "INLINE_READ_S", 0.0)
    restart(server)
    before = samples(client)[LEGACY_SIGBUS]  # the first read, at startup
    monkeypatch.setattr(app.metrics, "EVENTS_BASE_S", 0.0)
    # The re-read waits at this gate: a scrape that waited for it would never answer.
    gate, reading = threading.Event(), threading.Event()
    real = app.metrics_events.read_base

    def gated(*args: object, **kwargs: object) -> app.metrics_events.Base:
        reading.set()
        assert gate.wait(POLL_BOUND_S)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app.metrics_events, "read_base", gated)
    fleet.send("kvm-2", events=[ev(T0 + 2 * MINUTE, guest="legacy", action="sigbus", count=5)])  # days late
    try:
        assert samples(client)[LEGACY_SIGBUS] == before  # served the kept sums at once
        assert reading.wait(POLL_BOUND_S)
        assert samples(client)[LEGACY_SIGBUS] == before  # one re-read at a time, still kept
    finally:
        gate.set()
    poll(lambda: samples(client)[LEGACY_SIGBUS] == before + 5, "the late events once re-read")
