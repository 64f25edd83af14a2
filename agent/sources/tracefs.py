"""True split-lock and bus-lock counts from kprobes on tracefs (docs/kernel.md). Never raises.

The kernel prints a trap once per thread (5.19+) and at most 10 lines per 5 s, so kmsg gives first
sightings. A kprobe hit is one trap: `start()` registers `p:splitwatch/<func> <func>` for each of
split_lock_warn, handle_guest_split_lock and handle_bus_lock that this kernel lists in
available_filter_functions, enables them, and `collect()` turns the new trace_pipe lines into hit
counts per (probe, comm, tid). `close()` disables and removes exactly the probes it added — never
another tool's — and a probe of ours left by a crashed agent is removed before we add it again.

Present only when sys/kernel/tracing exists and kprobe_events is writable (root). Outcomes:
absent (no tracefs, no probe-able function), denied (kprobe_events not writable), failed, ok.

Double counting: in warn mode a guest's split lock runs handle_guest_split_lock *and* split_lock_warn
(the first calls the second), so both probes hit for one trap. Count a vCPU thread's split locks from
one probe, not the sum.

Known limit: trace_pipe is the global buffer; it is consumed as read, so another tool reading it at
the same time shares the events with us. (A private tracing instance would avoid that.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass
from typing import Literal

from agent.host import HostRoot

Status = Literal["ok", "absent", "denied", "failed"]

BASE = "sys/kernel/tracing"
GROUP = "splitwatch"
PROBES = ("split_lock_warn", "handle_guest_split_lock", "handle_bus_lock")
READ_CHUNK = 65536
MAX_BYTES_PER_COLLECT = 8 * 1024 * 1024  # a flood costs one pass this much, the rest waits

# `COMM-TID [CPU] FLAGS SECS.USECS: EVENT: (FUNC+0x0/0x90)`; COMM is right-aligned to 16 and may hold
# spaces and dashes, so the greedy COMM ends at the LAST `-` before a TID that is followed by the CPU
# field. Optional: `(TGID)` with the record-tgid option, FLAGS without irq-info.
_LINE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<tid>\d+)\s+(?:\(\s*(?:\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:\S+\s+)?(?P<secs>\d+)\.(?P<frac>\d+):\s+(?P<event>[\w.]+):\s*(?P<rest>.*)$"
)
_LOST = re.compile(r"^CPU:\d+ \[LOST (\d+) EVENTS\]")


@dataclass(frozen=True)
class TraceHit:
    probe: str  # split_lock_warn | handle_guest_split_lock | handle_bus_lock
    comm: str  # `<...>` when the trace's comm cache no longer has the name
    tid: int
    count: int  # hits of this probe by this thread in this collect()
    first_usec: int  # trace clock (time since boot) of the first of them, in microseconds
    cpus: tuple[int, ...] = ()  # the CPUs the hits ran on (`[CPU]`): which cores trapped


@dataclass(frozen=True)
class TracefsResult:
    status: Status
    error: str | None
    hits: tuple[TraceHit, ...]
    lost: int = 0  # `[LOST N EVENTS]`: the ring buffer overflowed between two reads


@dataclass(frozen=True)
class _Parsed:
    probe: str
    comm: str
    tid: int
    usec: int
    cpu: int = 0


def parse_trace_line(line: str) -> _Parsed | int | None:
    """One trace_pipe line: a hit of one of our probes, the N of a `[LOST N EVENTS]` line, or None."""
    lost = _LOST.match(line)
    if lost is not None:
        return int(lost.group(1))
    match = _LINE.match(line)
    if match is None:
        return None
    event = match.group("event")
    probe = event.removeprefix(f"{GROUP}_")
    if probe not in PROBES:
        return None  # another tool's event: trace_pipe is shared
    frac = (match.group("frac") + "000000")[:6]
    return _Parsed(
        probe,
        match.group("comm").strip(),
        int(match.group("tid")),
        int(match.group("secs")) * 1_000_000 + int(frac),
        int(match.group("cpu")),
    )


def _why(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.ENOENT:
        return "missing"
    return f"{errno.errorcode.get(err.errno or 0, err.errno)}: {err.strerror}"


def _symbol(func: str, available: set[str]) -> str | None:
    """The symbol to probe for `func`: itself, or a compiler-renamed clone (`split_lock_warn.isra.0`)
    — event names cannot hold a dot, so the event keeps the plain name."""
    if func in available:
        return func
    clones = sorted(name for name in available if name.startswith(func + "."))
    return clones[0] if clones else None


def _live_probes(kprobe_events: str) -> list[str]:
    """`group/event` names defined now. Real kprobe_events lists them; a fake host's file is the log of
    commands written to it — replaying `p:`/`r:` adds and `-:` removes gives the same set for both."""
    live: list[str] = []
    for line in kprobe_events.splitlines():
        head = line.split(maxsplit=1)[0] if line.strip() else ""
        if head[:2] in ("p:", "r:") and head[2:] not in live:
            live.append(head[2:])
        elif head.startswith("-:") and head[2:] in live:
            live.remove(head[2:])
    return live


class TracefsSource:
    def __init__(self, host: HostRoot) -> None:
        self._host = host
        self._probes: list[str] = []
        self._fd: int | None = None
        self._pending = b""
        self._status: Status = "absent"
        self._error: str | None = "tracefs not started"

    @property
    def probes(self) -> tuple[str, ...]:
        """The probes this source registered (a subset of PROBES: those this kernel can probe)."""
        return tuple(self._probes)

    def _fail(self, status: Status, error: str) -> str:
        self._status, self._error = status, error
        return error

    def start(self) -> str | None:
        """Register and enable our kprobes and open trace_pipe. None on success, else the reason."""
        if self._fd is not None:
            return None
        kprobe_events = f"{BASE}/kprobe_events"
        if not self._host.exists(kprobe_events):
            return self._fail(
                "absent",
                f"no {kprobe_events}: mount tracefs (mount -t tracefs nodev /sys/kernel/tracing) on a kernel "
                "with CONFIG_KPROBE_EVENTS; without it counts are kmsg first sightings",
            )
        try:
            with self._host.opened(kprobe_events, os.O_WRONLY | os.O_APPEND):
                pass  # never O_TRUNC: truncating kprobe_events deletes every tool's probes
            current = self._host.read_text(kprobe_events)
        except OSError as err:
            status: Status = "denied" if err.errno in (errno.EACCES, errno.EPERM) else "failed"
            return self._fail(status, f"cannot write {kprobe_events} ({_why(err)}): run the agent as root")
        try:
            available = {
                line.split(maxsplit=1)[0]
                for line in self._host.read_text(f"{BASE}/available_filter_functions").splitlines()
                if line.strip()
            }
        except OSError as err:
            return self._fail(
                "absent", f"cannot read {BASE}/available_filter_functions ({_why(err)}): no ftrace"
            )
        targets = {p: _symbol(p, available) for p in PROBES}
        wanted = [p for p in PROBES if targets[p] is not None]
        if not wanted:
            return self._fail(
                "absent",
                f"none of {', '.join(PROBES)} is in available_filter_functions: this kernel has no "
                "split-lock handlers to probe (older than 5.7, or not an x86 kernel)",
            )

        for name in _live_probes(current):
            if name.startswith(f"{GROUP}/"):  # ours, left by an agent that died before close()
                self._remove(name.split("/", 1)[1])

        errors: list[str] = []
        for probe in wanted:
            try:
                self._host.write_text(kprobe_events, f"p:{GROUP}/{probe} {targets[probe]}\n")
            except OSError as err:
                errors.append(f"cannot add kprobe {probe} ({_why(err)})")
                continue
            self._probes.append(probe)
            try:
                self._host.write_text(f"{BASE}/events/{GROUP}/{probe}/enable", "1\n", append=False)
            except OSError as err:
                errors.append(f"cannot enable kprobe {probe} ({_why(err)})")
        if len(errors) == len(wanted):
            self.close()
            return self._fail("failed", "; ".join(errors) + ": check dmesg for kprobe errors")
        try:
            self._fd = self._host.open_fd(f"{BASE}/trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            self.close()
            return self._fail("failed", f"cannot open {BASE}/trace_pipe ({_why(err)})")
        self._status = "ok"
        self._error = "; ".join(errors) if errors else None
        return self._error

    def collect(self) -> TracefsResult:
        """Hits since the last collect(): a real trace_pipe is consumed as read; a fake one is a file
        that grows, read on from the open descriptor's offset."""
        if self._fd is None:
            return TracefsResult(self._status, self._error, ())
        counts: dict[tuple[str, str, int], list[int]] = {}
        cpus: dict[tuple[str, str, int], set[int]] = {}
        lost = 0
        read = 0
        data = self._pending
        try:
            while read < MAX_BYTES_PER_COLLECT:
                try:
                    chunk = os.read(self._fd, READ_CHUNK)
                except BlockingIOError:
                    break  # EAGAIN: nothing more for now
                if not chunk:
                    break  # a fake host's file: end of what was written so far
                read += len(chunk)
                data += chunk
        except OSError as err:
            self._status, self._error = "failed", f"cannot read {BASE}/trace_pipe ({_why(err)})"
        lines = data.split(b"\n")
        self._pending = lines.pop()  # an incomplete last line waits for the next read
        for raw in lines:
            parsed = parse_trace_line(raw.decode("utf-8", "replace"))
            if isinstance(parsed, int):
                lost += parsed
            elif parsed is not None:
                key = (parsed.probe, parsed.comm, parsed.tid)
                entry = counts.get(key)
                if entry is None:
                    counts[key] = [1, parsed.usec]
                    cpus[key] = {parsed.cpu}
                else:
                    entry[0] += 1
                    cpus[key].add(parsed.cpu)
        hits = tuple(
            sorted(
                (
                    TraceHit(probe, comm, tid, n, first, tuple(sorted(cpus[(probe, comm, tid)])))
                    for (probe, comm, tid), (n, first) in counts.items()
                ),
                key=lambda h: (h.first_usec, h.probe, h.tid),
            )
        )
        return TracefsResult(self._status, self._error, hits, lost)

    def _remove(self, probe: str) -> None:
        # Disable first: a kprobe event that is enabled cannot be deleted (EBUSY).
        for rel, text, append in (
            (f"{BASE}/events/{GROUP}/{probe}/enable", "0\n", False),
            (f"{BASE}/kprobe_events", f"-:{GROUP}/{probe}\n", True),
        ):
            # ENOENT: already gone, or never fully added — nothing left to undo.
            with contextlib.suppress(OSError):
                self._host.write_text(rel, text, append=append)

    def close(self) -> None:
        """Disable and remove exactly the probes this source added; close trace_pipe."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for probe in self._probes:
            self._remove(probe)
        self._probes = []
        self._pending = b""
        self._status, self._error = "absent", "tracefs closed"
