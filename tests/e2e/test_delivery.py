"""From host to backend with nothing lost (#4, docs/benchmarks.md): real uvicorn, real agent processes,
fake hosts; what arrived is read back through the REST API as a user would."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from agent.fakehost import FakeHost, FakeVmm
from tests.app.conftest import Server, Tokens
from tests.e2e.conftest import Agents, Api, terminate_db_sessions, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "host-1", hostname="host-1", live=True).cpus(2).mode("warn").boot_messages()


@pytest.fixture
def vm(host: FakeHost) -> FakeVmm:
    return host.qemu("web-1", pid=4242, vcpus=2)


def traps(host: FakeHost, vm: FakeVmm, n: int) -> list[int]:
    return [host.split_lock(vm.vcpu_comm(i % 2), vm.vcpu_tids[i % 2]) for i in range(n)]


def arrived(api: Api, expected: list[int]) -> bool:
    return set(api.seqs("host-1")) >= set(expected)


def test_backend_stopped_then_restarted_every_event_arrives_exactly_once(
    host: FakeHost, vm: FakeVmm, backend: Server, tokens: Tokens, agents: Agents, api: Api
) -> None:
    agent = agents.start(host, tokens.agent("host-1"))
    written = traps(host, vm, 5)
    wait_until(lambda: arrived(api, written), "the first 5 events to arrive")

    backend.stop()
    for _ in range(5):  # several passes' worth while nobody answers
        written += traps(host, vm, 4)
        time.sleep(0.25)
    assert agent.alive()
    backend.start()
    written += traps(host, vm, 3)

    wait_until(lambda: arrived(api, written), "every event written during the outage to arrive")
    assert api.seqs("host-1") == sorted(written)  # each once
    assert agent.terminate() == 0
    assert "could not send to the backend" in agent.stderr
    assert "reachable again" in agent.stderr


def test_agent_killed_with_sigkill_mid_send_and_restarted_loses_and_doubles_nothing(
    host: FakeHost, vm: FakeVmm, backend: Server, tokens: Tokens, agents: Agents, api: Api
) -> None:
    token = tokens.agent("host-1")
    rng = random.Random(4)
    written: list[int] = []
    killed_with_unsent = 0
    kills = 0
    # At least four kills, and more (up to 12) until one lands with records still unsent:
    # where SIGKILL lands is timing, and the test is only meaningful once one lands mid-send.
    while kills < 4 or (not killed_with_unsent and kills < 12):
        kills += 1
        agent = agents.start(host, token, cli=True, interval_s=0.1)
        first = traps(host, vm, 100)
        written += first
        wait_until(lambda: arrived(api, first[-1:]), "the restarted agent to be up and sending")  # noqa: B023
        # The host keeps trapping until the kill, so the agent is always reading, spooling or
        # sending something when SIGKILL lands.
        until = time.monotonic() + rng.uniform(0.2, 0.8)
        while time.monotonic() < until:
            written += traps(host, vm, 100)
            time.sleep(0.02)
        written += traps(host, vm, 300)  # a burst right before the kill: likely still in flight
        # Kill once the burst is spooled (a segment on disk is a record not yet acknowledged),
        # if that happens within a second: a fast backend acknowledges within milliseconds, and
        # a kill that only ever lands between sends would test nothing.
        spooled = time.monotonic() + 1.0
        while not any(agents.spool_dir(host).glob("*.seg")) and time.monotonic() < spooled:
            time.sleep(0.002)
        agent.kill()
        killed_with_unsent += any(agents.spool_dir(host).glob("*.seg"))
    assert killed_with_unsent >= 1, f"none of {kills} kills left anything unsent: no kill mid-send was tested"
    agent = agents.start(host, token, cli=True, interval_s=0.1)
    wait_until(lambda: arrived(api, written), f"every event to arrive after {kills} SIGKILLs", timeout_s=60)
    seqs = api.seqs("host-1")
    assert len(seqs) == len(set(seqs)) == len(written)
    assert seqs == sorted(written)
    assert agent.terminate() == 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_database_sessions_killed_mid_ingest_every_event_arrives_exactly_once(
    tmp_path: Path, backend: Server, tokens: Tokens, agents: Agents, api: Api
) -> None:
    # What a PostgreSQL restart does to the server (docs/benchmarks.md: every event arrives once
    # across a database restart): every session of its database dies, mid-transaction or idle.
    # Only this test's database is hit, so other databases on the server are left alone.
    fleet = []
    for n in range(4):
        h = (
            FakeHost(tmp_path / f"host-{n}", hostname=f"host-{n}", live=True)
            .cpus(2)
            .mode("warn")
            .boot_messages()
        )
        fleet.append(
            (h, h.qemu(f"vm-{n}", pid=4000 + n, vcpus=2), agents.start(h, tokens.agent(f"host-{n}")))
        )
    written: dict[str, list[int]] = {h.hostname: [] for h, _, _ in fleet}

    def burst() -> None:
        for h, vm, _ in fleet:
            written[h.hostname] += traps(h, vm, 40)

    burst()
    wait_until(lambda: all(api.seqs(name) for name in written), "every agent to be up and sending")
    rounds = terminated = 0
    # At least 5 rounds, and more (up to 40) until a kill lands inside an ingest transaction:
    # where it lands is timing, and the test is only meaningful once one does.
    while rounds < 5 or (rounds < 40 and not any("could not send" in a.stderr for _, _, a in fleet)):
        rounds += 1
        burst()
        time.sleep(0.05)
        terminated += terminate_db_sessions(backend.settings.database_url)
    assert terminated >= rounds, "the server held no session to kill"
    assert any("could not send to the backend" in a.stderr for _, _, a in fleet), (
        f"no kill in {rounds} rounds landed inside an ingest; agent logs:\n" + fleet[0][2].stderr
    )
    burst()
    for name, seqs in written.items():
        wait_until(lambda: set(api.seqs(name)) >= set(seqs), f"every event of {name} to arrive", timeout_s=60)  # noqa: B023
        stored = api.seqs(name)
        assert len(stored) == len(set(stored)) == len(seqs), name  # each exactly once
    for _, _, agent in fleet:
        assert agent.terminate() == 0


def test_kmsg_overrun_arrives_as_a_gap_with_the_number_of_lost_records(
    host: FakeHost, vm: FakeVmm, backend: Server, tokens: Tokens, agents: Agents, api: Api
) -> None:
    before = traps(host, vm, 2)
    host.overrun(37)
    after = traps(host, vm, 2)
    agent = agents.start(host, tokens.agent("host-1"))
    wait_until(lambda: arrived(api, before + after), "the events around the overrun")
    wait_until(lambda: any(g["reason"] == "overrun" for g in api.gaps("host-1")), "the overrun gap")
    (gap,) = [g for g in api.gaps("host-1") if g["reason"] == "overrun"]
    assert gap["count"] == 37
    assert (gap["first_seq"], gap["last_seq"]) == (before[-1] + 1, after[0] - 1)
    assert agent.terminate() == 0


def test_spool_full_drops_arrive_as_counted_spool_full_gaps(
    host: FakeHost, vm: FakeVmm, backend: Server, tokens: Tokens, agents: Agents, api: Api
) -> None:
    token = tokens.agent("host-1")
    backend.stop()
    # Room for a couple of passes only: the oldest passes of the outage must be dropped.
    agent = agents.start(host, token, spool_max_bytes=12_000)
    written: list[int] = []
    for _ in range(8):
        written += traps(host, vm, 6)
        time.sleep(0.3)
    backend.start()

    def accounted() -> bool:
        lost = sum(g["count"] for g in api.gaps("host-1") if g["reason"] == "spool_full")
        return len(api.seqs("host-1")) + lost == len(written)

    wait_until(accounted, "every written event either stored or counted in a spool_full gap")
    stored = set(api.seqs("host-1"))
    gaps = [g for g in api.gaps("host-1") if g["reason"] == "spool_full"]
    assert gaps, "the spool limit was never reached: the test wrote too little"
    assert "dropped the" in agent.stderr and "spool_full" in agent.stderr
    for seq in set(written) - stored:
        assert any(g["first_seq"] <= seq <= g["last_seq"] for g in gaps), f"seq {seq} lost silently"
    assert sum(g["count"] for g in gaps) == len(set(written) - stored)
    assert agent.terminate() == 0


@pytest.mark.parametrize(
    ("bad", "status"),
    [("garbage", "401"), ("other-host", "403")],
)
def test_wrong_token_is_a_clear_error_and_a_good_token_later_delivers_everything(
    host: FakeHost,
    vm: FakeVmm,
    backend: Server,
    tokens: Tokens,
    agents: Agents,
    api: Api,
    bad: str,
    status: str,
) -> None:
    token = "sw_not_a_real_token" if bad == "garbage" else tokens.agent("host-2")
    written = traps(host, vm, 5)
    agent = agents.start(host, token, cli=True, interval_s=0.2)
    wait_until(lambda: "token rejected by" in agent.stderr, "the agent to report the rejected token")
    message = agent.stderr
    assert f"{backend.url}/api/v1/ingest: {status}" in message
    assert "splitwatch token create --role agent --host host-1" in message
    assert "Nothing is lost" in message
    assert agent.terminate() == 0
    assert api.seqs("host-1") == []

    good = agents.start(host, tokens.agent("host-1"), cli=True, interval_s=0.2)
    more = traps(host, vm, 2)
    wait_until(lambda: arrived(api, written + more), "the spooled events to arrive with a good token")
    assert api.seqs("host-1") == sorted(written + more)
    assert good.terminate() == 0


def test_sigterm_exits_0_promptly_and_keeps_unsent_events_for_the_next_start(
    host: FakeHost, vm: FakeVmm, backend: Server, tokens: Tokens, agents: Agents, api: Api
) -> None:
    token = tokens.agent("host-1")
    backend.stop()
    agent = agents.start(host, token, interval_s=60, shutdown_flush_s=1.0)
    written = traps(host, vm, 3)
    wait_until(lambda: any(agents.spool_dir(host).glob("*.seg")), "the first pass to be spooled")
    time.sleep(0.3)
    assert agent.terminate(timeout_s=10) == 0  # not after the 60 s sleep
    assert "still in the spool" in agent.stderr
    backend.start()
    agent = agents.start(host, token)
    wait_until(lambda: arrived(api, written), "the kept events to arrive after the restart")
    assert agent.terminate() == 0
