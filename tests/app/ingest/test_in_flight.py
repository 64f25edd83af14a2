"""A process works on at most SPLITWATCH_INGEST_MAX_IN_FLIGHT ingest requests at once; one more
waits, unread, for a place up to SPLITWATCH_INGEST_MAX_WAIT_S, first come first served, and is
then answered 503 `overloaded` without Retry-After, so the agent backs off with jitter and sends
it again (#13: after an outage every agent of a fleet replays its spool at the same moment).
Nothing of a refused batch is stored, and nothing is lost: the resend is.

A real uvicorn on SQLite; the writer is held by a job of the test, so two batches stay in
progress for as long as the test needs them to."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from agent.transport import Retry, Transport
from app.settings import Settings
from app.store.engine import make_engine
from app.store.tables import event as event_table
from app.store.tables import host as host_table
from tests.app.conftest import Server, Tokens, assert_error, auth
from tests.app.ingest.payloads import event, host_info, payload

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

BOUND_S = 30.0  # liveness only


def body(host: str, seqs: range) -> bytes:
    return payload([event(s) for s in seqs], host=host_info(name=host)).to_json().encode()


def until(what: str, fn: Any) -> None:
    deadline = time.monotonic() + BOUND_S
    while not fn():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for: {what}", pytrace=False)
        time.sleep(0.02)


@pytest.fixture
def make_busy(settings: Settings) -> Iterator[Any]:
    servers: list[Server] = []

    def make(wait_s: float) -> Server:
        srv = Server(settings.model_copy(update={"ingest_max_in_flight": 2, "ingest_max_wait_s": wait_s}))
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def busy(make_busy: Any) -> Server:
    return make_busy(0.2)  # type: ignore[no-any-return]


def stored(settings: Settings, host: str) -> list[int]:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    select(event_table.c.seq)
                    .join(host_table, host_table.c.id == event_table.c.host_id)
                    .where(host_table.c.name == host)
                    .order_by(event_table.c.seq)
                ).scalars()
            )
    finally:
        engine.dispose()


@contextlib.contextmanager
def writer_held(server: Server) -> Iterator[None]:
    """The server's writer busy with a job of the test until the block ends: batches sent
    meanwhile stay in progress."""
    release = threading.Event()
    held = server.app.state.writer.submit(lambda _conn: release.wait(BOUND_S))
    try:
        yield
    finally:
        release.set()
        held.result(BOUND_S)


def post(client: httpx.Client, host: str, token: str) -> httpx.Response:
    return client.post("/api/v1/ingest", content=body(host, range(1, 4)), headers=auth(token))


HOSTS = ("kvm-1", "kvm-2", "kvm-3")


@pytest.fixture
def agents(tokens: Tokens) -> dict[str, str]:
    return {h: tokens.agent(h) for h in HOSTS}


@contextlib.contextmanager
def full(server: Server, agents: dict[str, str]) -> Iterator[tuple[httpx.Client, ThreadPoolExecutor]]:
    """kvm-1's and kvm-2's batches in progress for the block: the server's most of 2. Both are
    answered 200 once it ends."""
    in_flight = server.app.state.ingest_in_flight
    with httpx.Client(base_url=server.url, timeout=BOUND_S) as client, ThreadPoolExecutor(3) as pool:
        with writer_held(server):
            first = [pool.submit(post, client, h, agents[h]) for h in HOSTS[:2]]
            until("two batches in progress", lambda: in_flight.now == 2)
            yield client, pool
        assert [f.result(BOUND_S).status_code for f in first] == [200, 200]


def test_past_its_most_a_batch_is_refused_unread_and_stored_when_sent_again(
    busy: Server, settings: Settings, agents: dict[str, str]
) -> None:
    in_flight = busy.app.state.ingest_in_flight
    with full(busy, agents) as (client, _pool):
        refused = post(client, "kvm-3", agents["kvm-3"])
        bogus = post(client, "kvm-3", "sw_bogus")
    assert "SPLITWATCH_INGEST_MAX_IN_FLIGHT" in assert_error(refused, 503, "overloaded")["message"]
    # A single value would bring a thousand agents back at the same second: they back off.
    assert "retry-after" not in refused.headers
    assert_error(bogus, 401)  # a token is checked first: no place for a stranger
    assert stored(settings, "kvm-3") == []
    assert (in_flight.now, in_flight.waiting) == (0, 0)
    with httpx.Client(base_url=busy.url, timeout=BOUND_S) as client:
        again = post(client, "kvm-3", agents["kvm-3"])
        assert again.status_code == 200 and again.json() == {"accepted": 3, "duplicates": 0}
        metrics = client.get("/metrics").text
    assert [stored(settings, h) for h in HOSTS] == [[1, 2, 3]] * 3
    assert "splitwatch_ingest_overloaded_total 1.0" in metrics
    assert 'splitwatch_ingest_requests_total{status="503"} 1.0' in metrics


def test_one_past_its_most_waits_for_a_place_and_is_stored(
    make_busy: Any, settings: Settings, agents: dict[str, str]
) -> None:
    busy = make_busy(BOUND_S)
    in_flight = busy.app.state.ingest_in_flight
    with full(busy, agents) as (client, pool):
        third = pool.submit(post, client, "kvm-3", agents["kvm-3"])
        until("the third waiting", lambda: in_flight.waiting == 1)
        assert not third.done()
    assert third.result(BOUND_S).status_code == 200
    assert [stored(settings, h) for h in HOSTS] == [[1, 2, 3]] * 3
    assert (in_flight.now, in_flight.waiting) == (0, 0)


def test_a_refused_or_failed_batch_gives_its_place_back(busy: Server, tokens: Tokens) -> None:
    token = tokens.agent("kvm-1")
    with httpx.Client(base_url=busy.url, timeout=BOUND_S) as client:
        for _ in range(3):  # more than the most: each answer gave its place back
            assert client.post("/api/v1/ingest", content=b"{", headers=auth(token)).status_code == 422
            wrong_host = body("kvm-9", range(1, 2))
            assert client.post("/api/v1/ingest", content=wrong_host, headers=auth(token)).status_code == 403
        ok = client.post("/api/v1/ingest", content=body("kvm-1", range(1, 3)), headers=auth(token))
    assert ok.status_code == 200
    assert busy.app.state.ingest_in_flight.now == 0


def test_the_agent_backs_off_from_a_full_server_with_jitter(busy: Server, agents: dict[str, str]) -> None:
    # The agent's own transport: a 503 without Retry-After is a Retry its backoff times (full
    # jitter), not a fixed wait every agent of a herd would share.
    with full(busy, agents):
        result = Transport(busy.url, agents["kvm-3"], timeout_s=BOUND_S).post(body("kvm-3", range(1, 4)))
    assert isinstance(result, Retry) and result.after_s is None, result
    # What the agent logs says why, and which settings say how much.
    assert "answered 503 server is busy with 2 other batches" in result.reason, result
