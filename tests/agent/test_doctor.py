"""`splitwatch doctor`'s diagnosis: what a host's set-up means, and each thing that is wrong."""

from __future__ import annotations

from pathlib import Path

from agent.doctor import Report, cpu_ranges, diagnose, format_report, mode_meaning
from agent.fakehost import FakeHost
from agent.payload import Mode


def text(report: Report) -> str:
    return format_report(report)


def problems(report: Report) -> str:
    return "\n".join(f"{p.what} -> {p.remedy}" for p in report.problems)


def healthy(tmp_path: Path, cpus: int = 4) -> FakeHost:
    host = FakeHost(tmp_path / "host", hostname="kvm-ok").kernel("6.8.0-49-generic").mitigate(1).cpus(cpus)
    host.boot_messages()
    return host


def run(host: FakeHost, **kwargs: object) -> Report:
    return diagnose(host.root, sample_pause_s=0, euid=0, **kwargs)  # type: ignore[arg-type]


def test_healthy_warn_host_has_no_problem_and_says_what_warn_with_misery_does(tmp_path: Path) -> None:
    report = run(healthy(tmp_path))
    assert report.ok, problems(report)
    out = text(report)
    assert "split-lock #AC: cpu 0-3 on" in out
    assert "split-lock detection (#AC): supported by this CPU; on for 4 of 4 CPUs" in out
    assert "warn + misery: a split-locking task sleeps 10 ms and runs serialized" in out
    assert "the kernel's default: no split_lock_detect= on the command line" in out
    assert "kvm_intel" in out
    assert "consistent: split-lock detection is warn" in out
    assert out.rstrip().endswith("No problems found.")


def test_cores_reading_off_in_every_sample_while_mode_is_warn_are_drift(tmp_path: Path) -> None:
    host = healthy(tmp_path, cpus=36)
    for cpu in range(32, 36):
        host.cpu_state(cpu, sld_on=False)
    report = run(host)
    assert "split-lock #AC: cpu 0-31 on, cpu 32-35 off" in text(report)
    [problem] = report.problems
    assert problem.what.startswith("drift: ") and "cpu 32-35" in problem.what
    assert "wrmsr" in problem.remedy


