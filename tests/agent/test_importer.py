"""import_lines / payloads: kernel log text into schema-1 events with source `import`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.importer import ImportOptions, ImportResult, import_lines, payloads, read_lines, stable_seq
from agent.payload import Action, Gap, GapReason, Kind, Mode, Source

SAMPLES = Path(__file__).parents[1] / "samples"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
P = "x86/split lock detection: "


def run(*names: str, now: datetime = NOW, **options: object) -> ImportResult:
    return import_lines(read_lines([SAMPLES / n for n in names]), ImportOptions(**options), now=now)  # type: ignore[arg-type]


def run_text(text: str, **options: object) -> ImportResult:
    lines = [(f"test:{n}", line) for n, line in enumerate(text.splitlines(keepends=True), start=1)]
    return import_lines(lines, ImportOptions(**options), now=NOW)  # type: ignore[arg-type]


def test_dmesg_with_btime_dates_each_line_as_boot_time_plus_uptime() -> None:
    result = run("6.x-dmesg.txt", host="gamer", btime=1_760_000_000)

    events = result.events["gamer"]
    assert len(events) == 10 and result.undated == 0
    assert events[0].time == datetime.fromtimestamp(1_760_000_000, UTC) + timedelta(microseconds=688_792_264)
    assert (events[0].comm, events[0].tid, events[0].address) == ("osu!.exe", 11382, "0x7aa6806d")
    assert all(e.source is Source.IMPORT and e.count == 1 and e.guest is None for e in events)
    assert result.gaps["gamer"] == [
        Gap(
            Source.IMPORT,
            result.gaps["gamer"][0].first_seq,
            result.gaps["gamer"][0].first_seq,
            1,
            GapReason.SUPPRESSED,
        )
    ]


def test_dmesg_without_a_boot_time_is_reported_undated_with_the_remedy() -> None:
    result = run("6.x-dmesg.txt", host="gamer")

    assert result.event_count == 0 and result.undated == 11
    assert "undated" in result.summary() and "--btime" in result.summary()
    assert "tests/samples/6.x-dmesg.txt:1" in result.notes[0] or "6.x-dmesg.txt:1:" in result.notes[0]


def test_journalctl_short_takes_host_from_the_line_and_the_year_given() -> None:
    result = run("5.13-journalctl-short.txt", year=2021)

    events = result.events["___"]
    assert [e.tid for e in events] == [32423, 32402, 32423, 32423]
    assert {e.time for e in events} == {datetime(2021, 11, 11, 3, 49, 25, tzinfo=UTC)}
    assert len({e.seq for e in events}) == 4  # repeats at one second are separate sightings
    assert events[0].comm == "CJobMgr::m_Work"


def test_syslog_without_a_year_is_this_year_or_last_if_that_would_be_the_future() -> None:
    past = run_text("Apr 15 09:20:19 h kernel: " + P + "#AC: a/1 took a split_lock trap at address: 0x1\n")
    future = run_text("Dec 24 09:20:19 h kernel: " + P + "#AC: a/1 took a split_lock trap at address: 0x1\n")
    assert past.events["h"][0].time.year == 2026
    assert future.events["h"][0].time.year == 2025
    assert "year assumed" in future.summary()


def test_proxmox_vcpu_line_keeps_comm_and_has_no_guest() -> None:
    event = run("5.19+-journalctl-short-proxmox.txt", year=2025).events["myhost"][0]
    assert (event.comm, event.tid, event.address, event.guest) == ("CPU 0/KVM", 5677, "0x56339a9888c3", None)


def test_syslog_caller_id_and_rfc3339_samples_are_dated_exactly() -> None:
    caller = run("6.x-syslog-caller-id.txt", year=2025).events["diamond"][0]
    rfc = run("6.17-syslog-rfc3339.txt").events["calypso"][0]
    assert (caller.comm, caller.tid, caller.time) == (
        "CPU 1/KVM",
        175479,
        datetime(2025, 4, 13, 12, 28, 25, tzinfo=UTC),
    )
    assert (rfc.comm, rfc.time) == ("dosemu2.bin", datetime(2026, 6, 13, 14, 27, 19, 694458, tzinfo=UTC))


def test_dmesg_h_deltas_follow_the_minute_line_before_them() -> None:
    events = run("5.15-dmesg-H-minute-constructed.txt", host="h", year=2025).events["h"]
    start = datetime(2025, 3, 24, 10, 2, tzinfo=UTC)
    assert [e.time - start for e in events] == [timedelta(microseconds=us) for us in (0, 118315, 123517)]
    assert all(e.kind is Kind.BUS_LOCK for e in events)


def test_dmesg_h_deltas_of_other_messages_move_the_clock_too() -> None:
    text = (
        "kern  :info  : [Mar24 10:02] usb 1-1: new high-speed USB device\n"
        "kern  :info  : [  +2.500000] usb 1-1: New USB device found\n"
        "user  :notice: [  +0.250000] systemd[1]: Started Session 5\n"
        "kern  :warn  : [  +0.000100] " + P + "#DB: remake/737636 took a bus_lock trap at address: 0x1\n"
    )
    event = run_text(text, host="h", year=2025).events["h"][0]
    assert event.time == datetime(2025, 3, 24, 10, 2, 2, 750100, tzinfo=UTC)


def test_dmesg_h_deltas_with_no_dated_line_before_are_undated() -> None:
    result = run("5.15-dmesg-H-comma.txt", host="h")
    assert result.event_count == 0 and result.undated == 8
    assert "dmesg -H" in result.notes[0]


def test_dmesg_t_lines_are_dated_by_themselves() -> None:
    result = run("6.x-dmesg-T-constructed.txt", host="h")
    assert result.events["h"][0].time == datetime(2025, 10, 12, 20, 14, 5, tzinfo=UTC)
    assert [g.reason for g in result.gaps["h"]] == [GapReason.SUPPRESSED]


def test_lines_without_any_timestamp_are_counted_not_dropped() -> None:
    result = run("6.x-dmesg-no-timestamp.txt", host="h")
    assert (result.event_count, result.undated) == (0, 3)
    assert "undated lines: 3" in result.summary()


def test_boot_time_is_learned_from_a_line_that_carries_wall_time_and_uptime() -> None:
    text = (
        "Mar 26 11:13:52 calypso kernel: [   10.000000] usb 1-1: new device\n"
        "[  70.500000] " + P + "#AC: a/1 took a split_lock trap at address: 0x1\n"
    )
    result = run_text(text, host="calypso", year=2023)
    assert result.events["calypso"][0].time == datetime(2023, 3, 26, 11, 14, 52, 500000, tzinfo=UTC)
    assert result.btime_used == int(datetime(2023, 3, 26, 11, 13, 42, tzinfo=UTC).timestamp())


def test_kmsg_dump_of_5_10_gives_boot_mode_suppressed_forged_and_alignment_trap() -> None:
    result = run("5.10-kmsg-constructed.txt", host="h", btime=1_600_000_000)

    assert [(e.comm, e.action) for e in result.events["h"]] == [
        ("CHTTPClientThre", Action.UNKNOWN),
        ("CJobMgr::m_Work", Action.UNKNOWN),
    ]
    # `trap alignment check` proves neither a split lock nor fatal mode: counted, not sent.
    assert result.alignment_checks == 1
    fatal = run("5.10-kmsg-constructed.txt", host="h", btime=1_600_000_000, mode=Mode.FATAL)
    assert ("a.out", Action.SIGBUS) in [(e.comm, e.action) for e in fatal.events["h"]]
    assert [(g.reason, g.count) for g in result.gaps["h"]] == [
        (GapReason.SUPPRESSED, 38),
        (GapReason.FORGED, 1),
    ]
    assert result.forged == 1
    assert result.boot_modes == [P + "warning about user-space split_locks"]


@pytest.mark.parametrize(
    ("options", "action"),
    [
        pytest.param(
            {"mode": Mode.WARN, "mitigate": 1, "kernel": "6.8.0-49-generic"},
            Action.THROTTLE,
            id="warn-mitigate-6.8-throttle",
        ),
        pytest.param({"mode": Mode.WARN, "mitigate": 0, "kernel": "6.8"}, Action.WARN, id="warn-mitigate-0"),
        pytest.param({"mode": Mode.WARN, "kernel": "5.10"}, Action.WARN, id="warn-5.10"),
        pytest.param({"mode": Mode.WARN}, Action.UNKNOWN, id="warn-without-kernel-unknown"),
        pytest.param({}, Action.UNKNOWN, id="no-mode-unknown"),
    ],
)
def test_action_of_a_took_line_follows_the_mode_given(options: dict[str, object], action: Action) -> None:
    result = run_text(
        "[ 1.0] " + P + "#AC: a/1 took a split_lock trap at address: 0x1\n", host="h", btime=0, **options
    )
    assert result.events["h"][0].action is action


def test_fatal_and_bogus_guest_lines_are_sigbus_without_a_mode() -> None:
    text = (
        "[ 1.0] " + P + "#AC: CPU 0/KVM/7 fatal split_lock trap at address: 0xffffffff81000000\n"
        "[ 2.0] " + P + "#AC: CPU 1/KVM/8 bogus split_lock trap at address: 0x1\n"
    )
    assert [e.action for e in run_text(text, host="h", btime=0).events["h"]] == [Action.SIGBUS] * 2


def test_ratelimit_mode_bus_lock_is_ratelimit() -> None:
    text = "[ 1.0] " + P + "#DB: a/1 took a bus_lock trap at address: 0x1\n"
    result = run_text(text, host="h", btime=0, mode=Mode.RATELIMIT, kernel="6.1")
    assert result.events["h"][0].action is Action.RATELIMIT


def test_importing_the_same_file_twice_gives_the_same_seqs() -> None:
    first = run("5.13-dmesg.txt", host="h", btime=1_630_000_000)
    second = run("5.13-dmesg.txt", host="h", btime=1_630_000_000)
    assert [e.seq for e in first.events["h"]] == [e.seq for e in second.events["h"]]
    assert all(0 <= e.seq < 2**63 for e in first.events["h"])


def test_overlapping_rotated_files_in_one_import_store_each_line_once(tmp_path: Path) -> None:
    lines = (SAMPLES / "6.x-dmesg.txt").read_text().splitlines(keepends=True)
    (tmp_path / "dmesg.1").write_text("".join(lines[:6]))
    (tmp_path / "dmesg").write_text("".join(lines[4:]))  # lines 5 and 6 are in both

    result = import_lines(
        read_lines([tmp_path / "dmesg.1", tmp_path / "dmesg"]), ImportOptions(host="h", btime=0), now=NOW
    )

    assert (result.event_count, result.duplicates) == (10, 2)


def test_seq_depends_on_host_text_and_time() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    base = stable_seq("h", "x  y", t)
    assert base == stable_seq("h", "x y", t)  # whitespace normalised
    assert (
        len(
            {
                base,
                stable_seq("g", "x y", t),
                stable_seq("h", "x z", t),
                stable_seq("h", "x y", t.replace(second=1)),
                stable_seq("h", "x y", t, 1),
            }
        )
        == 5
    )


def test_dmesg_without_host_asks_for_host() -> None:
    with pytest.raises(ConfigError, match="--host"):
        run("6.x-dmesg.txt", btime=0)


def test_unparsable_split_lock_lines_are_counted_and_named() -> None:
    text = "[ 1.0] " + P + "#AC: a/notanumber took a split_lock trap at address: 0x1\n"
    result = run_text(text, host="h", btime=0)
    assert (result.event_count, result.unparsable) == (0, 1)
    assert "unparsable test:1" in result.notes[0] and "TID" in result.notes[0]


def test_split_lock_text_from_another_program_is_a_forged_gap() -> None:
    text = "Apr 15 09:20:19 h evil[6]: " + P + "#AC: a/1 took a split_lock trap at address: 0x1\n"
    result = run_text(text)
    assert result.event_count == 0 and result.forged == 1
    assert [g.reason for g in result.gaps["h"]] == [GapReason.FORGED]


def test_hostile_file_does_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "hostile.log"
    path.write_bytes(
        b"\x00\xff\xfe garbage\n"
        + b"[ 1.0] "
        + b"A" * 200_000
        + b"\n"
        + b"[ 2.0] x86/split lock detection: #AC: a\x00b/1 took a split_lock trap at address: 0x1\n"
        + b"[ 3.0] x86/split lock detection: #AC: ok\xff/2 took a split_lock trap at address: 0x1\n"
    )
    result = import_lines(read_lines([path]), ImportOptions(host="h", btime=0), now=NOW)
    assert [e.comm for e in result.events["h"]] == ["ok\ufffd"]
    assert (result.lines_read, result.unparsable) == (4, 1)


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.log"):
        list(read_lines([tmp_path / "nope.log"]))


def test_payloads_are_batches_of_at_most_1000_events_with_no_state() -> None:
    text = "".join(
        f"[ {n}.000000] {P}#AC: app/{n + 1} took a split_lock trap at address: 0x{n:x}\n" for n in range(2500)
    )
    result = run_text(text, host="h", btime=1_700_000_000, boot_id="b-1", kernel="6.8")

    batches = payloads(result)

    assert [len(b.events) for b in batches] == [1000, 1000, 500]
    body = json.loads(batches[0].to_json())
    assert body["schema"] == 1 and body["state"] is None
    assert (body["host"]["name"], body["host"]["boot_id"], body["host"]["kernel"]) == ("h", "b-1", "6.8")
    assert body["events"][0]["source"] == "import" and body["events"][0]["guest"] is None


def test_one_payload_series_per_host_of_a_central_syslog() -> None:
    text = (
        "Apr 15 09:20:19 a kernel: " + P + "#AC: x/1 took a split_lock trap at address: 0x1\n"
        "Apr 15 09:20:20 b kernel: " + P + "#AC: y/2 took a split_lock trap at address: 0x1\n"
    )
    assert [p.host.name for p in payloads(run_text(text))] == ["a", "b"]
