"""The tracefs source: kprobes registered and removed cleanly, trace_pipe lines turned into true counts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.fakehost import FakeHost
from agent.host import HostRoot
from agent.sources.tracefs import TracefsSource, TraceHit, _live_probes, parse_trace_line

TRACING = "sys/kernel/tracing"
OURS = [
    "p:splitwatch/split_lock_warn split_lock_warn",
    "p:splitwatch/handle_guest_split_lock handle_guest_split_lock",
    "p:splitwatch/handle_bus_lock handle_bus_lock",
]


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path).kernel("6.8.0").cpus(2).tracefs()


def _kprobe_events(host: FakeHost) -> list[str]:
    return (host.root / TRACING / "kprobe_events").read_text().splitlines()


def _enabled(host: FakeHost, probe: str) -> str:
    return (host.root / TRACING / f"events/splitwatch/{probe}/enable").read_text().strip()


def test_without_tracefs_the_source_is_absent_and_says_how_to_mount_it(tmp_path: Path) -> None:
    source = TracefsSource(HostRoot.at(FakeHost(tmp_path).root))
    error = source.start()
    assert error is not None and "mount -t tracefs" in error
    result = source.collect()
    assert (result.status, result.hits) == ("absent", ())


def test_start_registers_and_enables_one_kprobe_per_split_lock_handler(host: FakeHost) -> None:
    source = TracefsSource(HostRoot.at(host.root))
    assert source.start() is None
    assert _kprobe_events(host) == OURS
    assert [_enabled(host, p) for p in ("split_lock_warn", "handle_guest_split_lock", "handle_bus_lock")] == [
        "1"
    ] * 3
    assert source.collect().status == "ok"
    source.close()


def test_only_functions_this_kernel_can_probe_are_registered(host: FakeHost) -> None:
    (host.root / TRACING / "available_filter_functions").write_text(
        "split_lock_warn\nhandle_bus_lock [kvm]\nvmx_handle_exit [kvm_intel]\n"
    )
    source = TracefsSource(HostRoot.at(host.root))
    assert source.start() is None
    assert _kprobe_events(host) == [OURS[0], OURS[2]]
    assert source.probes == ("split_lock_warn", "handle_bus_lock")
    source.close()
    assert source.probes == ()


def test_a_compiler_renamed_handler_is_probed_under_its_plain_event_name(host: FakeHost) -> None:
    (host.root / TRACING / "available_filter_functions").write_text(
        "split_lock_warn.isra.0\nhandle_bus_lock\n"
    )
    source = TracefsSource(HostRoot.at(host.root))
    assert source.start() is None
    assert _kprobe_events(host) == ["p:splitwatch/split_lock_warn split_lock_warn.isra.0", OURS[2]]
    source.close()
    assert _kprobe_events(host)[-2:] == ["-:splitwatch/split_lock_warn", "-:splitwatch/handle_bus_lock"]


def test_a_kernel_without_split_lock_handlers_is_absent(host: FakeHost) -> None:
    (host.root / TRACING / "available_filter_functions").write_text("schedule\nvfs_read\n")
    source = TracefsSource(HostRoot.at(host.root))
    error = source.start()
    assert error is not None and "available_filter_functions" in error
    assert source.collect().status == "absent"
    assert _kprobe_events(host) == []


def test_hits_are_counted_per_probe_and_thread_with_the_first_time_and_their_cpus(host: FakeHost) -> None:
    source = TracefsSource(HostRoot.at(host.root))
    source.start()
    host.trace_hit("handle_guest_split_lock", "CPU 1/KVM", 4244, cpu=3, usec=9_000_000)
    for usec in (9_000_100, 9_000_200):
        host.trace_hit("handle_guest_split_lock", "CPU 1/KVM", 4244, usec=usec)
    host.trace_hit("split_lock_warn", "CJobMgr::m_Work", 700, usec=9_500_000)
    host.trace_hit("handle_bus_lock", "my-app - worker", 801, usec=9_600_000)
    assert source.collect().hits == (
        TraceHit("handle_guest_split_lock", "CPU 1/KVM", 4244, 3, 9_000_000, (0, 3)),
        TraceHit("split_lock_warn", "CJobMgr::m_Work", 700, 1, 9_500_000, (0,)),
        TraceHit("handle_bus_lock", "my-app - worker", 801, 1, 9_600_000, (0,)),
    )
    source.close()


def test_each_collect_counts_only_the_lines_since_the_last_one(host: FakeHost) -> None:
    source = TracefsSource(HostRoot.at(host.root))
    source.start()
    host.trace_hit("split_lock_warn", "a.out", 900)
    assert [h.count for h in source.collect().hits] == [1]
    assert source.collect().hits == ()
    host.trace_hit("split_lock_warn", "a.out", 900).trace_hit("split_lock_warn", "a.out", 900)
    assert [h.count for h in source.collect().hits] == [2]
    source.close()


def test_a_line_still_being_written_waits_for_the_next_collect(host: FakeHost) -> None:
    source = TracefsSource(HostRoot.at(host.root))
    source.start()
    pipe = host.root / TRACING / "trace_pipe"
    with pipe.open("a") as f:
        f.write("           a.out-900     [000] d..1.   100.000001: split_lock_warn: (split_lo")
    assert source.collect().hits == ()
    with pipe.open("a") as f:
        f.write("ck_warn+0x0/0x90)\n")
    assert source.collect().hits == (TraceHit("split_lock_warn", "a.out", 900, 1, 100_000_001, (0,)),)
    source.close()


def test_close_disables_and_removes_exactly_its_own_probes(host: FakeHost) -> None:
    (host.root / TRACING / "kprobe_events").write_text("p:perf/do_sys_open do_sys_open\n")
    source = TracefsSource(HostRoot.at(host.root))
    source.start()
    source.close()
    lines = _kprobe_events(host)
    assert lines == [
        "p:perf/do_sys_open do_sys_open",
        *OURS,
        "-:splitwatch/split_lock_warn",
        "-:splitwatch/handle_guest_split_lock",
        "-:splitwatch/handle_bus_lock",
    ]
    assert _live_probes("\n".join(lines)) == ["perf/do_sys_open"]
    assert [_enabled(host, p) for p in ("split_lock_warn", "handle_guest_split_lock", "handle_bus_lock")] == [
        "0"
    ] * 3
    assert source.collect().status == "absent"


def test_probes_left_by_a_killed_agent_are_removed_before_they_are_added_again(host: FakeHost) -> None:
    (host.root / TRACING / "kprobe_events").write_text(f"{OURS[0]}\np:perf/x x\n")
    source = TracefsSource(HostRoot.at(host.root))
    assert source.start() is None
    lines = _kprobe_events(host)
    assert lines[:3] == [OURS[0], "p:perf/x x", "-:splitwatch/split_lock_warn"]
    assert sorted(_live_probes("\n".join(lines))) == sorted(["perf/x", *(o.split()[0][2:] for o in OURS)])
    source.close()


def test_live_probes_of_a_real_kprobe_events_listing() -> None:
    listing = "p:splitwatch/split_lock_warn split_lock_warn\nr:kprobes/r_vfs vfs_read $retval\n"
    assert _live_probes(listing) == ["splitwatch/split_lock_warn", "kprobes/r_vfs"]


def test_a_kprobe_events_that_cannot_be_opened_for_writing_is_failed(host: FakeHost) -> None:
    path = host.root / TRACING / "kprobe_events"
    path.unlink()
    path.mkdir()
    source = TracefsSource(HostRoot.at(host.root))
    error = source.start()
    assert error is not None and "cannot write sys/kernel/tracing/kprobe_events" in error
    assert source.collect().status == "failed"


@pytest.fixture
def shared_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="splitwatch-tracefs-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_an_unprivileged_agent_is_denied_and_told_to_run_as_root(shared_root: Path) -> None:
    host = FakeHost(shared_root).tracefs()
    for path in (host.root, *host.root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)  # kprobe_events: root may write, others read
    code = (
        "import json, sys\n"
        "from agent.host import HostRoot\n"
        "from agent.sources.tracefs import TracefsSource\n"
        "s = TracefsSource(HostRoot.at(sys.argv[1]))\n"
        "print(json.dumps([s.start(), s.collect().status]))\n"
    )
    argv = [sys.executable, "-c", code, str(host.root)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to drop root for this test"
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    repo = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    error, status = json.loads(done.stdout)
    assert status == "denied"
    assert error == "cannot write sys/kernel/tracing/kprobe_events (permission denied): run the agent as root"
    assert _kprobe_events(host) == []


LINES = [
    # (name, line, expected)
    (
        "6.x kprobe line",
        "       CPU 0/KVM-4243    [002] d..1.  1234.567890: split_lock_warn: (split_lock_warn+0x0/0x90)",
        ("split_lock_warn", "CPU 0/KVM", 4243, 1_234_567_890),
    ),
    (
        "fake host event name",
        "CPU 0/KVM-4243 [000] d..1. 4.001000: splitwatch_handle_bus_lock: (handle_bus_lock+0x0/0x90)",
        ("handle_bus_lock", "CPU 0/KVM", 4243, 4_001_000),
    ),
    (
        "5.x four-char flags",
        "           a.out-900   [001] d...   55.000002: handle_bus_lock: (handle_bus_lock+0x0/0x70)",
        ("handle_bus_lock", "a.out", 900, 55_000_002),
    ),
    (
        "record-tgid column",
        " CPU 1/KVM-4244 (   4242) [003] d..1. 10.5: handle_guest_split_lock: "
        "(handle_guest_split_lock+0x0/0xa0)",
        ("handle_guest_split_lock", "CPU 1/KVM", 4244, 10_500_000),
    ),
    (
        "no irq-info flags",
        "           a.out-900   [001]    55.000002: split_lock_warn: (split_lock_warn+0x0/0x90)",
        ("split_lock_warn", "a.out", 900, 55_000_002),
    ),
    (
        "comm with dashes splits on the last dash before the tid",
        "  my-app-v2-beta-31337 [000] d..1.     1.000000: split_lock_warn: (split_lock_warn+0x0/0x90)",
        ("split_lock_warn", "my-app-v2-beta", 31337, 1_000_000),
    ),
    (
        "comm ending in digits and a dash",
        "       worker-7-12 [000] d..1.     1.000000: split_lock_warn: (split_lock_warn+0x0/0x90)",
        ("split_lock_warn", "worker-7", 12, 1_000_000),
    ),
    (
        "unknown comm",
        "           <...>-4243    [002] d..1.  1234.567890: split_lock_warn: (split_lock_warn+0x0/0x90)",
        ("split_lock_warn", "<...>", 4243, 1_234_567_890),
    ),
    (
        "nanosecond clock keeps microseconds",
        "  a.out-900 [001] d..1. 55.000002999: split_lock_warn: (split_lock_warn+0x0/0x90)",
        ("split_lock_warn", "a.out", 900, 55_000_002),
    ),
]


@pytest.mark.parametrize(("line", "expected"), [c[1:] for c in LINES], ids=[c[0] for c in LINES])
def test_trace_pipe_lines_give_probe_comm_tid_and_time(
    line: str, expected: tuple[str, str, int, int]
) -> None:
    parsed = parse_trace_line(line)
    assert parsed is not None and not isinstance(parsed, int)
    assert (parsed.probe, parsed.comm, parsed.tid, parsed.usec) == expected


NOT_OURS = [
    ("another tool's kprobe", "  bash-1 [000] d..1. 1.000000: do_sys_open: (do_sys_open+0x0/0x80)"),
    ("a tracepoint", "  bash-1 [000] d..1. 1.000000: sched_switch: prev_comm=bash prev_pid=1"),
    ("garbage", "hello world"),
    ("empty", ""),
    ("header comment", "# tracer: nop"),
]


@pytest.mark.parametrize("line", [c[1] for c in NOT_OURS], ids=[c[0] for c in NOT_OURS])
def test_lines_that_are_not_our_probes_are_ignored(line: str) -> None:
    assert parse_trace_line(line) is None


def test_lost_events_are_counted(host: FakeHost) -> None:
    assert parse_trace_line("CPU:3 [LOST 1270 EVENTS]") == 1270
    source = TracefsSource(HostRoot.at(host.root))
    source.start()
    with (host.root / TRACING / "trace_pipe").open("a") as f:
        f.write("CPU:3 [LOST 1270 EVENTS]\nCPU:1 [LOST 5 EVENTS]\n")
    assert source.collect().lost == 1275
    source.close()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=160))
def test_any_trace_pipe_line_parses_to_a_hit_a_loss_or_nothing(line: str) -> None:
    parsed = parse_trace_line(line)
    assert (
        parsed is None
        or isinstance(parsed, int)
        or parsed.probe in ("split_lock_warn", "handle_guest_split_lock", "handle_bus_lock")
    )
