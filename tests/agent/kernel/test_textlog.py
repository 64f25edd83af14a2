"""parse_line: every timestamp style people keep kernel logs in, read per line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.kernel.kmsg import parse_record
from agent.kernel.splitlock import Trap, parse_message
from agent.kernel.textlog import LogLine, parse_line

SAMPLES = Path(__file__).parents[2] / "samples"
P = "x86/split lock detection: "
OSU = P + "#AC: osu!.exe/11382 took a split_lock trap at address: 0x7aa6806d"


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


LINES = [
    pytest.param(
        "[  688.792264] " + OSU + "\n",
        LogLine("dmesg", OSU, uptime_usec=688_792_264),
        id="dmesg",
    ),
    pytest.param(
        "[  520.899558] [   T3919] " + OSU,
        LogLine("dmesg", OSU, uptime_usec=520_899_558),
        id="dmesg-caller-id-util-linux",
    ),
    pytest.param(
        "[  520.899558][T175479] " + OSU,
        LogLine("dmesg", OSU, uptime_usec=520_899_558),
        id="console-caller-id-no-space",
    ),
    pytest.param(
        "kern  :warn  : [  688.792264] " + OSU,
        LogLine("dmesg", OSU, uptime_usec=688_792_264),
        id="dmesg-x-decoded-facility",
    ),
    pytest.param(
        "user  :warn  : [  688.792264] " + OSU,
        LogLine("dmesg", OSU, uptime_usec=688_792_264, from_kernel=False),
        id="dmesg-x-user-facility-is-not-the-kernel",
    ),
    pytest.param(
        "<4>[  688.792264] " + OSU,
        LogLine("dmesg", OSU, uptime_usec=688_792_264),
        id="dmesg-r-raw-prio",
    ),
    pytest.param(
        "<12>[  688.792264] " + OSU,
        LogLine("dmesg", OSU, uptime_usec=688_792_264, from_kernel=False),
        id="dmesg-r-facility-1",
    ),
    pytest.param(
        "[  688.792264 <    0.000610>] " + OSU,
        LogLine("dmesg", OSU, uptime_usec=688_792_264),
        id="dmesg-d-with-delta",
    ),
    pytest.param(
        "[ +19,619040] " + OSU,
        LogLine("dmesg-delta", OSU, delta_usec=19_619_040),
        id="dmesg-H-delta-decimal-comma",
    ),
    pytest.param(
        "[  +0.118315] " + OSU,
        LogLine("dmesg-delta", OSU, delta_usec=118_315),
        id="dmesg-H-delta",
    ),
    pytest.param(
        "[Feb13 14:43] " + OSU,
        LogLine("dmesg-minute", OSU, at=at(2026, 2, 13, 14, 43), minute_only=True),
        id="dmesg-H-minute",
    ),
    pytest.param(
        "[Thu Feb 13 14:43:12 2025] " + OSU,
        LogLine("dmesg-ctime", OSU, at=at(2025, 2, 13, 14, 43, 12)),
        id="dmesg-T-carries-its-year",
    ),
    pytest.param(
        "[Sun Oct  5 08:01:02 2025] " + OSU,
        LogLine("dmesg-ctime", OSU, at=at(2025, 10, 5, 8, 1, 2)),
        id="dmesg-T-space-padded-day",
    ),
    pytest.param(
        "Apr 15 09:20:19 myhost kernel: " + OSU,
        LogLine("syslog", OSU, at=at(2026, 4, 15, 9, 20, 19), host="myhost"),
        id="journalctl-short",
    ),
    pytest.param(
        "Apr  5 09:20:19.123456 myhost kernel: " + OSU,
        LogLine("syslog", OSU, at=at(2026, 4, 5, 9, 20, 19, 123456), host="myhost"),
        id="journalctl-short-precise",
    ),
    pytest.param(
        "Mar 26 11:13:52 calypso kernel: [    0.000000] " + OSU,
        LogLine("syslog", OSU, at=at(2026, 3, 26, 11, 13, 52), uptime_usec=0, host="calypso"),
        id="syslog-with-kernel-uptime",
    ),
    pytest.param(
        "Apr 13 12:28:25 diamond kernel: [T175479] " + OSU,
        LogLine("syslog", OSU, at=at(2026, 4, 13, 12, 28, 25), host="diamond"),
        id="syslog-with-caller-id",
    ),
    pytest.param(
        "Apr 15 09:20:19 myhost evil[666]: " + OSU,
        LogLine("syslog", OSU, at=at(2026, 4, 15, 9, 20, 19), host="myhost", from_kernel=False),
        id="syslog-other-program-is-not-the-kernel",
    ),
    pytest.param(
        "2026-06-13T15:27:19.694458+01:00 calypso kernel: " + OSU,
        LogLine("iso", OSU, at=at(2026, 6, 13, 14, 27, 19, 694458), host="calypso"),
        id="rfc3339-syslog",
    ),
    pytest.param(
        "2026-04-15T09:20:19+0200 myhost kernel: " + OSU,
        LogLine("iso", OSU, at=at(2026, 4, 15, 7, 20, 19), host="myhost"),
        id="journalctl-short-iso",
    ),
    pytest.param(
        "2026-04-15T09:20:19.5Z myhost kernel: " + OSU,
        LogLine("iso", OSU, at=at(2026, 4, 15, 9, 20, 19, 500000), host="myhost"),
        id="rfc3339-zulu",
    ),
    pytest.param(
        "2025-02-13T14:43:12,123456+01:00 " + OSU,
        LogLine("iso", OSU, at=at(2025, 2, 13, 13, 43, 12, 123456)),
        id="dmesg-time-format-iso-no-host",
    ),
    pytest.param(
        "[  688.792264] myhost kernel: " + OSU,
        LogLine("journal-mono", OSU, uptime_usec=688_792_264, host="myhost"),
        id="journalctl-short-monotonic",
    ),
    pytest.param(
        "1713165619.123456 myhost kernel: " + OSU,
        LogLine("unix", OSU, at=at(2024, 4, 15, 7, 20, 19, 123456), host="myhost"),
        id="journalctl-short-unix",
    ),
    pytest.param(
        "<4>1 2026-04-15T09:20:19.123Z myhost kernel - - - " + OSU,
        LogLine("rfc5424", OSU, at=at(2026, 4, 15, 9, 20, 19, 123000), host="myhost"),
        id="rfc5424",
    ),
    pytest.param(
        "4,1842,688792264,-;" + OSU,
        LogLine("kmsg", OSU, uptime_usec=688_792_264, kmsg_seq=1842),
        id="kmsg-record",
    ),
    pytest.param(
        "12,1843,688792265,-;" + OSU,
        LogLine("kmsg", OSU, uptime_usec=688_792_265, from_kernel=False, kmsg_seq=1843),
        id="kmsg-record-facility-1",
    ),
    pytest.param(OSU, LogLine("bare", OSU), id="no-timestamp"),
    pytest.param(
        "Feb 30 09:20:19 myhost kernel: " + OSU,
        LogLine("syslog", OSU, at=None, host="myhost"),
        id="impossible-date-has-no-time",
    ),
    pytest.param("", LogLine("bare", ""), id="empty"),
]


@pytest.mark.parametrize(("text", "expected"), LINES)
def test_line_style_time_and_message_are_recognised(text: str, expected: LogLine) -> None:
    assert parse_line(text, year=2026) == expected


def test_local_times_are_read_in_the_given_zone() -> None:
    berlin = parse_line("Apr 15 09:20:19 h kernel: x", year=2026, tz=ZoneInfo("Europe/Berlin"))
    offset = parse_line("[Thu Feb 13 14:43:12 2025] x", year=2026, tz=timezone(timedelta(hours=-5)))
    assert berlin.at == at(2026, 4, 15, 7, 20, 19)  # CEST
    assert offset.at == at(2025, 2, 13, 19, 43, 12)


def test_an_explicit_offset_wins_over_the_given_zone() -> None:
    line = parse_line("2026-04-15T09:20:19+02:00 h kernel: x", year=2026, tz=ZoneInfo("America/New_York"))
    assert line.at == at(2026, 4, 15, 7, 20, 19)


SAMPLE_FILES = sorted(p.name for p in SAMPLES.glob("*.txt"))


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_every_split_lock_line_of_every_sample_is_recognised(name: str) -> None:
    for text in (SAMPLES / name).read_text().splitlines():
        line = parse_line(text, year=2025)
        message = parse_message(line.message)
        if "split lock detection" in text or "callbacks suppressed" in text or "trap alignment" in text:
            assert message is not None, text
        if isinstance(message, Trap):
            assert message.tid > 0 and message.address is not None and message.address.startswith("0x")


def test_real_kmsg_records_of_a_6_18_kernel_parse_and_hold_nothing_of_ours() -> None:
    raw = (SAMPLES / "6.18-kmsg-records.txt").read_bytes()
    lines = raw.decode().splitlines(keepends=True)
    grouped: list[str] = []
    for line in lines:
        if line.startswith(" "):
            grouped[-1] += line
        else:
            grouped.append(line)
    parsed = [parse_record(r) for r in grouped]
    assert len(parsed) == 19
    assert [r.seq for r in parsed] == [*range(3, 19), 190, 191, 192]
    assert parsed[-1].continuation == ("SUBSYSTEM=acpi", "DEVICE=+acpi:PNP0A08:00")
    assert all(parse_message(r.text) is None for r in parsed)


def test_a_very_long_line_is_cut_and_not_ours() -> None:
    line = parse_line("[  1.000000] " + "A" * 1_000_000, year=2026)
    assert line.style == "dmesg" and parse_message(line.message) is None


@given(st.text(max_size=300), st.integers(1970, 2100))
def test_parse_line_never_raises(text: str, year: int) -> None:
    parse_line(text, year=year)


@given(
    st.sampled_from(
        [
            "[  1.5] ",
            "[ +0,1] ",
            "[Feb13 14:43] ",
            "Apr 15 09:20:19 h kernel: ",
            "4,1,2,-;",
            "2026-04-15T09:20:19+02:00 h kernel: ",
            "<4>",
            "kern  :warn  : ",
            "1713165619.1 h kernel: ",
        ]
    ),
    st.text(max_size=100),
)
def test_near_miss_lines_never_raise(prefix: str, rest: str) -> None:
    parse_line(prefix + rest, year=2026)
