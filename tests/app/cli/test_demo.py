"""`splitwatch demo`: one command, a working product, a clean stop.

The demo runs as a user runs it (a subprocess of the real CLI) and is judged through the REST
API over HTTP with the viewer token it prints. The backfill model is checked on its own too:
what it sends must be what a host in that mode and kernel could have done.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.demo import (
    BackfillHost,
    BackfillThread,
    BackfillWorkload,
    backfill_events,
    backfill_payloads,
    backfill_window,
)
from tests.app.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 120.0  # cold imports and migrations on a busy 2-core CI machine
# A hang bound, not a timing check: the demo's own worst case is its agents' 6 s (AGENT_STOP_S)
# plus 10 s for the server's thread, on a busy 2-core machine.
STOP_TIMEOUT_S = 30.0


@dataclass
class DemoProcess:
    """`splitwatch demo` in a subprocess, its stdout read line by line as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, *args: str, env: dict[str, str] | None = None) -> DemoProcess:
        # The caller's SPLITWATCH_DATABASE_URL must not leak in: a test says which database.
        base = {k: v for k, v in os.environ.items() if k != "SPLITWATCH_DATABASE_URL"}
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli.main", "demo", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A hang's diagnosis: SIGABRT makes faulthandler print every thread's stack (interrupt).
            env={**base, "PYTHONFAULTHANDLER": "1", **(env or {})},
            start_new_session=True,  # its own process group, as a shell job has
        )
        demo = cls(process)
        threading.Thread(target=demo._pump, daemon=True).start()
        return demo

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.lines:
                match = re.search(pattern, line)
                if match:
                    return match
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} in {timeout_s:g} s:\n{self.output()}"
                ) from None
            if line is None:
                raise AssertionError(f"demo exited before printing {pattern!r}:\n{self.output()}")
            self.lines.append(line)

    def drain(self) -> None:
        while True:
            try:
                line = self._queue.get(timeout=2)
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)

    def output(self) -> str:
        err = ""
        if self.process.poll() is not None and self.process.stderr is not None:
            err = self.process.stderr.read()
        return "\n".join(self.lines) + ("\n--- stderr ---\n" + err if err else "")

    def interrupt(self, sig: signal.Signals = signal.SIGINT, *, group: bool = False) -> tuple[int, str]:
        """SIGINT or another signal, to the demo or (a terminal's Ctrl-C) to its whole process
        group, agents included; (exit code, stderr) once it has exited."""
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Where it hangs: faulthandler (PYTHONFAULTHANDLER, start) dumps every thread's
            # stack to stderr on SIGABRT; the demo's last lines and that dump go in the failure.
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.drain()
            raise AssertionError(
                f"demo still running {STOP_TIMEOUT_S:g} s after {sig.name}:\n{self.output()}"
            ) from None
        assert self.process.stderr is not None
        stderr = self.process.stderr.read()
        self.drain()
        return code, stderr

    def kill(self) -> None:
        """Whatever is left of the demo's process group (agents included), after a failure."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def poll(fetch: Any, ok: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Call fetch() until ok(value); the last value on failure says what was seen instead."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if ok(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout_s:g} s; last answer: {value!r}")


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    return tmp_path / "demo"


@pytest.fixture
def running_demo(demo_dir: Path) -> Iterator[tuple[DemoProcess, str, str]]:
    """A 3-host demo on a free port: (process, dashboard URL, viewer token)."""
    port = free_port()
    demo = DemoProcess.start("--port", str(port), "--hosts", "3", "--dir", str(demo_dir))
    try:
        url = demo.wait_for(r"Dashboard:\s+(http://\S+)").group(1)
        token = demo.wait_for(r"Viewer token:\s+(sw_\S+)").group(1)
        yield demo, url, token
    finally:
        demo.kill()


# --------------------------------------------------------------------------- the demo, end to end


@pytest.mark.slow
def test_demo_serves_three_hosts_live_events_and_a_killed_guest_then_stops_cleanly_on_ctrl_c(
    running_demo: tuple[DemoProcess, str, str], demo_dir: Path
) -> None:
    demo, url, token = running_demo
    assert url.endswith("/") and url.startswith("http://127.0.0.1:")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as api:
        # Every setup step was announced on its own line, in order.
        steps = [line for line in demo.lines if re.match(r"\[\d/7\] ", line)]
        assert [s[:5] for s in steps] == [f"[{i}/7]" for i in range(1, 8)], demo.output()

        hosts = api.get("/api/v1/hosts").json()["items"]
        assert sorted(h["name"] for h in hosts) == ["kvm-fra-01", "kvm-fra-02", "kvm-fra-03"]

        # The dashboard page itself answers at the printed URL.
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()

        # The backfill is there at once, and says where it came from.
        backfilled = api.get("/api/v1/events", params={"source": "import", "limit": 5}).json()["items"]
        assert backfilled, "no backfilled history"
        oldest = api.get("/api/v1/summary", params={"since": _iso(hours=-6.5), "until": _iso(hours=-5)})
        assert oldest.json()["events"] > 0, "nothing backfilled 5-6 hours ago"

        # Live events from the real agents keep arriving.
        def live_total() -> int:
            total = 0
            for source in ("kmsg", "tracefs"):
                items = api.get("/api/v1/events", params={"source": source, "limit": 1000}).json()["items"]
                total += sum(e["count"] for e in items)
            return total

        first = poll(live_total, lambda n: n > 0, "a live event from an agent")
        poll(live_total, lambda n: n > first, f"live events increasing beyond {first}")

        # The fatal host kills its guest early in the run: the dashboard shows it killed.
        guests = poll(
            lambda: api.get("/api/v1/guests").json()["items"],
            lambda items: any(g["killed"] for g in items),
            "a guest killed by the fatal host",
        )
        killed = [g for g in guests if g["killed"]]
        assert [g["last_host"] for g in killed] == ["kvm-fra-02"], killed
        assert killed[0]["last_action"] == "sigbus", killed

    # A second demo on the same directory is refused instead of deleting the running one's files.
    second = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "demo", "--port", str(free_port()), "--dir", str(demo_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0 and "another splitwatch demo is running" in second.stderr, second.stderr
    assert second.stdout == "" and "Traceback" not in second.stderr
    assert (demo_dir / "hosts/kvm-fra-01").is_dir()

    code, stderr = demo.interrupt(group=True)  # Ctrl-C in a terminal reaches the agents too
    out = "\n".join(demo.lines)
    assert code == 0, demo.output() + stderr
    assert "Traceback" not in out + stderr, out + stderr
    assert demo.lines[-1] == "stopped", out
    # Nothing left running: every agent was stopped with the demo.
    leftover = subprocess.run(["pgrep", "-f", str(demo_dir / "hosts")], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"processes still running for {demo_dir}: {leftover.stdout}"


def _iso(*, hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.slow
def test_demo_stopped_by_sigterm_then_rerun_in_the_same_dir_starts_from_a_fresh_database(
    demo_dir: Path,
) -> None:
    port = free_port()
    first = DemoProcess.start("--port", str(port), "--hosts", "1", "--dir", str(demo_dir))
    try:
        first_token = first.wait_for(r"Viewer token:\s+(sw_\S+)").group(1)
        code, stderr = first.interrupt(signal.SIGTERM)  # as a service manager stops it
        assert code == 0 and "Traceback" not in stderr
        assert first.lines[-1] == "stopped"
        second = DemoProcess.start("--port", str(port), "--hosts", "1", "--dir", str(demo_dir))
        try:
            second.wait_for(r"\[1/7\] demo directory .*: reset \(the previous run's SQLite database")
            url = second.wait_for(r"Dashboard:\s+(http://\S+)").group(1)
            token = second.wait_for(r"Viewer token:\s+(sw_\S+)").group(1)
            hosts = httpx.get(f"{url}api/v1/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert [h["name"] for h in hosts.json()["items"]] == ["kvm-fra-01"]
            # The old database is gone with its tokens.
            old = httpx.get(
                f"{url}api/v1/hosts", headers={"Authorization": f"Bearer {first_token}"}, timeout=10
            )
            assert old.status_code == 401
            code, stderr = second.interrupt()
            assert code == 0 and "Traceback" not in stderr
        finally:
            second.kill()
    finally:
        first.kill()


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_demo_honours_splitwatch_database_url_instead_of_its_sqlite(db_url: str, demo_dir: Path) -> None:
    from sqlalchemy import create_engine, text

    port = free_port()
    demo = DemoProcess.start(
        "--port", str(port), "--hosts", "2", "--dir", str(demo_dir), env={"SPLITWATCH_DATABASE_URL": db_url}
    )
    try:
        demo.wait_for(r"Dashboard:\s+(http://\S+)")
        assert any("postgresql" in line and "upgraded" in line for line in demo.lines), demo.output()
        engine = create_engine(db_url)
        try:
            with engine.connect() as conn:
                names = sorted(conn.execute(text("SELECT name FROM host")).scalars())
        finally:
            engine.dispose()
        assert names == ["kvm-fra-01", "kvm-fra-02"]
        assert not (demo_dir / "splitwatch.db").exists()
        code, stderr = demo.interrupt()
        assert code == 0 and "Traceback" not in stderr
    finally:
        demo.kill()


def test_port_in_use_ends_the_demo_with_a_sentence_and_leaves_the_previous_run_intact(demo_dir: Path) -> None:
    demo_dir.mkdir()
    (demo_dir / ".splitwatch-demo").write_text("")
    (demo_dir / "splitwatch.db").write_text("previous run")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app.cli.main", "demo", "--port", str(port), "--dir", str(demo_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr  # the remedy
    assert "Traceback" not in result.stderr + result.stdout
    assert (demo_dir / "splitwatch.db").read_text() == "previous run"


def test_a_directory_that_is_not_a_demo_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "demo", "--port", str(free_port()), "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "is not a splitwatch demo directory" in result.stderr and "--dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize(("flag", "value"), [("--hosts", "0"), ("--port", "70000")])
def test_out_of_range_options_are_refused_with_the_range(flag: str, value: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "demo", flag, value, "--dir", str(tmp_path / "d")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"{flag} {value}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- the backfill model

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _host(
    *, mode: str = "warn", kernel: str = "6.8.0-49-generic", mitigate: int | None = 1, bus: bool = False
) -> BackfillHost:
    from agent.payload import Guest

    guest = Guest("erp-legacy-01", "8d1e2f00-0000-4000-8000-000000000001", "qemu", 0)
    threads = (
        BackfillThread("CPU 0/KVM", 2001, 2000, guest),
        BackfillThread("CPU 1/KVM", 2002, 2000, Guest(guest.name, guest.uuid, guest.vmm, 1)),
    )
    noisy = BackfillWorkload("erp-legacy-01", True, False, 40.0, 0.35, threads)
    quiet = BackfillWorkload("db-01", True, False, 0.0, 0.0, threads)
    dpdk = BackfillWorkload(
        "dpdk-pmd", False, True, 14.0, 0.3, (BackfillThread("dpdk-pmd", 3000, 3000, None),)
    )
    return BackfillHost(
        name="kvm-fra-01",
        kernel=kernel,
        cpu_model="Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz",
        mode=mode,
        mitigate=mitigate,
        boot_id="current-boot",
        booted_at=NOW - timedelta(hours=1),
        workloads=(noisy, quiet, dpdk) if bus else (noisy, quiet),
    )


def _events(host: BackfillHost, hours: float = 6.0) -> list[tuple[str, Any]]:
    return backfill_events(host, start=NOW - timedelta(hours=hours), end=NOW, seed=0)


def test_backfill_of_a_noisy_guest_on_a_recent_warn_host_is_throttled_true_counts_in_bursts() -> None:
    events = _events(_host())
    assert events
    assert {str(e.action) for _, e in events} == {"throttle"}  # warn + mitigate 1 on 6.8
    assert {str(e.source) for _, e in events} == {"import"}
    assert {e.guest.name for _, e in events} == {"erp-legacy-01"}  # the quiet guest never traps
    assert sum(e.count for _, e in events) > 10 * len(events)  # true counts, not one per line
    minutes = {e.time.replace(second=0, microsecond=0) for _, e in events}
    assert 0.05 * 360 < len(minutes) < 0.9 * 360  # busy episodes and quiet ones
    ordered = sorted(minutes)
    longest_lull = max(b - a for a, b in itertools.pairwise(ordered))
    assert longest_lull >= timedelta(minutes=10)
    assert all(NOW - timedelta(hours=6) <= e.time < NOW for _, e in events)
    assert [e.time for _, e in events] == sorted(e.time for _, e in events)


def test_backfill_before_the_hosts_boot_carries_a_previous_boot_id_and_seqs_are_unique_per_boot() -> None:
    events = _events(_host())
    booted = NOW - timedelta(hours=1)
    before = {b for b, e in events if e.time < booted}
    after = {b for b, e in events if e.time >= booted}
    assert after == {"current-boot"}
    assert len(before) == 1 and before != after
    seqs = [(b, e.seq) for b, e in events]
    assert len(seqs) == len(set(seqs))


def test_backfill_on_a_5_10_host_is_one_first_trap_per_thread_as_tif_sld_allows() -> None:
    events = _events(_host(kernel="5.10.0-28-amd64", mitigate=None))
    assert sorted(e.tid for _, e in events) == [2001, 2002]
    assert {e.count for _, e in events} == {1}
    assert {str(e.action) for _, e in events} == {"warn"}


def test_backfill_on_a_fatal_or_off_host_is_empty() -> None:
    assert _events(_host(mode="fatal")) == []
    assert _events(_host(mode="off")) == []


def test_backfill_on_a_ratelimit_host_holds_only_rate_limited_bus_locks() -> None:
    events = _events(_host(mode="ratelimit:10", bus=True))
    assert events
    assert {(str(e.kind), str(e.action), e.comm) for _, e in events} == {
        ("bus_lock", "ratelimit", "dpdk-pmd")
    }
    assert all(e.guest is None for _, e in events)


def test_backfill_payloads_are_valid_ingest_bodies_of_at_most_a_thousand_events() -> None:
    from app.ingest.schema import parse_payload

    host = _host()
    payloads = list(backfill_payloads(host, start=NOW - timedelta(hours=6), end=NOW, seed=0))
    assert all(len(p.events) <= 1000 for p in payloads)
    assert sum(len(p.events) for p in payloads) == len(_events(host))
    for p in payloads:
        body = parse_payload(p.to_json().encode())
        assert body.state is None  # no claim about the host's past MSR state
        assert body.host.name == "kvm-fra-01"


def test_backfill_is_deterministic_for_a_seed() -> None:
    host = _host()
    assert _events(host) == _events(host)
    other = backfill_events(host, start=NOW - timedelta(hours=6), end=NOW, seed=1)
    assert [e.time for _, e in other] != [e.time for _, e in _events(host)]


def test_the_same_seed_backfills_the_same_counts_whenever_the_demo_starts() -> None:
    # Two runs of `splitwatch demo --seed 0` hours apart, at different seconds of the minute
    # (#17: they announced different backfill counts).
    host = _host()
    runs = []
    for now in (NOW + timedelta(seconds=17), NOW + timedelta(hours=3, minutes=41, seconds=52)):
        start, end = backfill_window(now, 6.0)
        assert end <= now and end - start == timedelta(hours=6)
        events = [e for _, e in backfill_events(host, start=start, end=end, seed=0)]
        runs.append([(e.time - start, e.tid, e.count, e.address) for e in events])
    assert runs[0] and runs[0] == runs[1]
    assert sum(c for _, _, c, _ in runs[0]) > 0
