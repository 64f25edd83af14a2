"""/dev/kmsg record parsing: one record's bytes in, a KmsgRecord out. Pure: no files, no clock.

Format (Documentation/ABI/testing/dev-kmsg, unchanged 3.5 → 6.19):

    PRIO,SEQ,USEC,FLAG[,more...];TEXT\\n
     KEY=VALUE\\n                        (optional continuation lines, each starts with a space)

- PRIO = facility * 8 + level. Only facility 0 is the kernel: a process writing to /dev/kmsg
  always gets facility >= 1 (printk/printk.c devkmsg_write), which is how a forged line is told.
- FLAG is `-`, or `c`/`+` on kernels before 4.9 that still exposed continuation fragments.
- `more` holds extra fields such as `caller=T123` (CONFIG_PRINTK_CALLER, 5.1+); we ignore them.
- The kernel escapes bytes < 0x20, >= 0x7f and the backslash itself as `\\xNN` in TEXT and in
  continuation values (printk.c msg_add_ext_text), so a record never holds a raw newline or NUL.
  We undo the escaping and decode the bytes as UTF-8, replacing what is not UTF-8: a COMM can
  hold any byte, and the payload must stay valid JSON and PostgreSQL text (no NUL survives).

Guarantee: parse_record raises ParseError, and nothing else, on any input it does not accept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import ParseError

# One read() of /dev/kmsg returns at most 8192 bytes (CONSOLE_EXT_LOG_MAX, printk.c); a fake
# kmsg file line longer than that cannot be a kernel record and would only cost us time.
MAX_RECORD_BYTES = 8192

_U64_MAX = (1 << 64) - 1
# SEQ is a u64 in the kernel, but ingest stores it as a signed 64-bit integer, and no kernel logs
# 2**63 records: a larger SEQ is hostile text.
_SEQ_MAX = (1 << 63) - 1
_HEADER = re.compile(rb"([0-9]{1,10}),([0-9]{1,20}),([0-9]{1,20}),([^,;]+)(?:,[^;]*)?")
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class KmsgRecord:
    prio: int
    facility: int
    level: int
    seq: int
    usec: int
    flags: str
    text: str
    continuation: tuple[str, ...] = ()

    @property
    def is_kernel(self) -> bool:
        """Facility 0: printed by the kernel itself, not written by a process."""
        return self.facility == 0


def parse_record(raw: bytes | str) -> KmsgRecord:
    """One /dev/kmsg record (one read(), or one record of a fake kmsg file)."""
    if isinstance(raw, str):
        try:
            # A fake kmsg file is read with surrogateescape: give back the original bytes.
            data = raw.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise ParseError(f"kmsg record: not encodable text ({exc.reason})") from None
    else:
        data = bytes(raw)
    if len(data) > MAX_RECORD_BYTES:
        raise ParseError(
            f"kmsg record: {len(data)} bytes, longer than the kernel's {MAX_RECORD_BYTES}-byte maximum"
        )
    if b"\0" in data:
        raise ParseError("kmsg record: contains a NUL byte, which the kernel always escapes as \\x00")
    if data.endswith(b"\n"):
        data = data[:-1]
    first, *rest = data.split(b"\n")
    header, sep, text = first.partition(b";")
    if not sep:
        raise ParseError(f"kmsg record: no ';' between header and text: {_show(first)}")
    match = _HEADER.fullmatch(header)
    if match is None:
        raise ParseError(f"kmsg record: header is not PRIO,SEQ,USEC,FLAG: {_show(header)}")
    prio, seq, usec = int(match[1]), int(match[2]), int(match[3])
    if seq > _SEQ_MAX or usec > _U64_MAX:
        raise ParseError(f"kmsg record: SEQ over 2**63 or USEC over 2**64: {_show(header)}")
    continuation: list[str] = []
    for line in rest:
        if not line.startswith(b" "):
            raise ParseError(f"kmsg record: continuation line does not start with a space: {_show(line)}")
        continuation.append(_unescape(line[1:]))
    return KmsgRecord(
        prio=prio,
        facility=prio >> 3,
        level=prio & 7,
        seq=seq,
        usec=usec,
        flags=match[4].decode("ascii", "replace"),
        text=_unescape(text),
        continuation=tuple(continuation),
    )


def _unescape(data: bytes) -> str:
    raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), data) if b"\\x" in data else data
    # NUL cannot be in a COMM or a message (C strings); drop it rather than carry it to storage.
    return raw.replace(b"\0", b"").decode("utf-8", "replace")


def _show(data: bytes) -> str:
    """A short, printable quote of hostile bytes for an error message."""
    return repr(data[:80].decode("utf-8", "replace")) + ("..." if len(data) > 80 else "")
