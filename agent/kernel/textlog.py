"""Kernel log lines as people keep them: one line of text in, its time fields and message out. Pure.

Every style is recognised per line, so a file may mix them. What each carries:

| style          | example                                                          | time it carries |
|----------------|------------------------------------------------------------------|-----------------|
| kmsg           | `4,1842,688792264,-;x86/split lock detection: ...`               | uptime (USEC)   |
| dmesg          | `[  688.792264] ...`, `[  688.792264] [T175479] ...`,            | uptime          |
|                | `kern  :warn  : [  688.792264] ...` (-x), `<4>[  688.79] ...` (-r)|                 |
| dmesg-delta    | `[  +0.118315] ...`, `[ +0,118315] ...` (-H; a decimal comma in  | since the line  |
|                | locales that write one)                                          | before          |
| dmesg-minute   | `[Feb13 14:43] ...` (-H, first line of a minute)                 | local, minute   |
| dmesg-ctime    | `[Thu Feb 13 14:43:12 2025] ...` (-T)                            | local           |
| iso            | `2026-04-15T09:20:19.123456+02:00 host kernel: ...` (RFC 3339    | absolute        |
|                | syslog, journalctl -o short-iso[-precise]), or with no host and  |                 |
|                | tag: dmesg --time-format=iso `2025-02-13T14:43:12,123456+01:00`  |                 |
| syslog         | `Apr 15 09:20:19 host kernel: ...` (journalctl short, BSD syslog;| local, no year  |
|                | `.123456` with -o short-precise)                                 |                 |
| journal-mono   | `[  688.792264] host kernel: ...` (journalctl -o short-monotonic) | uptime          |
| unix           | `1713165619.123456 host kernel: ...` (journalctl -o short-unix)  | absolute        |
| rfc5424        | `<4>1 2026-04-15T09:20:19.123Z host kernel - - - ...`            | absolute        |
| bare           | anything else (dmesg -t): the whole line is the message          | none            |

A syslog/journal kernel line may hold the kernel's own `[  688.792264]` too (rsyslog's imklog
before v8): then it carries both, which is how an importer learns the boot time. Local times are
read in the `tz` the caller gives, and the year of a syslog line is the `year` it gives.

`from_kernel` is False for a line another program wrote (syslog tag other than `kernel`, a dmesg -x
facility other than `kern`, a kmsg facility >= 1): such a line is never the kernel's.

Guarantee: parse_line never raises for any text; a line whose time is unreadable (Feb 30, hour
25) comes back with that time None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Literal

from agent.errors import ParseError
from agent.kernel.kmsg import parse_record
from agent.kernel.splitlock import parse_message

Style = Literal[
    "kmsg",
    "dmesg",
    "dmesg-delta",
    "dmesg-minute",
    "dmesg-ctime",
    "iso",
    "syslog",
    "journal-mono",
    "unix",
    "rfc5424",
    "bare",
]

# Longer lines are no kernel message (LOG_LINE_MAX is 1024 - 32 bytes); we keep their first part
# only, so a hostile file costs linear time.
MAX_LINE_CHARS = 4096

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}
_MONTH = "(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)
_LEVELS = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"]

_KMSG = re.compile(r"[0-9]{1,10},[0-9]{1,20},[0-9]{1,20},[^,;]+(?:,[^;]*)?;")
_RAW_PRIO = re.compile(r"<(?P<prio>[0-9]{1,4})>")
_DECODED_PRIO = re.compile(r"(?P<fac>[a-z0-9]+) *:(?P<lvl>[a-z]+) *: ")
_UPTIME = re.compile(r"\[ *(?P<s>[0-9]{1,10})[.,](?P<f>[0-9]{1,9})(?: *<[ 0-9.,]*>)?\] ?")
_CALLER = re.compile(r"\[ *[TC][0-9]{1,10}\] ?")
_DELTA = re.compile(r"\[ *\+ *(?P<s>[0-9]{1,10})[.,](?P<f>[0-9]{1,9})\] ?")
_MINUTE = re.compile(r"\[" + _MONTH + r" ?(?P<day>[0-9]{1,2}) (?P<h>[0-9]{2}):(?P<m>[0-9]{2})\] ?")
_CTIME = re.compile(
    r"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) " + _MONTH + r" +(?P<day>[0-9]{1,2}) "
    r"(?P<h>[0-9]{2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2}) (?P<y>[0-9]{4})\] ?"
)
_ISO = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})[T ](?P<h>[0-9]{2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})"
    r"(?:[.,](?P<f>[0-9]{1,9}))?(?P<tz>Z|[+-][0-9]{2}:?[0-9]{2})? "
)
_SYSLOG = re.compile(
    _MONTH + r" +(?P<day>[0-9]{1,2}) (?P<h>[0-9]{2}):(?P<m>[0-9]{2}):(?P<s>[0-9]{2})"
    r"(?:[.,](?P<f>[0-9]{1,9}))? "
)
_UNIX = re.compile(r"(?P<s>[0-9]{9,11})[.,](?P<f>[0-9]{1,9}) ")
_RFC5424 = re.compile(
    r"<(?P<prio>[0-9]{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) \S+ \S+ (?:-|(?:\[[^\]]*\])+) ?"
)
_HOST_TAG = re.compile(r"(?P<host>\S+) (?P<tag>[^\s:\[]+)(?:\[[0-9]+\])?: ")


@dataclass(frozen=True)
class LogLine:
    style: Style
    message: str
    at: datetime | None = None  # absolute time the line carries (UTC)
    uptime_usec: int | None = None  # time since boot it carries
    delta_usec: int | None = None  # dmesg -H: time since the line before
    minute_only: bool = False  # dmesg -H `[Feb13 14:43]`: `at` is the start of that minute
    host: str | None = None  # syslog/journal host field
    from_kernel: bool = True
    kmsg_seq: int | None = None


def parse_line(line: str, *, year: int, tz: tzinfo = timezone.utc) -> LogLine:
    """One line of a kernel log, its trailing newline allowed."""
    line = line[:MAX_LINE_CHARS].rstrip("\r\n")
    if _KMSG.match(line):
        try:
            record = parse_record(line)
        except ParseError:
            return LogLine("bare", line)
        return LogLine(
            "kmsg",
            record.text,
            uptime_usec=record.usec,
            from_kernel=record.is_kernel,
            kmsg_seq=record.seq,
        )
    if (m := _RFC5424.match(line)) is not None:
        at = _iso_time(m["ts"] + " ", tz)
        kernel = int(m["prio"]) >> 3 == 0 and m["app"] == "kernel"
        return _with_kernel_stamp(
            LogLine("rfc5424", line[m.end() :], at=at, host=m["host"], from_kernel=kernel)
        )
    from_kernel = True
    if (m := _RAW_PRIO.match(line)) is not None:
        from_kernel = int(m["prio"]) >> 3 == 0
        line = line[m.end() :]
    elif (m := _DECODED_PRIO.match(line)) is not None and m["fac"] in _FACILITIES and m["lvl"] in _LEVELS:
        from_kernel = m["fac"] == "kern"
        line = line[m.end() :]
    if (m := _UPTIME.match(line)) is not None:
        uptime = _usec(m["s"], m["f"])
        rest = line[m.end() :]
        if (c := _CALLER.match(rest)) is not None:
            rest = rest[c.end() :]
        host, kernel, rest = _host_tag(rest)
        style: Style = "journal-mono" if host is not None else "dmesg"
        return LogLine(style, rest, uptime_usec=uptime, host=host, from_kernel=from_kernel and kernel)
    if (m := _DELTA.match(line)) is not None:
        rest = _strip_caller(line[m.end() :])
        return LogLine("dmesg-delta", rest, delta_usec=_usec(m["s"], m["f"]), from_kernel=from_kernel)
    if (m := _MINUTE.match(line)) is not None:
        at = _local(year, MONTHS[m["mon"]], int(m["day"]), int(m["h"]), int(m["m"]), 0, 0, tz)
        rest = _strip_caller(line[m.end() :])
        return LogLine("dmesg-minute", rest, at=at, minute_only=True, from_kernel=from_kernel)
    if (m := _CTIME.match(line)) is not None:
        at = _local(
            int(m["y"]), MONTHS[m["mon"]], int(m["day"]), int(m["h"]), int(m["m"]), int(m["s"]), 0, tz
        )
        rest = _strip_caller(line[m.end() :])
        return LogLine("dmesg-ctime", rest, at=at, from_kernel=from_kernel)
    if (m := _ISO.match(line)) is not None:
        at = _iso_time(line[: m.end()], tz)
        host, kernel, rest = _host_tag(line[m.end() :])
        return _with_kernel_stamp(LogLine("iso", rest, at=at, host=host, from_kernel=from_kernel and kernel))
    if (m := _SYSLOG.match(line)) is not None:
        micro = _fraction(m["f"]) if m["f"] else 0
        at = _local(year, MONTHS[m["mon"]], int(m["day"]), int(m["h"]), int(m["m"]), int(m["s"]), micro, tz)
        host, kernel, rest = _host_tag(line[m.end() :], required=True)
        if host is None:
            return LogLine("bare", line)
        return _with_kernel_stamp(LogLine("syslog", rest, at=at, host=host, from_kernel=kernel))
    if (m := _UNIX.match(line)) is not None:
        host, kernel, rest = _host_tag(line[m.end() :], required=True)
        if host is not None:
            usec = _usec(m["s"], m["f"])
            at = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=usec)
            return _with_kernel_stamp(LogLine("unix", rest, at=at, host=host, from_kernel=kernel))
    return LogLine("bare", line, from_kernel=from_kernel)


def _host_tag(rest: str, *, required: bool = False) -> tuple[str | None, bool, str]:
    """Split `HOST TAG[PID]: MESSAGE`; (None, True, rest) when the text is the message itself.

    A message that is already one of ours (`x86/split lock detection: ...`) is never taken for
    `HOST TAG:` (dmesg --time-format=iso has no host field), unless the caller says one must be there.
    """
    if not required and _is_ours(rest):
        return None, True, rest
    m = _HOST_TAG.match(rest)
    if m is None:
        return None, True, rest
    return m["host"], m["tag"] == "kernel", rest[m.end() :]


def _is_ours(text: str) -> bool:
    try:
        return parse_message(text) is not None
    except ParseError:
        return True


def _with_kernel_stamp(line: LogLine) -> LogLine:
    """rsyslog (imklog before v8) keeps the kernel's `[uptime]` inside the message, and kernels
    with CONFIG_PRINTK_CALLER a `[T175479]` caller id: the message starts after them."""
    m = _UPTIME.match(line.message)
    rest = _strip_caller(line.message[m.end() :] if m is not None else line.message)
    if m is None and rest == line.message:
        return line
    return LogLine(
        line.style,
        rest,
        at=line.at,
        uptime_usec=_usec(m["s"], m["f"]) if m is not None else None,
        host=line.host,
        from_kernel=line.from_kernel,
    )


def _strip_caller(text: str) -> str:
    m = _CALLER.match(text)
    return text[m.end() :] if m is not None else text


def _fraction(digits: str) -> int:
    return int(digits[:6].ljust(6, "0"))


def _usec(seconds: str, fraction: str) -> int:
    return int(seconds) * 1_000_000 + _fraction(fraction)


def _local(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int, tz: tzinfo
) -> datetime | None:
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None  # Feb 30, hour 25: not a time


def _iso_time(text: str, tz: tzinfo) -> datetime | None:
    m = _ISO.match(text)
    if m is None:
        return None
    offset = m["tz"]
    zone: tzinfo = tz
    if offset == "Z":
        zone = timezone.utc
    elif offset:
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        if minutes >= 24 * 60:
            return None
        zone = timezone(timedelta(minutes=sign * minutes))
    micro = _fraction(m["f"]) if m["f"] else 0
    return _local(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"]), int(m["m"]), int(m["s"]), micro, zone)
