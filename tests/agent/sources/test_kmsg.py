"""KmsgSource over a fake host's dev/kmsg and over this machine's real /dev/kmsg."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.fakehost import FakeHost
from agent.host import HostRoot
from agent.kernel.splitlock import BootMode, Trap
from agent.payload import Gap, GapReason, Kind, Mode, Source
from agent.sources.kmsg import KmsgCursor, KmsgResult, KmsgSource


def collect(
    fake: FakeHost, cursor: KmsgCursor | None = None, source: KmsgSource | None = None, **kwargs: int
) -> KmsgResult:
    source = source or KmsgSource(HostRoot.at(fake.root))
    assert fake.btime is not None
    return source.collect(cursor, boot_id=fake.boot_id, btime=fake.btime, **kwargs)


def traps(result: KmsgResult) -> list[Trap]:
    return [t.trap for t in result.traps]


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path).kernel("6.8.0").mode("warn").cpus(2)


def test_qemu_vcpu_split_lock_is_a_trap_with_comm_tid_address_and_wall_time(host: FakeHost) -> None:
    vm = host.qemu("web-1", pid=4242)
    seq = host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0], "0xffffffff8104b2a3", usec=688_792_264)

    result = collect(host)

    assert result.status == "ok" and result.error is None
    assert [(t.seq, t.trap) for t in result.traps] == [
        (seq, Trap(Kind.SPLIT_LOCK, "took", "CPU 0/KVM", 4243, "0xffffffff8104b2a3"))
    ]
    assert result.traps[0].time == datetime(2025, 11, 24, 16, 11, 28, 792264, tzinfo=UTC)
    assert result.cursor == KmsgCursor(host.boot_id, seq + 1)


@pytest.mark.parametrize(
    ("kernel", "mode", "expected"),
    [
        pytest.param(
            "5.10",
            "warn",
            [
                BootMode(
                    Mode.WARN,
                    None,
                    True,
                    None,
                    "x86/split lock detection: warning about user-space split_locks",
                )
            ],
            id="5.10-warn",
        ),
        pytest.param(
            "5.10",
            "fatal",
            [
                BootMode(
                    Mode.FATAL,
                    None,
                    True,
                    None,
                    "x86/split lock detection: sending SIGBUS on user-space split_locks",
                )
            ],
            id="5.10-fatal",
        ),
        pytest.param(
            "5.12",
            "off",
            [BootMode(Mode.OFF, None, False, None, "x86/split lock detection: disabled")],
            id="5.12-off",
        ),
        pytest.param(
            "5.15",
            "fatal",
            [
                BootMode(
                    Mode.FATAL,
                    None,
                    True,
                    None,
                    "x86/split lock detection: #AC: crashing the kernel on "
                    "kernel split_locks and sending SIGBUS on user-space split_locks",
                ),
                BootMode(
                    Mode.FATAL,
                    None,
                    None,
                    True,
                    "x86/split lock detection: #DB: sending SIGBUS on user-space bus_locks",
                ),
            ],
            id="5.15-fatal",
        ),
        pytest.param(
            "6.1",
            "ratelimit:250",
            [
                BootMode(
                    Mode.RATELIMIT,
                    250,
                    False,
                    True,
                    "x86/split lock detection: #DB: setting system wide bus lock rate limit to 250/sec",
                )
            ],
            id="6.1-ratelimit",
        ),
        pytest.param(
            "6.5",
            "off",
            [BootMode(Mode.OFF, None, False, None, "x86/split lock detection: disabled")],
            id="6.5-off",
        ),
        pytest.param("6.12", "off", [], id="newest-prints-nothing-for-off"),
    ],
)
def test_boot_mode_lines_of_every_kernel_era_are_reported(
    tmp_path: Path, kernel: str, mode: str, expected: list[BootMode]
) -> None:
    host = FakeHost(tmp_path).kernel(kernel).mode(mode).cpus(1)
    host.boot_messages()

    result = collect(host)

    assert list(result.boot_modes) == expected
    assert result.traps == () and result.records_read == host.seq


def test_fatal_bogus_and_bus_lock_traps_keep_their_verb_and_kind(host: FakeHost) -> None:
    host.split_lock("CPU 1/KVM", 9001, "0xffffffff81a0c4d2", verb="fatal")
    host.split_lock("qemu-system-x86", 9002, "0x4011b6", verb="bogus")
    host.bus_lock("remake", 737636, "0x5555555645d6")

    assert traps(collect(host)) == [
        Trap(Kind.SPLIT_LOCK, "fatal", "CPU 1/KVM", 9001, "0xffffffff81a0c4d2"),
        Trap(Kind.SPLIT_LOCK, "bogus", "qemu-system-x86", 9002, "0x4011b6"),
        Trap(Kind.BUS_LOCK, "took", "remake", 737636, "0x5555555645d6"),
    ]


def test_alignment_check_of_a_user_task_in_fatal_mode_is_a_trap(host: FakeHost) -> None:
    host.alignment_trap("a.out", 4242)
    assert traps(collect(host)) == [Trap(Kind.SPLIT_LOCK, "alignment_check", "a.out", 4242, "0x401136")]


def test_comm_with_slash_space_and_colons_survives_the_log(host: FakeHost) -> None:
    host.split_lock("CJobMgr::m_Work", 77)
    host.split_lock("a/b c", 78)
    assert [(t.comm, t.tid) for t in traps(collect(host))] == [("CJobMgr::m_Work", 77), ("a/b c", 78)]


def test_suppressed_lines_of_both_sites_become_suppressed_gaps_with_their_count(host: FakeHost) -> None:
    first = host.suppressed(12, "split_lock_warn")
    second = host.suppressed(3, "handle_bus_lock")

    assert collect(host).gaps == (
        Gap(Source.KMSG, first, first, 12, GapReason.SUPPRESSED),
        Gap(Source.KMSG, second, second, 3, GapReason.SUPPRESSED),
    )


def test_record_with_facility_1_is_counted_as_forged_and_not_a_trap(host: FakeHost) -> None:
    real = host.split_lock("app", 10)
    forged = host.forged("x86/split lock detection: #AC: victim/11 took a split_lock trap at address: 0x1")
    host.forged("systemd[1]: Started Journal Service.", facility=3)  # not ours: not forged

    result = collect(host)

    assert [t.seq for t in result.traps] == [real]
    assert result.forged == 1
    assert result.gaps == (Gap(Source.KMSG, forged, forged, 1, GapReason.FORGED),)


def test_forged_suppressed_and_boot_lines_are_forged_too(host: FakeHost) -> None:
    host.forged("split_lock_warn: 100000 callbacks suppressed")
    host.forged("x86/split lock detection: disabled", facility=23)
    result = collect(host)
    assert (result.forged, result.boot_modes, [g.reason for g in result.gaps]) == (
        2,
        (),
        [GapReason.FORGED, GapReason.FORGED],
    )


def test_broken_split_lock_text_written_by_a_process_is_forged_too(host: FakeHost) -> None:
    seq = host.forged("x86/split lock detection: #AC: a/notanumber took a split_lock trap at address: 0x1")
    result = collect(host)
    assert (result.forged, result.traps, result.gaps) == (
        1,
        (),
        (Gap(Source.KMSG, seq, seq, 1, GapReason.FORGED),),
    )


def test_seq_jump_is_an_overrun_gap_of_exactly_the_missing_records(host: FakeHost) -> None:
    host.split_lock("app", 10)
    host.overrun(500)
    after = host.split_lock("app", 11)

    result = collect(host)

    assert result.gaps == (Gap(Source.KMSG, 1, 500, 500, GapReason.OVERRUN),)
    assert [t.seq for t in result.traps] == [0, after] and after == 501


def test_wrapped_ring_while_the_agent_was_away_is_an_overrun_from_the_cursor(host: FakeHost) -> None:
    for tid in range(10):
        host.split_lock("app", tid)
    first = collect(host, max_records=4)
    assert first.cursor.next_seq == 4
    for tid in range(10, 20):
        host.split_lock("app", tid)
    host.wrap(keep=5)  # records 15..19 are all that is left

    second = collect(host, first.cursor)  # a restarted agent with the persisted cursor

    assert second.gaps == (Gap(Source.KMSG, 4, 14, 11, GapReason.OVERRUN),)
    assert [t.trap.tid for t in second.traps] == [15, 16, 17, 18, 19]


def test_wrapped_ring_under_a_running_source_keeps_reading_without_repeats(host: FakeHost) -> None:
    source = KmsgSource(HostRoot.at(host.root))
    for tid in range(5):
        host.split_lock("app", tid)
    first = collect(host, source=source)
    host.split_lock("app", 5)
    host.wrap(keep=3)
    host.split_lock("app", 6)

    second = collect(host, first.cursor, source=source)

    assert [t.trap.tid for t in second.traps] == [5, 6] and second.gaps == ()


def test_restart_with_a_persisted_cursor_neither_rereads_nor_skips(host: FakeHost) -> None:
    for tid in range(3):
        host.split_lock("app", tid)
    first = collect(host)
    for tid in range(3, 6):
        host.split_lock("app", tid)

    second = collect(host, first.cursor)  # a new KmsgSource: the agent restarted

    assert [t.trap.tid for t in first.traps] == [0, 1, 2]
    assert [t.trap.tid for t in second.traps] == [3, 4, 5]
    assert second.gaps == ()


def test_uncommitted_pass_is_read_again_by_the_same_source(host: FakeHost) -> None:
    source = KmsgSource(HostRoot.at(host.root))
    host.split_lock("app", 1)
    first = collect(host, source=source)
    host.split_lock("app", 2)

    again = collect(host, None, source=source)  # the caller never persisted first.cursor

    assert [t.trap.tid for t in first.traps] == [1]
    assert [t.trap.tid for t in again.traps] == [1, 2]


def test_same_source_continues_where_it_stopped(host: FakeHost) -> None:
    source = KmsgSource(HostRoot.at(host.root))
    host.split_lock("app", 1)
    first = collect(host, source=source)
    host.split_lock("app", 2)
    assert [t.trap.tid for t in collect(host, first.cursor, source=source).traps] == [2]
    assert collect(host, KmsgCursor(host.boot_id, 2), source=source).records_read == 0


def test_reboot_starts_the_new_boot_at_its_first_record(host: FakeHost) -> None:
    source = KmsgSource(HostRoot.at(host.root))
    for tid in range(4):
        host.split_lock("app", tid)
    before = collect(host, source=source)
    host.reboot()
    host.split_lock("app", 100)

    after = collect(host, before.cursor, source=source)

    assert [(t.seq, t.trap.tid) for t in after.traps] == [(0, 100)]
    assert after.cursor == KmsgCursor(host.boot_id, 1) and after.gaps == ()
    assert after.traps[0].time.date() == (datetime(2025, 11, 25, tzinfo=UTC)).date()


def test_new_boot_whose_first_records_are_gone_reports_them_as_overrun(host: FakeHost) -> None:
    old = KmsgCursor("previous-boot", 999)
    host.overrun(7)
    host.split_lock("app", 1)
    assert collect(host, old).gaps == (Gap(Source.KMSG, 0, 6, 7, GapReason.OVERRUN),)


def test_first_run_does_not_count_history_before_the_oldest_record_as_lost(host: FakeHost) -> None:
    host.overrun(1000)
    host.split_lock("app", 1)
    assert collect(host).gaps == ()


def test_continuation_lines_belong_to_their_record(host: FakeHost) -> None:
    host.kmsg("usb 1-1: new device", level=6, continuation=["SUBSYSTEM=usb", "DEVICE=c189:1"])
    seq = host.split_lock("app", 5)
    result = collect(host)
    assert result.records_read == 2 and [t.seq for t in result.traps] == [seq]


def test_partial_last_line_waits_for_the_writer(host: FakeHost) -> None:
    host.split_lock("app", 1)
    with open(host.root / "dev/kmsg", "a") as f:
        f.write("4,1,5000,-;x86/split lock detection: #AC: app/2 took a split")
    source = KmsgSource(HostRoot.at(host.root))
    first = collect(host, source=source)
    with open(host.root / "dev/kmsg", "a") as f:
        f.write("_lock trap at address: 0x1\n")

    second = collect(host, first.cursor, source=source)

    assert [t.trap.tid for t in first.traps] == [1]
    assert [t.trap.tid for t in second.traps] == [2]


def test_100k_records_are_read_in_passes_bounded_by_max_records(host: FakeHost) -> None:
    lines = "".join(
        f"4,{seq},{seq * 10},-;x86/split lock detection: #AC: app/{seq % 4_000_000} took a split_lock trap"
        f" at address: 0x{seq:x}\n"
        for seq in range(100_000)
    )
    (host.root / "dev/kmsg").write_text(lines)
    source = KmsgSource(HostRoot.at(host.root))

    first = collect(host, source=source, max_records=60_000)
    second = collect(host, first.cursor, source=source, max_records=60_000)

    assert (first.records_read, len(first.traps), first.cursor.next_seq) == (60_000, 60_000, 60_000)
    assert (second.records_read, second.traps[0].seq, second.cursor.next_seq) == (40_000, 60_000, 100_000)
    assert first.gaps == second.gaps == ()


def test_hostile_lines_are_skipped_without_crashing(host: FakeHost) -> None:
    with open(host.root / "dev/kmsg", "ab") as f:
        f.write(b"garbage without header\n")
        f.write(b"4,0,1,-;\xff\xfe invalid utf-8 \x00 nul\n")
        f.write(b"4,1,2,-;" + b"A" * 100_000 + b"\n")
        f.write(
            b"4,2,3,-;x86/split lock detection: #AC: app/notanumber took a split_lock trap at address: 0x1\n"
        )
        f.write(b"4,3,4,-;x86/split lock detection: #AC: app/5 took a split_lock trap at address: 0xnothex\n")
        f.write(b"4,4,5,-;x86/split lock detection: #AC: ok/6 took a split_lock trap at address: 0x1\n")

    result = collect(host)

    assert result.status == "ok"
    assert traps(result) == [Trap(Kind.SPLIT_LOCK, "took", "ok", 6, "0x1")]
    assert result.cursor.next_seq == 5


def test_a_runaway_line_of_5_mib_is_skipped_and_reading_goes_on(host: FakeHost) -> None:
    host.split_lock("before", 1)
    with open(host.root / "dev/kmsg", "ab") as f:
        f.write(b"4,1,2,-;" + b"x" * (5 << 20) + b"\n")
    host.split_lock("after", 2)

    result = collect(host)

    assert [t.comm for t in traps(result)] == ["before", "after"]
    assert result.cursor.next_seq == 2


def test_missing_dev_kmsg_is_absent(host: FakeHost) -> None:
    (host.root / "dev/kmsg").unlink()
    result = collect(host, KmsgCursor(host.boot_id, 3))
    assert (result.status, result.cursor, result.traps) == ("absent", KmsgCursor(host.boot_id, 3), ())
    assert result.error is not None and "dev/kmsg" in result.error


def test_unreadable_dev_kmsg_is_denied_with_the_remedy(host: FakeHost) -> None:
    (host.root / "dev/kmsg").chmod(0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: an unprivileged agent (root would read a mode-000 file anyway)
        code = 1
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            r = KmsgSource(HostRoot.at(host.root)).collect(None, boot_id="b", btime=0)
            os.write(write_end, f"{r.status}\n{r.error}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        status, error = f.read().split("\n", 1)
    os.waitpid(pid, 0)

    assert status == "denied"
    assert "permission denied" in error and "CAP_SYSLOG" in error


def test_this_machines_real_dev_kmsg_reads_without_crashing_and_holds_no_trap() -> None:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    btime = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    source = KmsgSource(HostRoot.at("/"))
    try:
        first = source.collect(None, boot_id=boot_id, btime=btime)
        again = source.collect(first.cursor, boot_id=boot_id, btime=btime)
    finally:
        source.close()

    assert first.status in ("ok", "denied")
    assert first.traps == () and first.forged == 0  # an AMD guest: no split-lock detection
    if first.status == "ok":
        assert first.records_read > 0 and again.status == "ok"
        assert again.cursor.next_seq >= first.cursor.next_seq
        assert again.records_read == again.cursor.next_seq - first.cursor.next_seq
