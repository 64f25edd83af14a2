"""The simulated fleet: fake hosts that change the way real ones do, the same way for a seed."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from agent.host import HostRoot
from agent.simulate import DRIFT_TICK, FATAL_KILL_TICK, RATELIMIT_BURST, Fleet, FleetError

TEST_CTRL, SLD_BIT = 0x33, 1 << 29
TRAP = re.compile(r"#(AC|DB): (.*)/(\d+) (took a|fatal|bogus) (split_lock|bus_lock) trap")


def kmsg_texts(root: Path) -> list[str]:
    """Record texts with SEQ but without USEC (USEC follows the wall clock)."""
    lines = (root / "dev/kmsg").read_text().splitlines()
    return [re.sub(r"^(\d+,\d+),\d+,", r"\1,", line) for line in lines]


def run(tmp_path: Path, ticks: int, **kwargs: object) -> Fleet:
    fleet = Fleet(tmp_path / "fleet", **kwargs)  # type: ignore[arg-type]
    fleet.build()
    for _ in range(ticks):
        fleet.tick()
    return fleet


def host(fleet: Fleet, role: str):  # type: ignore[no-untyped-def]
    return next(h for h in fleet.hosts if h.role == role)


def test_default_fleet_is_a_dozen_hosts_with_a_few_dozen_guests_of_every_vmm_kind(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    roots = fleet.build()
    assert len(roots) == 12
    assert all(r.parent == tmp_path and r.name == h.name for r, h in zip(roots, fleet.hosts, strict=True))
    guests = [w for h in fleet.hosts for w in h.workloads if w.is_guest]
    assert 24 <= len(guests) <= 48
    kinds = {w.vmm_kind for w in guests}
    assert kinds == {"qemu", "libvirt", "proxmox", "kata", "firecracker", "cloud-hypervisor", "crosvm"}
    assert any(not w.is_guest for h in fleet.hosts for w in h.workloads)  # plain host processes too
    assert {"fatal", "drift", "old-kernel", "ratelimit"} <= {h.role for h in fleet.hosts}


def test_same_seed_gives_the_same_happenings_and_another_seed_other_ones(tmp_path: Path) -> None:
    a = run(tmp_path / "a", 20, hosts=3, seed=7, tracefs=True)
    b = run(tmp_path / "b", 20, hosts=3, seed=7, tracefs=True)
    c = run(tmp_path / "c", 20, hosts=3, seed=8, tracefs=True)
    texts = [[kmsg_texts(h.root) for h in f.hosts] for f in (a, b, c)]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


def test_each_run_is_a_new_boot_so_a_backend_keeping_the_last_run_takes_new_events(tmp_path: Path) -> None:
    first = Fleet(tmp_path, hosts=2, seed=1)
    first.build()
    first_boot = (first.hosts[0].root / "proc/sys/kernel/random/boot_id").read_text()
    first.tick()
    again = Fleet(tmp_path, hosts=2, seed=1)
    again.build()  # over the previous run's hosts
    assert (again.hosts[0].root / "proc/sys/kernel/random/boot_id").read_text() != first_boot
    seqs = [int(line.split(",")[1]) for line in kmsg_texts(again.hosts[0].root)]
    assert seqs == list(range(len(seqs)))  # a fresh log, not the old one continued


def test_build_refuses_a_directory_that_is_not_a_fake_host(tmp_path: Path) -> None:
    (tmp_path / "kvm-fra-01").mkdir()
    (tmp_path / "kvm-fra-01" / "precious.txt").write_text("keep me")
    with pytest.raises(FleetError, match="not a fake host"):
        Fleet(tmp_path, hosts=1).build()
    assert (tmp_path / "kvm-fra-01" / "precious.txt").read_text() == "keep me"


def test_fleet_of_three_has_a_fatal_host_that_kills_its_guest_and_its_qemu_vanishes(tmp_path: Path) -> None:
    fleet = run(tmp_path, FATAL_KILL_TICK, hosts=3)
    fatal = host(fleet, "fatal")
    doomed = next(w for w in fatal.workloads if w.doomed)
    assert fatal.killed == [doomed.name]
    assert not (fatal.root / f"proc/{doomed.pid}").exists()
    assert not any((fatal.root / f"proc/{tid}").exists() for tid in doomed.tids)
    lines = [t for t in kmsg_texts(fatal.root) if "fatal split_lock trap" in t]
    assert len(lines) == 1
    assert f"/{doomed.tids[0]} fatal split_lock trap" in lines[0]
    assert all((fatal.root / f"proc/{w.pid}").exists() for w in fatal.workloads if not w.doomed)


def test_drift_host_reads_detection_off_on_some_cores_while_its_mode_is_warn(tmp_path: Path) -> None:
    fleet = run(tmp_path, DRIFT_TICK - 1, hosts=3, seed=3)
    drift = host(fleet, "drift")
    hr = HostRoot.at(drift.root)
    assert drift.mode == "warn"
    fleet.tick()  # DRIFT_TICK
    for _ in range(3):
        fleet.tick()
        off = {cpu for cpu in range(drift.cpu_count) if not hr.pread_msr(cpu, TEST_CTRL) & SLD_BIT}
        assert drift.drifted <= off  # the drifted cores read off in consecutive samples
    assert drift.drifted and len(drift.drifted) < drift.cpu_count


def test_a_thread_prints_its_split_lock_line_once_while_tracefs_counts_every_trap(tmp_path: Path) -> None:
    fleet = run(tmp_path, 60, hosts=1, seed=2, tracefs=True)
    noisy = fleet.hosts[0]
    tids = [int(m[3]) for t in kmsg_texts(noisy.root) if (m := TRAP.search(t))]
    assert tids and len(tids) == len(set(tids))  # 5.19+: reported_split_lock, once per thread
    hits = (noisy.root / "sys/kernel/tracing/trace_pipe").read_text().splitlines()
    assert len(hits) > 3 * len(tids)
    assert all("splitwatch_handle_guest_split_lock" in h or "splitwatch_split_lock_warn" in h for h in hits)


def test_warn_mode_core_reads_off_only_until_the_next_tick_after_a_trap(tmp_path: Path) -> None:
    fleet = run(tmp_path, 0, hosts=1, seed=2)
    noisy = fleet.hosts[0]
    hr = HostRoot.at(noisy.root)
    seen_transient = False
    for _ in range(40):
        fleet.tick()
        off = {cpu for cpu in range(noisy.cpu_count) if not hr.pread_msr(cpu, TEST_CTRL) & SLD_BIT}
        assert off == noisy.transient_off
        seen_transient |= bool(off)
    assert seen_transient


def test_ratelimit_host_bus_lock_lines_pass_the_printk_rate_limit_and_the_rest_are_counted(
    tmp_path: Path,
) -> None:
    fleet = run(tmp_path, 120, hosts=5, seed=4, tracefs=True)
    rl = host(fleet, "ratelimit")
    texts = kmsg_texts(rl.root)
    printed = [t for t in texts if "took a bus_lock trap" in t]
    suppressed = sum(int(m[1]) for t in texts if (m := re.search(r"handle_bus_lock: (\d+) callbacks", t)))
    pending = rl.limits["handle_bus_lock"].missed  # dropped in the current window, not yet reported
    hits = (rl.root / "sys/kernel/tracing/trace_pipe").read_text().count("splitwatch_handle_bus_lock")
    assert suppressed > 0
    assert len(printed) + suppressed + pending == hits
    kernel = [t for t in texts if not t.startswith("12,")]  # forged records (facility 1) aside
    assert not any("split_lock trap" in t for t in kernel)  # ratelimit:N turns #AC off
    # Never more than the burst within one window of 5 simulated seconds.
    assert len(printed) <= RATELIMIT_BURST * (fleet.now_s / 5 + 1)


def test_old_kernel_host_runs_5_10_without_the_mitigate_sysctl(tmp_path: Path) -> None:
    fleet = run(tmp_path, 0, hosts=4)
    old = host(fleet, "old-kernel")
    assert (old.root / "proc/sys/kernel/osrelease").read_text().startswith("5.10.")
    assert not (old.root / "proc/sys/kernel/split_lock_mitigate").exists()
    assert "x86/split lock detection: warning about user-space split_locks" in "\n".join(kmsg_texts(old.root))


def test_long_run_shows_overruns_forged_records_and_guest_reboots(tmp_path: Path) -> None:
    fleet = run(tmp_path, 150, hosts=12, seed=7, live=False)
    forged = overruns = 0
    for h in fleet.hosts:
        texts = kmsg_texts(h.root)
        forged += sum(1 for t in texts if t.startswith("12,"))  # facility 1, level 4
        seqs = [int(t.split(",")[1]) for t in texts]
        overruns += sum(1 for a, b in itertools.pairwise(seqs) if b > a + 1)
    assert forged > 0
    assert overruns > 0
    assert sum(h.reboots for h in fleet.hosts) > 0


def test_fleet_needs_at_least_one_host_and_a_positive_tick(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 host"):
        Fleet(tmp_path, hosts=0)
    with pytest.raises(ValueError, match="positive"):
        Fleet(tmp_path, tick_s=0)
