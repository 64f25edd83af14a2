"""`splitwatch import`: kernel log text (dmesg, journal, syslog, kmsg dumps) → schema-1 payloads.

Reads the text files it is given line by line (agent/kernel/textlog.py recognises each line's
style), keeps the split-lock and bus-lock messages (agent/kernel/splitlock.py) and turns them into
events with source `import`. What it guarantees:

- Idempotent: an event's seq is a stable 63-bit hash of (host, the message with its whitespace
  normalised, its time), so importing the same file twice, or two overlapping rotated files,
  stores each line once (ingest is idempotent on host, boot_id, source, seq). The n-th repeat of
  one text at one time within a file (a second-resolution syslog stamp) adds n to the hash: it
  is another sighting, not the same line.
- Nothing dropped silently: a line it cannot date is counted and listed as undated (a dmesg line
  that carries only the time since boot needs `--btime`, or a line elsewhere in the input that
  carries both a wall time and the kernel's own `[uptime]`); a line shaped like a split-lock
  message that does not parse is counted and listed as unparsable; a split-lock text written by
  another program (syslog tag other than `kernel`, kmsg facility >= 1) is a forged gap.
- Times: a line's own absolute time first; else boot time + uptime; else, for `dmesg -H`, the
  previous line's time + its `[ +0.118315]` delta. Local times (syslog, dmesg -T/-H) are read in
  `tz` (default UTC); a syslog line has no year: `year`, else the current year, or the previous
  one when that would put the line in the future (rsyslog's rule).
- Action: docs/kernel.md via agent.kernel.modes.derive_action when the mode is given; without it
  `unknown`, except the verbs that imply theirs (fatal, bogus: sigbus).
- `traps: ... trap alignment check`: any unhandled SIGBUS from #AC, a task that set EFLAGS.AC
  itself included, so it is a split lock (action sigbus) only with `--mode fatal` on a kernel with
  split-lock detection; otherwise it is counted (`alignment_checks`), not sent (issue 16).
- Guest: always null. A log names only a thread; a vCPU thread name (`CPU 0/KVM`, `fc_vcpu 0`)
  tells the VMM kind and the vCPU index, but not which guest ran there.
- Count is 1 per line: since 5.19 a line is a first sighting per thread, not a count.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

from agent import __version__
from agent.errors import ConfigError, ParseError
from agent.kernel.modes import UNKNOWN_KERNEL, derive_action, parse_kernel_release
from agent.kernel.splitlock import BootMode, Suppressed, Trap, parse_message
from agent.kernel.textlog import LogLine, parse_line
from agent.payload import Action, Event, Gap, GapReason, HostInfo, Mode, Payload, Source

BATCH_EVENTS = 1000
DEFAULT_BOOT_ID = "import"
DEFAULT_KERNEL = "unknown"
SEQ_MASK = (1 << 63) - 1
MAX_LISTED = 20  # undated / unparsable lines named one by one in the summary; the rest are counted

# Thread names of KVM vCPUs (docs/agent.md "Which guest"): only to tell derive_action a guest ran.
_VCPU_COMM = re.compile(r"CPU [0-9]+/KVM|fc_vcpu [0-9]+|vcpu[0-9]+|crosvm_vcpu[0-9]+")
_IMPLIED = ("fatal", "bogus")


@dataclass(frozen=True)
class ImportOptions:
    host: str | None = None
    boot_id: str | None = None
    mode: Mode | None = None
    mitigate: int | None = None
    kernel: str | None = None  # release as uname -r prints it, or just `6.8`
    year: int | None = None
    btime: int | None = None  # boot time, seconds since the epoch
    tz: tzinfo = timezone.utc


@dataclass
class ImportResult:
    """What an import found. `events` and `gaps` are keyed by host name."""

    boot_id: str
    kernel: str
    lines_read: int = 0
    events: dict[str, list[Event]] = field(default_factory=dict)
    gaps: dict[str, list[Gap]] = field(default_factory=dict)
    undated: int = 0
    unparsable: int = 0
    forged: int = 0
    duplicates: int = 0
    alignment_checks: int = 0  # `trap alignment check` lines not taken for split locks
    notes: list[str] = field(default_factory=list)  # undated/unparsable lines, named, at most MAX_LISTED
    boot_modes: list[str] = field(default_factory=list)
    btime_used: int | None = None
    years_assumed: set[int] = field(default_factory=set)

    @property
    def suppressed(self) -> int:
        return sum(g.count for gs in self.gaps.values() for g in gs if g.reason is GapReason.SUPPRESSED)

    @property
    def event_count(self) -> int:
        return sum(len(v) for v in self.events.values())

    def summary(self) -> str:
        hosts = ", ".join(sorted(self.events)) or "-"
        text = [
            f"lines read: {self.lines_read}",
            f"events: {self.event_count} (hosts: {hosts})",
            f"undated lines: {self.undated}",
            f"unparsable split-lock lines: {self.unparsable}",
            f"forged lines (not from the kernel): {self.forged}",
            f"suppressed lines (rate limit): {self.suppressed}",
        ]
        if self.alignment_checks:
            text.append(
                f"alignment-check lines not sent (a split lock only in fatal mode: give --mode fatal): "
                f"{self.alignment_checks}"
            )
        if self.duplicates:
            text.append(f"repeated lines imported once: {self.duplicates}")
        if self.btime_used is not None:
            text.append(f"boot time used for dmesg times: {self.btime_used}")
        if self.years_assumed:
            text.append(f"year assumed for syslog dates: {', '.join(map(str, sorted(self.years_assumed)))}")
        if self.boot_modes:
            text.append("boot mode lines: " + "; ".join(dict.fromkeys(self.boot_modes)))
        text.extend(self.notes)
        hidden = self.undated + self.unparsable - len(self.notes)
        if hidden > 0:
            text.append(f"... and {hidden} more undated or unparsable lines")
        return "\n".join(text)


@dataclass(frozen=True)
class _Candidate:
    where: str
    line: LogLine
    at: datetime | None
    message: Trap | Suppressed | BootMode
    forged: bool = False


def read_lines(
    paths: Sequence[str | Path], *, progress: Callable[[int], None] | None = None, every: int = 100_000
) -> Iterator[tuple[str, str]]:
    """(`FILE:LINE`, text) for each line of each file (`-`: standard input), bytes decoded as UTF-8
    (odd bytes replaced). Raises ConfigError naming the file when one cannot be read."""
    count = 0
    for path in paths:
        try:
            if str(path) == "-":
                # `journalctl -k -o short-iso | splitwatch import - ...`; stdin is not ours to close.
                lines: Iterable[bytes] = sys.stdin.buffer
                handle = None
            else:
                handle = open(path, "rb")  # noqa: SIM115 - closed below; OSError must name the file
                lines = handle
            try:
                for number, raw in enumerate(lines, start=1):
                    count += 1
                    if progress is not None and count % every == 0:
                        progress(count)
                    yield f"{path}:{number}", raw.decode("utf-8", "replace")
            finally:
                if handle is not None:
                    handle.close()
        except OSError as exc:
            raise ConfigError(f"cannot read {path} ({exc.strerror or exc}): check the path") from None


def import_lines(lines: Iterable[tuple[str, str]], options: ImportOptions, *, now: datetime) -> ImportResult:
    """Events and gaps from (`where`, text) lines: the pure heart of `splitwatch import`."""
    kernel = _kernel(options.kernel)
    result = ImportResult(
        boot_id=options.boot_id or DEFAULT_BOOT_ID, kernel=(options.kernel or DEFAULT_KERNEL).strip()
    )
    candidates: list[_Candidate] = []
    clock: datetime | None = None  # dmesg -H: the time of the line before
    btime_seen: datetime | None = None
    year = options.year if options.year is not None else now.year
    for where, text in lines:
        result.lines_read += 1
        if not _worth_parsing(text):
            continue
        line = parse_line(text, year=year, tz=options.tz)
        if options.year is None and line.style in ("syslog", "dmesg-minute"):
            line = _no_future(text, line, now, options.tz, result)
        if line.at is not None:
            clock = line.at
            if line.uptime_usec is not None and btime_seen is None and not line.minute_only:
                btime_seen = line.at - timedelta(microseconds=line.uptime_usec)
        elif line.delta_usec is not None and clock is not None:
            clock += timedelta(microseconds=line.delta_usec)
        at = line.at if line.at is not None else clock if line.delta_usec is not None else None
        try:
            message = parse_message(line.message)
        except ParseError as exc:
            result.unparsable += 1
            _note(result, f"unparsable {where}: {exc}")
            continue
        if message is None:
            continue
        if not line.from_kernel:
            result.forged += 1
            candidates.append(_Candidate(where, line, at, message, forged=True))
            continue
        if isinstance(message, BootMode):
            result.boot_modes.append(message.text)
            continue
        candidates.append(_Candidate(where, line, at, message))

    btime = (
        datetime.fromtimestamp(options.btime, timezone.utc)
        if options.btime is not None
        else btime_seen.replace(microsecond=0)
        if btime_seen is not None
        else None
    )
    if btime is not None and any(c.at is None and c.line.uptime_usec is not None for c in candidates):
        result.btime_used = int(btime.timestamp())
    seen: set[tuple[str, int]] = set()
    # The same text at the same time twice in one file is two sightings (a second-resolution
    # syslog stamp); in two files it is one line kept twice (overlapping rotated logs).
    occurrences: dict[tuple[str, str, str, datetime], int] = {}
    for c in candidates:
        if c.forged:
            # Written by a process, not the kernel: a counted gap, dated or not.
            host = options.host or c.line.host or ""
            seq = stable_seq(host, c.line.message, c.at)
            result.gaps.setdefault(host, []).append(Gap(Source.IMPORT, seq, seq, 1, GapReason.FORGED))
            continue
        at = c.at
        if at is None and c.line.uptime_usec is not None and btime is not None:
            at = btime + timedelta(microseconds=c.line.uptime_usec)
        if at is None:
            result.undated += 1
            _note(result, f"undated {c.where}: {_why_undated(c.line)}")
            continue
        line_host = options.host or c.line.host
        if line_host is None:
            raise ConfigError(
                f"{c.where} names no host (dmesg output does not): pass --host NAME, the host it came from"
            )
        host = line_host
        key = (c.where.rpartition(":")[0], host, " ".join(c.line.message.split()), at)
        occurrence = occurrences.get(key, 0)
        occurrences[key] = occurrence + 1
        seq = stable_seq(host, c.line.message, at, occurrence)
        if (host, seq) in seen:
            result.duplicates += 1
            continue
        seen.add((host, seq))
        if isinstance(c.message, Suppressed):
            gap = Gap(Source.IMPORT, seq, seq, c.message.count, GapReason.SUPPRESSED)
            result.gaps.setdefault(host, []).append(gap)
            continue
        if not isinstance(c.message, Trap):
            continue  # boot mode lines are only reported
        trap = c.message
        if trap.verb == "alignment_check" and not (
            options.mode is Mode.FATAL and (kernel == UNKNOWN_KERNEL or kernel >= (5, 7))
        ):
            result.alignment_checks += 1
            continue
        result.events.setdefault(host, []).append(
            Event(
                source=Source.IMPORT,
                seq=seq,
                time=at,
                kind=trap.kind,
                comm=trap.comm,
                tid=trap.tid,
                tgid=None,
                address=trap.address,
                count=1,
                action=_action(trap, options, kernel),
                guest=None,
            )
        )
    return result


def payloads(result: ImportResult) -> list[Payload]:
    """Schema-1 payloads, state null, at most BATCH_EVENTS events (and gaps) each, per host."""
    out: list[Payload] = []
    for host in sorted(set(result.events) | set(result.gaps)):
        if not host:
            continue  # a forged line with no host at all: counted, nothing to file it under
        info = HostInfo(
            name=host,
            boot_id=result.boot_id,
            kernel=result.kernel or DEFAULT_KERNEL,
            cpu_model="",
            agent_version=f"{__version__} (import)",
        )
        events = result.events.get(host, [])
        gaps = result.gaps.get(host, [])
        for start in range(0, max(len(events), len(gaps)), BATCH_EVENTS):
            out.append(
                Payload(
                    host=info,
                    state=None,
                    events=tuple(events[start : start + BATCH_EVENTS]),
                    gaps=tuple(gaps[start : start + BATCH_EVENTS]),
                )
            )
    return out


def stable_seq(host: str, message: str, at: datetime | None, occurrence: int = 0) -> int:
    """63 bits of BLAKE2b over (host, whitespace-normalised message, UTC time): the same line
    imported twice gets the same seq, so the backend stores it once. `occurrence` numbers the
    repeats of one text at one time within a file (0 for the first, which then hashes alone)."""
    normalised = " ".join(message.split())
    when = at.astimezone(timezone.utc).isoformat() if at is not None else ""
    text = f"{host}\n{normalised}\n{when}" + (f"\n{occurrence}" if occurrence else "")
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & SEQ_MASK


def _kernel(release: str | None) -> tuple[int, int]:
    if release is None:
        return UNKNOWN_KERNEL
    try:
        return parse_kernel_release(release)
    except ParseError:
        raise ConfigError(
            f"--kernel {release[:40]!r} is not a kernel release: give it as uname -r prints it, e.g. 6.8"
        ) from None


def _action(trap: Trap, options: ImportOptions, kernel: tuple[int, int]) -> Action:
    guest = _VCPU_COMM.fullmatch(trap.comm) is not None
    if options.mode is None:
        if trap.verb not in _IMPLIED:
            return Action.UNKNOWN
        # These verbs imply their action whatever the mode (docs/kernel.md): any mode will do.
        return derive_action(
            trap.kind, trap.verb, mode=Mode.WARN, mitigate=None, kernel=UNKNOWN_KERNEL, guest=guest
        )
    return derive_action(
        trap.kind, trap.verb, mode=options.mode, mitigate=options.mitigate, kernel=kernel, guest=guest
    )


def _no_future(text: str, line: LogLine, now: datetime, tz: tzinfo, result: ImportResult) -> LogLine:
    """A year-less date after tomorrow is last year's (syslog has no year; rsyslog's rule)."""
    if line.at is None:
        return line
    if line.at > now + timedelta(days=1):
        earlier = parse_line(text, year=now.year - 1, tz=tz)
        result.years_assumed.add(now.year - 1)
        return earlier
    result.years_assumed.add(now.year)
    return line


def _worth_parsing(text: str) -> bool:
    """Cheap test first: most lines of a big log are neither ours nor a time we must follow."""
    if "split" in text or "bus_lock" in text or "alignment" in text:
        return True  # every message of ours holds one of these (or it is not ours)
    if "kernel: [" in text:
        return True  # a syslog kernel line with the kernel's uptime: it tells the boot time
    # A dmesg -H minute or delta, or a dmesg -T stamp, after any -r/-x prefix: the clock of the
    # lines after it. A plain `[  688.79]` uptime needs nothing from a line that is not ours.
    bracket = text.find("[", 0, 24)
    return bracket >= 0 and not text[bracket + 1 :].lstrip()[:1].isdigit()


def _why_undated(line: LogLine) -> str:
    if line.uptime_usec is not None:
        return (
            "it carries only the time since boot: pass --btime EPOCH, the host's boot time "
            "(btime in its /proc/stat), or import dmesg -T output"
        )
    if line.delta_usec is not None:
        return "a dmesg -H delta with no dated line before it: import the whole dmesg -H output"
    if line.style == "bare":
        return "no timestamp on the line: import dmesg output with its timestamps"
    return "its date is not a valid date"


def _note(result: ImportResult, text: str) -> None:
    if len(result.notes) < MAX_LISTED:
        result.notes.append(text[:300])
