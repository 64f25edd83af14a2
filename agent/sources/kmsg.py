"""The kernel log source: split-lock traps, suppressed-line gaps and boot mode lines from dev/kmsg.

Reads `dev/kmsg` under the host root, in one of two shapes:

- the real character device (Documentation/ABI/testing/dev-kmsg): opened O_RDONLY|O_NONBLOCK,
  one `read(fd, 8192)` returns exactly one record; EAGAIN means no more for now; EPIPE means
  records were overwritten before we read them (the next read returns the oldest still there,
  and the jump in SEQ is the loss); `lseek(fd, 0, SEEK_SET)` goes back to the oldest record.
  Opening for read needs CAP_SYSLOG (or root) when `kernel.dmesg_restrict = 1`.
- a fake host's regular file of records (agent/fakehost.py), one per line, continuation lines
  starting with a space. It grows, and it may be rewritten shorter (a wrapped ring, a reboot).

Guarantees:
- `collect()` never raises. Status `absent` (no dev/kmsg), `denied` (EPERM/EACCES, with the
  remedy), `failed` (any other OS error, named), else `ok`.
- Resume by `KmsgCursor(boot_id, next_seq)`: records with SEQ < next_seq are never returned again
  and none at or after it is skipped, across calls and across new KmsgSource instances (a restart).
  A cursor of another boot starts at the oldest record; no cursor at all (first run) starts at the
  oldest record too, without claiming the history before it as lost.
- Every loss is a gap (payload.Gap, source kmsg): a jump in SEQ (overrun), a `callbacks suppressed`
  line (suppressed, count N), a record of facility >= 1 shaped like one of ours (forged: only the
  kernel logs with facility 0, so a process wrote it; it is counted and otherwise ignored).
- At most `max_records` records are read per pass; the rest are read by the next pass.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from agent.errors import ParseError
from agent.host import HostRoot
from agent.kernel.kmsg import KmsgRecord, parse_record
from agent.kernel.splitlock import BootMode, Suppressed, Trap, parse_message
from agent.payload import Gap, GapReason, Source

KMSG = "dev/kmsg"
# CONSOLE_EXT_LOG_MAX (kernel/printk/printk.c): the largest record one read() can return. A smaller
# buffer gets EINVAL for a long record.
READ_SIZE = 8192
_FILE_CHUNK = 1 << 20
_MAX_PARTIAL_LINE = 1 << 20  # an unfinished line longer than this is not a record being written

Status = Literal["ok", "absent", "denied", "failed"]


@dataclass(frozen=True)
class KmsgCursor:
    boot_id: str
    next_seq: int


@dataclass(frozen=True)
class KmsgTrap:
    seq: int
    time: datetime
    trap: Trap


@dataclass(frozen=True)
class KmsgResult:
    status: Status
    error: str | None
    traps: tuple[KmsgTrap, ...]
    gaps: tuple[Gap, ...]
    boot_modes: tuple[BootMode, ...]
    cursor: KmsgCursor
    records_read: int
    forged: int


@dataclass
class _Pass:
    """What one collect() pass has seen so far."""

    boot_id: str
    btime: int
    expected: int | None  # SEQ we expect next; a larger one means records were lost
    skip_below: int  # records under this SEQ were already returned by an earlier pass
    traps: list[KmsgTrap] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    boot_modes: list[BootMode] = field(default_factory=list)
    records_read: int = 0
    forged: int = 0
    boot_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        # Record time = btime (proc/stat, whole seconds) + USEC since boot.
        self.boot_at = datetime.fromtimestamp(self.btime, timezone.utc)

    def take(self, record: KmsgRecord) -> None:
        if record.seq < self.skip_below:
            return
        if self.expected is not None and record.seq > self.expected:
            self.gaps.append(
                Gap(Source.KMSG, self.expected, record.seq - 1, record.seq - self.expected, GapReason.OVERRUN)
            )
        self.expected = self.skip_below = record.seq + 1
        self.records_read += 1
        try:
            message = parse_message(record.text)
        except ParseError:
            # Shaped like ours but broken. The kernel's format strings cannot print it, so a
            # process wrote it: forged when its facility says so. (Facility 0 is the kernel's
            # alone; such a record cannot occur, and there is nothing true to report about it.)
            if not record.is_kernel:
                self._forged(record)
            return
        if message is None:
            return
        if not record.is_kernel:
            self._forged(record)
        elif isinstance(message, Trap):
            at = self.boot_at + timedelta(microseconds=record.usec)
            self.traps.append(KmsgTrap(record.seq, at, message))
        elif isinstance(message, Suppressed):
            self.gaps.append(Gap(Source.KMSG, record.seq, record.seq, message.count, GapReason.SUPPRESSED))
        else:
            self.boot_modes.append(message)

    def _forged(self, record: KmsgRecord) -> None:
        self.forged += 1
        self.gaps.append(Gap(Source.KMSG, record.seq, record.seq, 1, GapReason.FORGED))

    def result(self, status: Status = "ok", error: str | None = None) -> KmsgResult:
        return KmsgResult(
            status=status,
            error=error,
            traps=tuple(self.traps),
            gaps=tuple(self.gaps),
            boot_modes=tuple(self.boot_modes),
            cursor=KmsgCursor(self.boot_id, self.skip_below),
            records_read=self.records_read,
            forged=self.forged,
        )


class KmsgSource:
    """dev/kmsg of one host. Keeps its descriptor (device) or offset (file) between passes."""

    def __init__(self, host: HostRoot) -> None:
        self._host = host
        self._fd: int | None = None
        self._is_device = False
        self._boot_id: str | None = None
        self._position_seq: int | None = None  # SEQ after the last record consumed from _fd
        self._offset = 0  # file only: byte offset of the next unread record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._position_seq = None
        self._offset = 0

    def collect(
        self, cursor: KmsgCursor | None, *, boot_id: str, btime: int, max_records: int = 50_000
    ) -> KmsgResult:
        if cursor is None:
            # First run: start at the oldest record; what the ring lost before we ever looked is
            # not a loss we can count.
            state = _Pass(boot_id, btime, expected=None, skip_below=0)
        elif cursor.boot_id != boot_id:
            # A new boot: SEQ restarted at 0, and anything before the oldest record is lost.
            state = _Pass(boot_id, btime, expected=0, skip_below=0)
        else:
            state = _Pass(boot_id, btime, expected=cursor.next_seq, skip_below=cursor.next_seq)
        if self._boot_id != boot_id:
            self.close()
            self._boot_id = boot_id
        try:
            self._open()
            if self._position_seq is not None and self._position_seq > state.skip_below:
                # The caller did not commit the last pass: read those records again.
                self._rewind()
            for record in self._records():
                state.take(record)
                if state.records_read >= max_records:
                    break
        except OSError as exc:
            self.close()
            # What was read before the error stands; the cursor covers exactly that.
            return state.result(*_describe(exc, self._host))
        return state.result()

    # -- the two shapes of dev/kmsg ------------------------------------------------------------

    def _open(self) -> None:
        if self._fd is not None:
            if not self._is_device:
                self._check_file_replaced()
            return
        self._is_device = self._host.is_char_device(KMSG)
        flags = os.O_RDONLY | (os.O_NONBLOCK if self._is_device else 0)
        self._fd = self._host.open_fd(KMSG, flags)
        self._position_seq = None
        self._offset = 0

    def _check_file_replaced(self) -> None:
        assert self._fd is not None
        try:
            now = self._host.stat(KMSG)
        except FileNotFoundError:
            self.close()
            raise
        was = os.fstat(self._fd)
        if (now.st_ino, now.st_dev) != (was.st_ino, was.st_dev):
            # Rewritten by rename (a wrapped ring): a new file, read from its start.
            self.close()
            self._open()
        elif now.st_size < self._offset:
            # Truncated in place (a reboot): read from its start.
            self._rewind()

    def _rewind(self) -> None:
        assert self._fd is not None
        if self._is_device:
            os.lseek(self._fd, 0, os.SEEK_SET)  # devkmsg_llseek: back to the oldest record
        self._offset = 0
        self._position_seq = None

    def _records(self) -> Iterator[KmsgRecord]:
        source = self._device_records() if self._is_device else self._file_records()
        for record in source:
            self._position_seq = record.seq + 1
            yield record

    def _device_records(self) -> Iterator[KmsgRecord]:
        assert self._fd is not None
        while True:
            try:
                raw = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return  # EAGAIN: no more records for now
            except BrokenPipeError:
                continue  # EPIPE: overwritten; the next read gives the oldest left, SEQ shows the gap
            if not raw:
                return
            try:
                yield parse_record(raw)
            except ParseError:
                continue  # the kernel does not write these; nothing to count it against

    def _file_records(self) -> Iterator[KmsgRecord]:
        """Complete records from the offset on; the offset advances past each record yielded."""
        assert self._fd is not None
        buffer = b""
        start = self._offset  # file offset of buffer[0]
        skipping = False  # inside a line longer than any record: dropped up to its newline
        while True:
            chunk = os.pread(self._fd, _FILE_CHUNK, start + len(buffer))
            at_eof = len(chunk) < _FILE_CHUNK
            buffer += chunk
            if skipping:
                newline = buffer.find(b"\n")
                dropped = len(buffer) if newline < 0 else newline + 1
                buffer, start, skipping = buffer[dropped:], start + dropped, newline < 0
                self._offset = start
            end = buffer.rfind(b"\n") + 1  # only whole lines: the writer may be mid-line
            runaway = len(buffer) - end > _MAX_PARTIAL_LINE
            complete, consumed = _split_records(buffer[:end], final=at_eof or runaway)
            for raw, length in complete:
                self._offset = start + length
                try:
                    record = parse_record(raw)
                except ParseError:
                    continue  # a garbage line in a fake log: no SEQ to account it to
                yield record
            buffer = buffer[consumed:]
            start += consumed
            if runaway:
                # Hostile text: a line far longer than the kernel's 8 KiB record limit. Drop it
                # instead of holding it in memory.
                start += len(buffer)
                buffer, skipping = b"", True
                self._offset = start
            if at_eof:
                return


def _split_records(data: bytes, *, final: bool) -> tuple[list[tuple[bytes, int]], int]:
    """Split whole lines into records (a header line plus lines starting with a space).

    Returns (record bytes, offset just past it) pairs and how many bytes they cover. Unless
    `final`, the last record is held back: its continuation lines may still be in the next chunk.
    """
    records: list[tuple[bytes, int]] = []
    begin = 0
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos) + 1
        if pos > begin and not data.startswith(b" ", pos):
            records.append((data[begin:pos], pos))
            begin = pos
        pos = nl
    if final and pos > begin:
        records.append((data[begin:pos], pos))
        begin = pos
    return records, begin


def _describe(exc: OSError, host: HostRoot) -> tuple[Status, str]:
    path = host.path(KMSG)
    cause = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOENT:
        return "absent", f"no {KMSG} under {host.root}: the kernel log cannot be read on this host"
    if exc.errno in (errno.EPERM, errno.EACCES):
        return "denied", (
            f"cannot read {path} ({cause.lower()}): run the agent as root or grant it CAP_SYSLOG "
            "(kernel.dmesg_restrict = 1 requires it)"
        )
    if exc.errno == errno.EINVAL:
        return "failed", (
            f"cannot read {path} (a record is larger than the {READ_SIZE}-byte read buffer): "
            "report this kernel to the splitwatch maintainers"
        )
    return "failed", f"cannot read {path} ({cause.lower()}): check the device and the agent's root"
