"""/metrics right after startup: the kept sums are read in the background from startup on, and a
scrape meanwhile answers at once without them, flagged by splitwatch_metrics_warming 1."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine, text

import app.metrics_events
from app.settings import Settings
from app.store.engine import make_engine
from tests.app.alerts.conftest import POLL_BOUND_S, poll
from tests.app.conftest import Server, Tokens, waiting_on_locks
from tests.app.fill import T0, Filler, ev, state
from tests.app.test_metrics import key, samples

EVENTS = "splitwatch_events_total"
THROTTLED = "splitwatch_throttled_vcpu_seconds_lower_bound"
WARMING = key("splitwatch_metrics_warming")


@pytest.fixture
def filled(server: Server, tokens: Tokens) -> Server:
    """Two hosts' events sent, then the server stopped: each test starts its own process."""
    fill = Filler(server.url, tokens)
    fill.send("kvm-1", state=state(T0, cpus=4), events=[ev(T0, guest="web", count=3), ev(T0, count=2)])
    fill.send("kvm-2", events=[ev(T0, guest="legacy", action="sigbus", count=4)])
    server.stop()
    return server


@pytest.fixture
def direct(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


def events_by_guest(got: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    return {dict(k[1])["guest"]: v for k, v in got.items() if k[0] == EVENTS}


def test_a_scrape_during_warming_answers_without_the_sums_then_they_appear_exact(
    filled: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The event sums' read waits at this gate (as a read of 1.5 M rows takes seconds): a scrape
    # that waited for it would not answer before the gate opens, after the asserts.
    gate = threading.Event()
    real = app.metrics_events.read_base

    def gated(*args: object, **kwargs: object) -> app.metrics_events.Base:
        assert gate.wait(POLL_BOUND_S)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app.metrics_events, "read_base", gated)
    filled.start()
    try:
        with httpx.Client(base_url=filled.url, timeout=30) as client:
            got = samples(client)
            assert got[WARMING] == 1
            assert events_by_guest(got) == {}  # absent, never a partial sum
            assert got[key("splitwatch_hosts")] == 2 and got[key("splitwatch_database_up")] == 1
            gate.set()
            got = poll(lambda: (s := samples(client))[WARMING] == 0 and s, "the warmed sums")
            assert events_by_guest(got) == {"web": 3, "(host)": 2, "legacy": 4}
    finally:
        gate.set()
        filled.stop()


def test_warming_retries_until_the_sums_can_be_read(filled: Server, direct: Engine) -> None:
    # rollup_1h unreadable at startup (as a database still recovering): the rest is served.
    with direct.begin() as conn:
        conn.execute(text("ALTER TABLE rollup_1h RENAME TO rollup_1h_away"))
    filled.start()
    try:
        with httpx.Client(base_url=filled.url, timeout=30) as client:
            got = samples(client)
            assert got[WARMING] == 1 and events_by_guest(got) == {}
            assert got[key("splitwatch_database_up")] == 1 and got[key("splitwatch_hosts")] == 2
            with direct.begin() as conn:
                conn.execute(text("ALTER TABLE rollup_1h_away RENAME TO rollup_1h"))
            got = poll(lambda: (s := samples(client))[WARMING] == 0 and s, "the sums once readable")
            assert events_by_guest(got) == {"web": 3, "(host)": 2, "legacy": 4}
    finally:
        filled.stop()


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_shutdown_during_warming_cancels_the_read_it_waits_on(filled: Server, direct: Engine) -> None:
    # The week's throttling reads host_state: a lock held on it holds that read in the database.
    with direct.connect() as locker:
        locker.execute(text("LOCK TABLE host_state IN ACCESS EXCLUSIVE MODE"))
        filled.start()
        with httpx.Client(base_url=filled.url, timeout=30) as client:
            got = samples(client)
        assert got[WARMING] == 1 and key(THROTTLED, host="kvm-1") not in got
        assert events_by_guest(got) == {"web": 3, "(host)": 2, "legacy": 4}  # the other sums are in
        poll(lambda: waiting_on_locks(direct) == 1, "the throttling read waiting on the lock")
        filled.stop()  # within its lifespan's bounds, not when the lock goes
        assert waiting_on_locks(direct) == 0  # the read was cancelled, not left behind
        locker.rollback()


def test_shutdown_during_warming_ends_the_server(filled: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    reading = threading.Event()
    real = app.metrics_events.read_base

    def gated(*args: object, **kwargs: object) -> app.metrics_events.Base:
        reading.set()
        gate.wait(POLL_BOUND_S)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app.metrics_events, "read_base", gated)
    filled.start()
    try:
        assert reading.wait(POLL_BOUND_S)
        filled.stop()  # the lifespan's shutdown gives up on the read after its bound
        assert not filled.running
    finally:
        gate.set()