def test_doctor_prints_the_agents_verdict_words_for_a_stuck_off_kernel(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").kernel("6.6.58-generic").mitigate(0).cpus(8).boot_messages()
    for tid, comm in ((700, "CJobMgr::m_Work"), (701, "java")):  # traps by two threads this boot
        host.process(comm, tid)
        host.split_lock(comm, tid)
    host.cpu_state(5, sld_on=False)
    report = run(host)
    [problem] = report.problems
    assert problem.what.startswith("stuck off: detection stays off on cpu 5")
    assert "split_lock_mitigate=1" in problem.remedy


def test_a_rhel_8_backport_is_not_told_it_predates_detection(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").kernel("4.18.0-394.el8.x86_64").mitigate(None)
    host.default_mode("off").knob("off").cpus(4).boot_messages()
    report = run(host)
    assert "predates" not in problems(report)
    assert "off by design: split-lock detection is off by design: the runtime split_lock_detect knob" in text(
        report
    )


def test_a_5_4_host_is_unsupported_and_told_to_upgrade_never_drift(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").kernel("5.4.0-216-generic").mitigate(None).cpus(4).boot_messages()
    report = run(host)
    assert "unsupported: kernel 5.4.0-216-generic predates" in text(report)
    assert "drift" not in problems(report) and "upgrade the kernel" in problems(report)


def test_missing_msr_module_is_a_problem_with_modprobe_as_the_remedy(tmp_path: Path) -> None:
    host = healthy(tmp_path).no_msr_device()
    report = run(host)
    assert "modprobe msr" in problems(report)
    assert "cpu 0-3 unreadable" in text(report)


def test_cpu_whose_msr_gives_eio_is_listed_and_the_others_still_read(tmp_path: Path) -> None:
    host = healthy(tmp_path).msr_error(2, "eio")
    out = text(run(host))
    assert "split-lock #AC: cpu 0-1 on, cpu 2 unreadable, cpu 3 on" in out
    assert "MSR 0x33 not readable on cpu 2 (EIO)" in out


def test_cpu_without_split_lock_detection_is_a_problem(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").cpus(4, sld_supported=False)
    report = run(host)
    assert "lacks split-lock detection" in problems(report)
    assert "split-lock detection (#AC): NOT supported" in text(report)


def test_ratelimit_mode_is_a_problem_because_split_lock_detection_is_off(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").mode("ratelimit:10").cpus(4)
    report = run(host)
    assert "ratelimit:10: split-lock #AC detection is OFF" in problems(report)
    assert "throttled to 10 per second" in text(report)
    assert "split_lock_detect=ratelimit:10 on the command line" in text(report)


def test_a_cmdline_value_the_kernel_does_not_accept_is_shown_as_what_it_reads(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").mode("sometimes").cpus(2)
    assert "split_lock_detect=sometimes on the command line, which this kernel reads as warn" in text(
        run(host)
    )


def test_mode_off_is_a_problem(tmp_path: Path) -> None:
    report = run(FakeHost(tmp_path / "host").mode("off").cpus(2))
    assert "split_lock_detect=off" in problems(report)


def test_running_inside_a_guest_is_a_problem(tmp_path: Path) -> None:
    host = healthy(tmp_path)
    cpuinfo = host.root / "proc/cpuinfo"
    cpuinfo.write_text(cpuinfo.read_text().replace("flags\t\t: ", "flags\t\t: hypervisor "))
    assert "inside a virtual machine" in problems(run(host))


def test_inside_a_vm_is_the_first_problem_before_modprobe_msr(tmp_path: Path) -> None:
    # A guest usually has no msr device either: the VM is the cause, so it leads (#17).
    host = healthy(tmp_path).no_msr_device()
    cpuinfo = host.root / "proc/cpuinfo"
    cpuinfo.write_text(cpuinfo.read_text().replace("flags\t\t: ", "flags\t\t: hypervisor "))
    report = run(host)
    assert "modprobe msr" in problems(report)
    assert "inside a virtual machine" in report.problems[0].what


def test_unreadable_kernel_log_and_msrs_as_a_non_root_user_say_run_as_root(tmp_path: Path) -> None:
    host = healthy(tmp_path)
    (host.root / "dev/kmsg").unlink()
    (host.root / "dev/kmsg").mkdir()  # reading a directory fails: the log is not readable
    report = run(host)
    assert "kmsg" in problems(report)
    # euid only matters with a denial; the subprocess test in test_doctor_cli covers a real one.
    assert "not running as root" not in problems(report)


def test_recent_events_list_guests_actions_and_killed_guests(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").mode("fatal").cpus(2)
    host.boot_messages()
    vm = host.qemu("ci-build-07", pid=3300, vcpus=2)
    web = host.qemu("web-1", pid=4200, vcpus=2)
    for _ in range(12):
        host.split_lock(web.vcpu_comm(0), web.vcpu_tids[0], verb="bogus")
    host.split_lock(vm.vcpu_comm(1), vm.vcpu_tids[1], "0x7f3a12c0", verb="fatal")
    host.suppressed(9)
    out = text(run(host, recent=3))
    assert "13 trap line(s): 13 from 2 guest(s), 0 from host processes; actions sigbus 13" in out
    assert "guests killed by SIGBUS: ci-build-07, web-1" in out
    assert "last 3:" in out
    assert "CPU 1/KVM/3302  guest ci-build-07 (qemu, vcpu 1)  action sigbus  at 0x7f3a12c0" in out
    assert out.count("guest web-1 (qemu, vcpu 0)") == 2  # only the last 3 events are listed
    assert "suppressed by the printk limit: 9 line(s) not logged" in out
    assert "fatal: a split-locking task gets SIGBUS and dies" in out


def test_kernel_era_notes_follow_the_release(tmp_path: Path) -> None:
    old = FakeHost(tmp_path / "old").kernel("5.10.0-28-amd64").mitigate(None).cpus(2)
    out = text(run(old))
    assert "5.7-5.12: no bus-lock detection" in out
    assert "before 5.19: no misery mode" in out
    assert "logged once and then runs with detection off" in out
    ancient = FakeHost(tmp_path / "ancient").kernel("5.4.0-150-generic").mitigate(None).cpus(2)
    assert "predates split-lock detection (5.7) and shows no backport" in problems(run(ancient))


def test_tracefs_availability_is_reported(tmp_path: Path) -> None:
    host = healthy(tmp_path)
    assert "not mounted" in text(run(host))
    host.tracefs()
    out = text(run(host))
    assert "kprobe_events writable" in out
    assert "probe points: split_lock_warn, handle_guest_split_lock, handle_bus_lock" in out


def test_cpu_ranges_are_compact() -> None:
    assert cpu_ranges([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    assert cpu_ranges([5]) == "5"
    assert cpu_ranges([]) == ""


def test_mode_meanings_follow_design_table() -> None:
    assert mode_meaning(Mode.WARN, None, 0, (6, 8)).startswith("warn: a split-locking task is logged")
    assert mode_meaning(Mode.WARN, None, 1, (5, 15)).endswith("(5.7-5.18)")
    assert "SIGBUS" in mode_meaning(Mode.FATAL, None, 1, (6, 8))
    assert "undetected" in mode_meaning(Mode.OFF, None, None, (6, 8))


def test_real_root_is_diagnosed_without_crashing() -> None:
    report = diagnose(Path("/"), sample_pause_s=0)
    out = text(report)
    assert out.startswith("splitwatch doctor: ")
    assert "Detection" in out and "Kernel" in out
