"""The agent loop on a fake host, sending to a real HTTP server on 127.0.0.1 (agent/loop.py, #4)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.fakehost import FakeHost
from agent.loop import Agent, run
from agent.spool import Spool
from tests.agent.test_transport import ScriptedServer, error, scripted_server


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as srv:
        yield srv


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "root").cpus(2).mode("warn").boot_messages()


def config(tmp_path: Path, url: str, **kw: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "server": url,
        "token": "agent-token-1",
        "root": tmp_path / "root",
        "interval_s": 0.05,
        "spool_dir": tmp_path / "spool",
        "state_dir": tmp_path / "state",
        "use_tracefs": False,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "shutdown_flush_s": 2.0,
        "timeout_s": 5.0,
    }
    values.update(kw)
    return AgentConfig(**values)


def sent_seqs(srv: ScriptedServer) -> list[int]:
    return [e["seq"] for r in srv.requests for e in r.body["events"]]


def test_a_pass_sends_the_hosts_traps_and_the_next_pass_does_not_send_them_again(
    tmp_path: Path, host: FakeHost, server: ScriptedServer
) -> None:
    vm = host.qemu("web-1", pid=4242, vcpus=2)
    seqs = [host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0]) for _ in range(3)]
    assert run(config(tmp_path, server.url, max_passes=1)) == 0
    assert sent_seqs(server) == seqs
    assert server.requests[0].body["events"][0]["guest"]["name"] == "web-1"
    more = host.split_lock(vm.vcpu_comm(1), vm.vcpu_tids[1])
    assert run(config(tmp_path, server.url, max_passes=1)) == 0
    assert sent_seqs(server) == [*seqs, more]  # the cursor moved: no resend
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    assert spool.depth == 0
    spool.close()


def test_every_post_carries_the_agents_health_figures(
    tmp_path: Path, host: FakeHost, server: ScriptedServer
) -> None:
    host.msr_error(1, "eio")
    assert run(config(tmp_path, server.url, max_passes=1)) == 0
    health = server.requests[0].body["health"]
    for key in (
        "lag_s",
        "spool_depth",
        "spool_bytes",
        "drops",
        "rejected_batches",
        "last_ack_at",
        "msr_errors",
        "kmsg_status",
        "pass_duration_s",
    ):
        assert key in health, key
    assert health["kmsg_status"] == "ok"
    assert health["msr_errors"] == 1
    assert health["spool_depth"] >= 1 and health["lag_s"] >= 0


def test_backend_down_keeps_every_pass_in_the_spool_and_a_later_run_sends_them(
    tmp_path: Path, host: FakeHost, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    vm = host.qemu("web-1", pid=4242, vcpus=1)
    server.default = lambda req: error(503, "database could not store the batch")
    first = host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0])
    with caplog.at_level(logging.INFO):
        assert run(config(tmp_path, server.url, max_passes=2, shutdown_flush_s=0.2)) == 0
    assert "still in the spool" in caplog.text
    assert {e["seq"] for r in server.requests for e in r.body["events"]} <= {first}
    server.requests.clear()
    server.default = None
    second = host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0])
    assert run(config(tmp_path, server.url, max_passes=1)) == 0
    assert sorted(set(sent_seqs(server))) == [first, second]


def test_stop_wakes_the_sleep_at_once_and_the_agent_exits_0(
    tmp_path: Path, host: FakeHost, server: ScriptedServer
) -> None:
    stop = threading.Event()
    result: list[int] = []
    agent = Agent(config(tmp_path, server.url, interval_s=3600))
    thread = threading.Thread(target=lambda: result.append(agent.run(stop)))
    thread.start()
    while agent.passes == 0 and thread.is_alive():
        stop.wait(0.01)
    stop.set()
    thread.join(timeout=30)  # an hour-long sleep would hang here
    assert not thread.is_alive()
    assert result == [0]
    assert agent.passes == 1


def test_a_second_agent_on_the_same_spool_exits_1_with_a_sentence(
    tmp_path: Path, host: FakeHost, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Spool(tmp_path / "spool", max_bytes=1 << 30)
    with caplog.at_level(logging.ERROR):
        assert run(config(tmp_path, server.url, max_passes=1)) == 1
    holder.close()
    assert "in use by another splitwatch agent" in caplog.text
    assert server.requests == []


def test_a_rejected_token_is_logged_every_pass_and_nothing_is_dropped(
    tmp_path: Path, host: FakeHost, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    vm = host.qemu("web-1", pid=4242, vcpus=1)
    seq = host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0])
    server.default = lambda req: error(401, "missing or invalid agent token")
    with caplog.at_level(logging.ERROR):
        assert run(config(tmp_path, server.url, max_passes=3, shutdown_flush_s=0)) == 1
    assert caplog.text.count("token rejected by") == 3  # once per pass, not again at the last flush
    server.default = None
    server.requests.clear()
    assert run(config(tmp_path, server.url, max_passes=1)) == 0
    assert seq in sent_seqs(server)


def test_once_with_a_refused_token_exits_1_and_says_it_once(
    tmp_path: Path, host: FakeHost, server: ScriptedServer
) -> None:
    vm = host.qemu("web-1", pid=4242, vcpus=1)
    host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0])
    server.default = lambda req: error(401, "missing or invalid agent token")
    result = subprocess.run(
        [
            sys.executable, "-m", "agent.cli", "--server", server.url, "--token", "sw_wrong",
            "--root", str(host.root), "--state-dir", str(tmp_path / "state"), "--no-tracefs", "--once",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("token rejected by") == 1, result.stderr
    assert "missing or invalid agent token" in result.stderr
    assert len(server.requests) == 1
    assert any((tmp_path / "state" / "spool").glob("*.seg"))  # kept for a valid token
