"""The Collector: one pass over a fake host, assembled into payloads, acknowledged only on commit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.collect import Collector
from agent.errors import ConfigError
from agent.fakehost import FakeHost
from agent.payload import Action, Event, Payload, Source
from agent.simulate import FATAL_KILL_TICK, Fleet
from agent.state import STATE_FILE


def events(payloads: list[Payload]) -> list[Event]:
    return [e for p in payloads for e in p.events]


def warn_host(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path / "host", hostname="kvm-1").kernel("6.8.0").mitigate(1).cpus(2)
    host.boot_messages()
    return host


def test_one_pass_gives_the_host_its_state_and_its_attributed_events(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    vm = host.qemu("web-1", pid=4242, vcpus=2, uuid="9d8f5c1e-52a7-4c3e-8f0e-1d2b3c4d5e6f")
    seq = host.split_lock(vm.vcpu_comm(1), vm.vcpu_tids[1], "0x7f3a12c0")
    with Collector(host.root, tmp_path / "state") as collector:
        collected = collector.collect()
    [payload] = collected.payloads
    assert payload.host.name == "kvm-1" and payload.host.boot_id == host.boot_id
    assert payload.state is not None and len(payload.state.cpus) == 2
    [event] = payload.events
    assert (event.source, event.seq, event.tid, event.tgid) == (Source.KMSG, seq, 4244, 4242)
    assert event.guest is not None and (event.guest.name, event.guest.vcpu) == ("web-1", 1)
    assert (event.count, event.action, event.address) == (1, Action.THROTTLE, "0x7f3a12c0")
    assert collected.statuses["kmsg"] == "ok" and collected.statuses["msr"] == "ok"


def test_commit_advances_the_cursor_so_the_next_pass_reads_only_new_records(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    host.split_lock("java", 100)
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect().commit()
        assert events(collector.collect().payloads) == []
        seq = host.split_lock("java", 100)
        assert [e.seq for e in events(collector.collect().payloads)] == [seq]
    saved = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    assert saved["boot_id"] == host.boot_id


def test_a_pass_not_committed_is_read_again_by_the_next_one(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    first_seq = host.split_lock("java", 100)
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect()  # spooling failed: no commit
        second_seq = host.split_lock("java", 100)
        assert [e.seq for e in events(collector.collect().payloads)] == [first_seq, second_seq]


def test_a_restarted_agent_resumes_from_the_committed_cursor(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    host.split_lock("java", 100)
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect().commit()
    seq = host.split_lock("java", 100)
    with Collector(host.root, tmp_path / "state") as restarted:
        assert [e.seq for e in events(restarted.collect().payloads)] == [seq]


def test_guest_killed_by_its_sigbus_between_passes_is_still_attributed(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").mode("fatal").cpus(2)
    vm = host.qemu("ci-build-07", pid=3300, vcpus=2)
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect().commit()
        host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0], verb="fatal")
        host.kill(vm.pid)
        [event] = events(collector.collect().payloads)
    assert event.guest is not None and event.guest.name == "ci-build-07"
    assert (event.tgid, event.action) == (3300, Action.SIGBUS)


def test_guest_cache_survives_an_agent_restart(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").mode("fatal").cpus(2)
    vm = host.qemu("ci-build-07", pid=3300, vcpus=2)
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect().commit()
    host.split_lock(vm.vcpu_comm(1), vm.vcpu_tids[1], verb="fatal")
    host.kill(vm.pid)  # died while the agent was down
    with Collector(host.root, tmp_path / "state") as restarted:
        [event] = events(restarted.collect().payloads)
    assert event.guest is not None and event.guest.name == "ci-build-07"


def test_thread_that_is_gone_and_never_seen_has_no_tgid_and_no_guest(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    host.split_lock("CPU 0/KVM", 31337)
    with Collector(host.root, None) as collector:
        [event] = events(collector.collect().payloads)
    assert (event.tgid, event.guest) == (None, None)


def test_more_than_max_events_are_split_into_payloads_with_the_state_on_the_first(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    for _ in range(25):
        host.split_lock("java", 100)
    host.suppressed(5)
    with Collector(host.root, tmp_path / "state", max_events=10) as collector:
        collected = collector.collect()
        assert [len(p.events) for p in collected.payloads] == [10, 10, 5]
        assert collected.payloads[0].state is not None and collected.payloads[0].gaps
        assert all(p.state is None and not p.gaps for p in collected.payloads[1:])
        collected.commit()  # one commit for all of them
        assert events(collector.collect().payloads) == []


def test_new_boot_reads_the_new_log_from_its_start_and_forgets_the_old_guests(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    vm = host.qemu("web-1", pid=4242)
    host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0])
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect().commit()
        host.reboot()
        host.boot_messages()
        seq = host.split_lock("CPU 0/KVM", vm.vcpu_tids[0])  # same TID, the old guest is gone
        collected = collector.collect()
    assert collected.payload.host.boot_id == host.boot_id
    [event] = events(collected.payloads)
    assert event.seq == seq and event.guest is None  # not the previous boot's web-1


def test_corrupt_state_file_restarts_from_the_beginning_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = warn_host(tmp_path)
    seq = host.split_lock("java", 100)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / STATE_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING, "splitwatch.agent"), Collector(host.root, tmp_path / "state") as c:
        collected = c.collect()
    assert [e.seq for e in events(collected.payloads)] == [seq]
    assert any("is corrupt" in r.getMessage() and "beginning" in r.getMessage() for r in caplog.records)
    collected.commit()  # and the next save repairs it
    assert json.loads((tmp_path / "state" / STATE_FILE).read_text())["kmsg_next_seq"] == seq + 1


def test_host_with_broken_procfs_and_no_msr_still_gives_a_state_and_says_why(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    host.no_msr_device()
    for rel in ("proc/stat", "proc/cpuinfo", "proc/cmdline"):
        (host.root / rel).unlink()
    with Collector(host.root, None) as collector:
        collected = collector.collect()
    state = collected.payload.state
    assert state is not None and state.cpus == ()
    assert collected.statuses["msr"] == "absent"
    assert any("proc/cpuinfo" in e for e in collected.errors)
    assert any("modprobe msr" in e for e in collected.errors)


def test_empty_directory_as_root_does_not_raise(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with Collector(tmp_path / "empty", None) as collector:
        collected = collector.collect()
    assert collected.payload.state is not None
    # No boot_id and no btime: the log is not read (no key, no date), which loses nothing.
    assert collected.statuses["kmsg"] == "failed"
    assert collected.payload.host.boot_id == "unknown"
    assert collected.errors


def test_root_that_is_not_a_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nonexistent"):
        Collector(tmp_path / "nonexistent", None)


def test_without_a_state_dir_nothing_is_written(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    host.split_lock("java", 100)
    before = sorted(tmp_path.rglob("*"))
    with Collector(host.root, None) as collector:
        collector.collect().commit()
    assert sorted(tmp_path.rglob("*")) == before


# -- tracefs: true counts, kmsg lines become sightings --------------------------------------------


def tracefs_host(tmp_path: Path) -> FakeHost:
    host = warn_host(tmp_path).tracefs()
    return host


def test_with_tracefs_the_probe_hits_are_the_counts_and_kmsg_lines_are_sightings(tmp_path: Path) -> None:
    host = tracefs_host(tmp_path)
    vm = host.qemu("web-1", pid=4242, vcpus=2)
    comm, tid = vm.vcpu_comm(0), vm.vcpu_tids[0]
    with Collector(host.root, tmp_path / "state") as collector:
        first = collector.collect()
        assert first.statuses["tracefs"] == "ok"
        first.commit()
        host.split_lock(comm, tid, "0x7f3a12c0")
        for _ in range(7):
            host.trace_hit("handle_guest_split_lock", comm, tid)
            host.trace_hit("split_lock_warn", comm, tid)  # the same traps, seen again
        collected = collector.collect()
    kmsg = [e for e in events(collected.payloads) if e.source is Source.KMSG]
    traced = [e for e in events(collected.payloads) if e.source is Source.TRACEFS]
    assert [(e.count, e.address) for e in kmsg] == [(0, "0x7f3a12c0")]
    assert [(e.count, e.tid, e.action) for e in traced] == [(7, tid, Action.THROTTLE)]
    assert traced[0].guest is not None and traced[0].guest.name == "web-1"
    assert sum(e.count for e in events(collected.payloads)) == 7  # no trap counted twice


def test_kmsg_lines_from_before_the_probes_ran_keep_their_count_and_old_hits_are_not_recounted(
    tmp_path: Path,
) -> None:
    host = tracefs_host(tmp_path)
    host.split_lock("java", 100)
    host.trace_hit("split_lock_warn", "java", 100)  # a hit from before this agent started
    with Collector(host.root, tmp_path / "state") as collector:
        collected = collector.collect()
    assert [(e.source, e.count) for e in events(collected.payloads)] == [(Source.KMSG, 1)]


def test_tracefs_events_not_committed_are_sent_again_with_the_same_seqs(tmp_path: Path) -> None:
    host = tracefs_host(tmp_path)
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect().commit()
        host.trace_hit("split_lock_warn", "java", 100)
        first = [(e.seq, e.count) for e in events(collector.collect().payloads)]  # not committed
        host.trace_hit("split_lock_warn", "java", 100)
        host.trace_hit("split_lock_warn", "java", 101)
        again = collector.collect()
        second = [(e.seq, e.tid, e.count) for e in events(again.payloads)]
        assert second[0] == (first[0][0], 100, 1)
        assert sorted(s for s, _, _ in second) == [first[0][0], first[0][0] + 1, first[0][0] + 2]
        again.commit()
        assert events(collector.collect().payloads) == []


def test_tracefs_seq_counter_survives_a_restart_so_seqs_never_repeat_in_a_boot(tmp_path: Path) -> None:
    host = tracefs_host(tmp_path)
    seqs: list[int] = []
    for _ in range(2):
        with Collector(host.root, tmp_path / "state") as collector:
            collector.collect().commit()
            host.trace_hit("split_lock_warn", "java", 100)
            collected = collector.collect()
            seqs += [e.seq for e in events(collected.payloads) if e.source is Source.TRACEFS]
            collected.commit()
    assert len(seqs) == 2 and seqs[0] < seqs[1]


def test_lost_trace_events_become_a_tracefs_overrun_gap(tmp_path: Path) -> None:
    host = tracefs_host(tmp_path)
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect().commit()
        with open(host.root / "sys/kernel/tracing/trace_pipe", "a") as f:
            f.write("CPU:3 [LOST 812 EVENTS]\n")
        collected = collector.collect()
    [gap] = collected.payload.gaps
    assert (gap.source, gap.count, gap.reason) == (Source.TRACEFS, 812, "overrun")


def test_close_removes_the_probes_it_registered(tmp_path: Path) -> None:
    host = tracefs_host(tmp_path)
    with Collector(host.root, tmp_path / "state") as collector:
        collector.collect()
    commands = (host.root / "sys/kernel/tracing/kprobe_events").read_text().splitlines()
    added = {c.split()[0][2:] for c in commands if c.startswith("p:")}
    removed = {c[2:] for c in commands if c.startswith("-:")}
    assert added and added == removed


def test_without_tracefs_the_collector_counts_from_kmsg_and_says_tracefs_is_off(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    host.split_lock("java", 100)
    with Collector(host.root, None) as collector:
        collected = collector.collect()
        assert collector.collect().statuses["tracefs"] == "absent"  # and it stays so
    assert collected.statuses["tracefs"] == "absent"
    assert [e.count for e in events(collected.payloads)] == [1]
    with Collector(host.root, None, use_tracefs=False) as collector:
        assert collector.collect().statuses["tracefs"] == "off"


# -- a simulated fleet through the collector --------------------------------------------------------


def test_simulated_fatal_host_shows_its_killed_guest_with_sigbus(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "fleet", hosts=3, seed=0, live=False)
    fleet.build()
    fatal = next(h for h in fleet.hosts if h.role == "fatal")
    with Collector(fatal.root, tmp_path / "state") as collector:
        collector.collect().commit()
        for _ in range(FATAL_KILL_TICK):
            fleet.tick()
        collected = collector.collect()
    killed = [e for e in events(collected.payloads) if e.action is Action.SIGBUS]
    assert [e.guest.name for e in killed if e.guest] == fatal.killed
    assert collected.payload.state is not None and collected.payload.state.mode == "fatal"


def test_unreadable_kernel_log_still_sends_the_state_and_keeps_the_cursor(tmp_path: Path) -> None:
    host = warn_host(tmp_path)
    seq = host.split_lock("java", 100)
    kmsg = host.root / "dev/kmsg"
    kmsg.rename(host.root / "dev/kmsg.saved")
    kmsg.mkdir()  # reading it fails (EISDIR)
    with Collector(host.root, tmp_path / "state") as collector:
        collected = collector.collect()
        assert collected.statuses["kmsg"] == "failed"
        assert any("dev/kmsg" in e for e in collected.errors)
        assert collected.payload.state is not None and events(collected.payloads) == []
        collected.commit()
    kmsg.rmdir()
    (host.root / "dev/kmsg.saved").rename(kmsg)
    with Collector(host.root, tmp_path / "state") as collector:
        assert [e.seq for e in events(collector.collect().payloads)] == [seq]  # nothing skipped
