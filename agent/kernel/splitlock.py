"""Split-lock and bus-lock kernel messages: one message text in, a typed fact out. Pure.

The texts, as arch/x86/kernel/cpu/intel.c (and arch/x86/kernel/cpu/bus_lock.c, where 6.13
moved the code) print them, all with pr_fmt `x86/split lock detection: ` (docs/kernel.md
gives the source of each):

Boot mode (pr_info, level 6):
  5.7-5.12  split_lock_setup(): `disabled` | `warning about user-space split_locks` |
            `sending SIGBUS on user-space split_locks` | `MSR access failed: Disabled`
  5.13+     sld_state_show(): `#AC: crashing the kernel on kernel split_locks and warning on
            user-space split_locks` (or `... and sending SIGBUS on user-space split_locks`) |
            `#DB: warning on user-space bus_locks` | `#DB: sending SIGBUS on user-space bus_locks`
            (` from non-WB` is accepted but no released kernel can print it) |
            `#DB: setting system wide bus lock rate limit to N/sec` | `disabled`
            (the newest mainline prints nothing at all for `off`)
Traps (level 4):
  `#AC: COMM/TID took a split_lock trap at address: 0xADDR`   split_lock_warn / handle_user_split_lock
  `#AC: COMM/TID fatal split_lock trap at address: 0xADDR`    handle_guest_split_lock, host fatal
  `#AC: COMM/TID bogus split_lock trap at address: 0xADDR`    handle_guest_split_lock, other modes
  `#DB: COMM/TID took a bus_lock trap at address: 0xADDR`     handle_bus_lock (5.13+)
  `traps: COMM[TID] trap alignment check ip:HEX sp:HEX error:HEX ...` (no prefix): any unhandled
            SIGBUS from #AC (show_signal()): a user split lock in fatal mode, or a task that set
            EFLAGS.AC itself in any mode. It proves neither a split lock nor fatal mode on its own
            (agent/collect.py decides what it is reported as).
Suppressed (no prefix, lib/ratelimit.c ___ratelimit(), named after the function that printed):
  `split_lock_warn: N callbacks suppressed` (split_lock_warn() is the printing site in every
  released kernel since 5.7), `handle_bus_lock: N callbacks suppressed` (5.13+). A
  `handle_user_split_lock: N ...` line never appears in a released kernel; it is accepted (it is
  harmless) but nothing we write produces it.

COMM is at most 15 bytes and may hold `/`, spaces, `:` and `[`: COMM/TID is split on the last
`/` before the verb (psutil's habit with the last `)` of /proc/PID/stat), COMM[TID] on the last `[`.

Guarantee: None for text that is not one of these messages; ParseError for text that is shaped
like one but is broken (a TID that is not a number, an address that is not hex); nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

from agent.errors import ParseError
from agent.payload import Kind, Mode

PREFIX = "x86/split lock detection: "

# A real message is under 200 characters; a longer one is not the kernel's, and the cap keeps
# the regular expressions below linear on hostile text.
MAX_MESSAGE_CHARS = 1024
# PID_MAX_LIMIT (include/linux/threads.h): 4 * 1024 * 1024 on 64-bit.
PID_MAX_LIMIT = 4 * 1024 * 1024
# TASK_COMM_LEN is 16 (15 bytes and a NUL); dmesg may print each odd byte as `\xNN`, so 4 * 15
# characters is the most a real COMM can take in text. The ingest contract allows 64.
MAX_COMM_CHARS = 64

Verb = Literal["took", "fatal", "bogus", "alignment_check"]


@dataclass(frozen=True)
class Trap:
    kind: Kind
    verb: Verb
    comm: str
    tid: int
    address: str | None


@dataclass(frozen=True)
class Suppressed:
    kind: Kind
    site: str
    count: int


@dataclass(frozen=True)
class BootMode:
    mode: Mode
    ratelimit: int | None
    sld: bool | None
    bld: bool | None
    text: str


Message = Union[Trap, Suppressed, BootMode]

_TRAP = re.compile(
    r"#(?P<vec>AC|DB): (?P<who>.*) (?P<verb>took a|fatal|bogus) (?P<what>split_lock|bus_lock) "
    r"trap at address: ?(?P<addr>.*)",
    re.DOTALL,
)
_ALIGNMENT = re.compile(
    r"traps: (?P<comm>.*)\[(?P<tid>[^\]]*)\] trap alignment check ip:(?P<ip>\S*)( .*)?", re.DOTALL
)
_SUPPRESSED = re.compile(
    r"(?P<site>split_lock_warn|handle_user_split_lock|handle_bus_lock): (?P<n>\S+) callbacks suppressed"
)
_RATELIMIT = re.compile(r"#DB: setting system wide bus lock rate limit to (?P<n>\S+)/sec")
_HEX = re.compile(r"(?:0x)?([0-9a-fA-F]{1,16})")

_BOOT_LINES: dict[str, tuple[Mode, bool | None, bool | None]] = {
    # 5.7-5.12 split_lock_setup()
    "disabled": (Mode.OFF, False, None),
    "warning about user-space split_locks": (Mode.WARN, True, None),
    "sending SIGBUS on user-space split_locks": (Mode.FATAL, True, None),
    "MSR access failed: Disabled": (Mode.OFF, False, None),
    # 5.13+ sld_state_show()
    "#AC: crashing the kernel on kernel split_locks and warning on user-space split_locks": (
        Mode.WARN,
        True,
        None,
    ),
    "#AC: crashing the kernel on kernel split_locks and sending SIGBUS on user-space split_locks": (
        Mode.FATAL,
        True,
        None,
    ),
    "#DB: warning on user-space bus_locks": (Mode.WARN, None, True),
    "#DB: sending SIGBUS on user-space bus_locks": (Mode.FATAL, None, True),
    "#DB: sending SIGBUS on user-space bus_locks from non-WB": (Mode.FATAL, True, True),
}


def parse_message(text: str) -> Message | None:
    """One kernel message (a kmsg record's TEXT, or a log line with its timestamp removed)."""
    if len(text) > MAX_MESSAGE_CHARS:
        return None
    text = text.rstrip("\n")
    if text.startswith(PREFIX):
        return _parse_prefixed(text[len(PREFIX) :])
    if text.startswith("traps: ") and " trap alignment check " in text:
        return _parse_alignment(text)
    if text.endswith(" callbacks suppressed"):
        return _parse_suppressed(text)
    return None


def _parse_prefixed(body: str) -> Message | None:
    body = body.rstrip()
    boot = _BOOT_LINES.get(body)
    if boot is not None:
        mode, sld, bld = boot
        return BootMode(mode=mode, ratelimit=None, sld=sld, bld=bld, text=PREFIX + body)
    rate = _RATELIMIT.fullmatch(body)
    if rate is not None:
        n = _parse_count(rate["n"], f"bus lock rate limit in {body!r}")
        return BootMode(mode=Mode.RATELIMIT, ratelimit=n, sld=False, bld=True, text=PREFIX + body)
    trap = _TRAP.fullmatch(body)
    if trap is None:
        return None
    vec, what, verb_text = trap["vec"], trap["what"], trap["verb"]
    # #AC is the split-lock exception, #DB the bus-lock one; a mixed line is not the kernel's.
    if (vec == "AC") != (what == "split_lock") or (what == "bus_lock" and verb_text != "took a"):
        raise ParseError(f"split-lock line: #{vec} with a {what} trap is not a kernel message: {body!r}")
    comm, slash, tid_text = trap["who"].rpartition("/")
    if not slash:
        raise ParseError(f"split-lock line: no COMM/TID before the verb: {body!r}")
    verb: Verb = "took" if verb_text == "took a" else "fatal" if verb_text == "fatal" else "bogus"
    return Trap(
        kind=Kind.SPLIT_LOCK if what == "split_lock" else Kind.BUS_LOCK,
        verb=verb,
        comm=_check_comm(comm, body),
        tid=_parse_tid(tid_text, body),
        address=_parse_address(trap["addr"], body),
    )


def _parse_alignment(text: str) -> Trap:
    match = _ALIGNMENT.fullmatch(text)
    if match is None:
        raise ParseError(f"alignment check line: not `traps: COMM[TID] trap alignment check ...`: {text!r}")
    return Trap(
        kind=Kind.SPLIT_LOCK,
        verb="alignment_check",
        comm=_check_comm(match["comm"], text),
        tid=_parse_tid(match["tid"], text),
        address=_parse_address(match["ip"], text),
    )


def _parse_suppressed(text: str) -> Suppressed | None:
    match = _SUPPRESSED.fullmatch(text)
    if match is None:
        return None  # another call site's rate limit: not ours
    site = match["site"]
    kind = Kind.BUS_LOCK if site == "handle_bus_lock" else Kind.SPLIT_LOCK
    return Suppressed(kind=kind, site=site, count=_parse_count(match["n"], f"suppressed count in {text!r}"))


def _check_comm(comm: str, line: str) -> str:
    if len(comm) > MAX_COMM_CHARS or "\0" in comm:
        raise ParseError(
            f"split-lock line: COMM of {len(comm)} characters or with a NUL cannot be a kernel task name: "
            f"{line[:120]!r}"
        )
    return comm


def _parse_tid(text: str, line: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 7 or int(text) > PID_MAX_LIMIT:
        raise ParseError(f"split-lock line: TID {text!r} is not a thread id (0..{PID_MAX_LIMIT}): {line!r}")
    return int(text)


def _parse_address(text: str, line: str) -> str:
    match = _HEX.fullmatch(text.strip())
    if match is None:
        raise ParseError(f"split-lock line: address {text!r} is not a 64-bit hex number: {line!r}")
    return "0x" + match[1].lower().lstrip("0").rjust(1, "0")


def _parse_count(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise ParseError(f"{what}: {text!r} is not a count")
    return int(text)
