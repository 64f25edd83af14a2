"""The agent's durable queue on disk: what was collected stays here until the backend said 2xx (#4).

Invariants
  I1  A record is on disk (file and directory fsynced) before append() returns; the agent
      advances its kmsg cursor only after that, so a crash never loses a record it read.
  I2  A record leaves the queue only through ack() (the backend took it), set_aside() (the
      backend refused it with 422: it is kept in rejected/ for a human), or a drop by the size
      limit. A drop is never silent: the dropped payloads become gaps (reason spool_full; per
      host/boot and source the seq range of the events they held and count = number of events;
      their own gaps are carried over too) in a ledger that is sent with the next batch.
  I3  A segment file is deleted only when every readable record in it is acknowledged.
  I4  A corrupt record (bad header, length or checksum) is skipped with a logged warning and
      counted in `corrupt_records`; it never raises and never blocks the records after it.
  I5  One process per spool directory (an flock on `lock`, released by the kernel on death).
  The spool is single-threaded: the agent loop appends, peeks and acks in turn.

Layout of the spool directory
  <first id, 16 digits>.seg   one file per append() call (one collection pass): its records
  <...>.seg.tmp               a segment being written (deleted on open: it was never committed)
  meta.json                   acked ids of segments still present, the drop ledger, next id,
                              segments whose drop is decided (written atomically: tmp, fsync, rename)
  rejected/                   batches the backend answered 422, one JSON file each, with its reason
  lock                        flock of the running agent
  Any other file is left alone and reported once.

Record frame (little endian): magic b"SWR1", id u64, appended_at f64 (unix time), length u32,
crc32 of the body u32, crc32 of the 28 bytes before it u32 — then `length` bytes of body (a
payload's JSON). A bad header crc makes the reader search for the next magic, so one flipped
byte costs one record, not the rest of the file.

What a crash does at each step
  append: crash before the rename   -> a .tmp file, deleted on open; the cursor did not move,
                                       the next pass reads the same records again.
          crash after the rename    -> the segment is complete; the cursor may not have moved,
                                       so the next pass sends the records again: ingest is
                                       idempotent on (host, boot_id, source, seq).
  ack:    crash before meta.json    -> the records are sent again (idempotent ingest).
          crash after meta.json     -> fully acked segments still on disk are deleted on open.
  drop:   meta.json first records the ledger gaps and the doomed segment names; a crash before
          it keeps the segments (nothing dropped yet); a crash after it finishes the unlinks on
          open, so no record is both kept and counted as dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.errors import SpoolError

log = logging.getLogger("splitwatch.agent.spool")

MAGIC = b"SWR1"
_HEAD = struct.Struct("<4sQdII")  # magic, id, appended_at, length, body crc
_HCRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _HCRC.size  # 32
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a length beyond this is a corrupt header, not a record
META = "meta.json"
SEGMENT_SUFFIX = ".seg"
# A ledger entry holds at most this many gaps; more start a new entry, so one POST stays small.
LEDGER_ENTRY_MAX_GAPS = 1000


@dataclass(frozen=True)
class SpoolRecord:
    id: int
    body: bytes
    appended_at: float


@dataclass
class _Entry:
    id: int
    segment: str
    offset: int  # of the body
    length: int
    appended_at: float


@dataclass
class _Segment:
    name: str
    size: int
    ids: list[int] = field(default_factory=list)


def encode_record(record_id: int, body: bytes, appended_at: float) -> bytes:
    head = _HEAD.pack(MAGIC, record_id, appended_at, len(body), zlib.crc32(body))
    return head + _HCRC.pack(zlib.crc32(head)) + body


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def scan_segment(data: bytes, name: str) -> tuple[list[tuple[int, int, int, float]], int]:
    """Valid records of a segment's bytes as (id, body offset, length, appended_at), and how many
    corrupt stretches were skipped (each logged)."""
    found: list[tuple[int, int, int, float]] = []
    corrupt = 0
    pos = 0
    end = len(data)
    while pos < end:
        problem: str | None = None
        if end - pos < HEADER_SIZE:
            problem = f"{end - pos} trailing bytes, shorter than a record header (truncated file)"
        else:
            magic, rid, at, length, crc = _HEAD.unpack_from(data, pos)
            (hcrc,) = _HCRC.unpack_from(data, pos + _HEAD.size)
            if magic != MAGIC or hcrc != zlib.crc32(data[pos : pos + _HEAD.size]):
                problem = "bad record header"
            elif length > MAX_RECORD_BYTES or pos + HEADER_SIZE + length > end:
                problem = f"record {rid} claims {length} bytes but the file ends first (truncated file)"
            elif zlib.crc32(data[pos + HEADER_SIZE : pos + HEADER_SIZE + length]) != crc:
                problem = f"record {rid} fails its checksum"
                # The header is sound, so its length is trustworthy: skip exactly this record.
                corrupt += 1
                log.warning(
                    "spool segment %s: %s at byte %d: skipped; the records around it are kept",
                    name,
                    problem,
                    pos,
                )
                pos += HEADER_SIZE + length
                continue
            else:
                found.append((rid, pos + HEADER_SIZE, length, at))
                pos += HEADER_SIZE + length
                continue
        corrupt += 1
        nxt = data.find(MAGIC, pos + 1)
        log.warning(
            "spool segment %s: %s at byte %d: skipped %s; the records around it are kept",
            name,
            problem,
            pos,
            "to the end of the file" if nxt < 0 else f"{nxt - pos} bytes to the next record",
        )
        if nxt < 0:
            break
        pos = nxt
    return found, corrupt


def gaps_of_dropped(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The gaps a dropped payload leaves: per source, the seq range and number of its events
    (reason spool_full), then the payload's own gaps, which must not be lost with it."""
    by_source: dict[str, list[int]] = {}
    for event in body.get("events") or []:
        by_source.setdefault(str(event["source"]), []).append(int(event["seq"]))
    gaps = [
        {
            "source": source,
            "first_seq": min(seqs),
            "last_seq": max(seqs),
            "count": len(seqs),
            "reason": "spool_full",
        }
        for source, seqs in by_source.items()
    ]
    gaps.extend(dict(g) for g in body.get("gaps") or [])
    return gaps


def _host_key(host: dict[str, Any]) -> str:
    return f"{host.get('name')}\x00{host.get('boot_id')}"


class Spool:
    """A bounded, durable FIFO of payload bodies (bytes) in `directory`; see the module docstring."""

    def __init__(self, directory: Path, *, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._clock = clock
        self.corrupt_records = 0
        self.dropped_payloads = 0
        self.dropped_events = 0
        self._pending: dict[int, _Entry] = {}  # insertion order = id order
        self._segments: dict[str, _Segment] = {}  # insertion order = age
        self._acked: set[int] = set()
        self._ledger: list[dict[str, Any]] = []
        self._next_id = 1
        self._bytes = 0
        self._lock_fd: int | None = None
        self._reported_strangers: set[str] = set()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / "rejected").mkdir(exist_ok=True)
            self._lock()
            self._open()
        except OSError as exc:
            self.close()
            raise SpoolError(
                f"spool directory {self.directory}: {exc.strerror or exc}: "
                "make it writable by the agent's user (systemd: StateDirectory/ReadWritePaths)"
            ) from exc

    # -- opening ---------------------------------------------------------------------------

    def _lock(self) -> None:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(
                f"spool directory {self.directory} is in use by another splitwatch agent: "
                "stop it, or give this one its own --spool directory"
            ) from None
        self._lock_fd = fd

    def _read_meta(self) -> dict[str, Any]:
        path = self.directory / META
        try:
            meta = json.loads(path.read_bytes())
            if not isinstance(meta, dict):
                raise ValueError("not an object")
            return meta
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as exc:
            # Acks are lost (records are resent: ingest is idempotent); the ledger is lost too,
            # and says so, because its gaps cannot be recovered.
            self.corrupt_records += 1
            log.warning(
                "spool %s is corrupt (%s): acknowledgements and pending drop gaps in it are lost; "
                "unacknowledged records will be sent again",
                path,
                exc,
            )
            return {}

    def _open(self) -> None:
        meta = self._read_meta()
        self._acked = {int(i) for i in meta.get("acked", [])}
        self._ledger = [e for e in meta.get("ledger", []) if isinstance(e, dict)]
        self._next_id = max(1, int(meta.get("next_id", 1)))
        doomed = set(meta.get("dropping", []))
        names = sorted(os.listdir(self.directory))
        for name in names:
            path = self.directory / name
            if name.endswith(SEGMENT_SUFFIX + ".tmp") or name == META + ".tmp":
                # Never renamed: that pass was not committed (its cursor did not move).
                path.unlink()
                continue
            if name in doomed:
                path.unlink()  # a drop decided before a crash: its gaps are in the ledger
                continue
            if not name.endswith(SEGMENT_SUFFIX):
                self._report_stranger(name)
                continue
            self._load_segment(name)
        # Names sort by first id, which is also age; ids inside a damaged file may not.
        self._pending = dict(sorted(self._pending.items()))
        self._next_id = max(self._next_id, *(e["id"] + 1 for e in self._ledger), 1)
        # Forget acks of records that no longer exist; delete fully acked segments (I3).
        self._acked &= {rid for seg in self._segments.values() for rid in seg.ids}
        for seg in list(self._segments.values()):
            self._delete_if_done(seg)
        _fsync_dir(self.directory)
        self._write_meta()

    def _report_stranger(self, name: str) -> None:
        if name in ("lock", "rejected") or name in self._reported_strangers:
            return
        self._reported_strangers.add(name)
        log.warning(
            "spool directory %s holds %r, which is not a spool file: left alone; "
            "remove it if nothing else needs it",
            self.directory,
            name,
        )

    def _load_segment(self, name: str) -> None:
        data = (self.directory / name).read_bytes()
        found, corrupt = scan_segment(data, name)
        self.corrupt_records += corrupt
        seg = _Segment(name, len(data))
        for rid, offset, length, at in sorted(found):
            if rid in self._pending or rid in seg.ids:
                continue  # a duplicate id can only come from a damaged file: first copy wins
            seg.ids.append(rid)
            self._next_id = max(self._next_id, rid + 1)
            if rid not in self._acked:
                self._pending[rid] = _Entry(rid, name, offset, length, at)
        self._segments[name] = seg
        self._bytes += seg.size

    # -- figures ---------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Records waiting to be sent (ledger entries included)."""
        return len(self._pending) + len(self._ledger)

    @property
    def size_bytes(self) -> int:
        """Bytes of segment files on disk."""
        return self._bytes

    @property
    def oldest_at(self) -> float | None:
        """Unix time the oldest unsent record was appended, None when nothing waits."""
        times = [float(e["at"]) for e in self._ledger]
        if self._pending:
            times.append(next(iter(self._pending.values())).appended_at)
        return min(times) if times else None

    @property
    def rejected_batches(self) -> int:
        try:
            return sum(1 for n in os.listdir(self.directory / "rejected") if n.endswith(".json"))
        except OSError:
            return 0

    # -- append ----------------------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> list[int]:
        """Write `records` durably as one segment (one fsync for the file, one for the directory),
        then apply the size limit. Returns their ids."""
        if not records:
            return []
        now = self._clock()
        first = self._next_id
        ids = list(range(first, first + len(records)))
        name = f"{first:016d}{SEGMENT_SUFFIX}"
        chunks: list[bytes] = []
        entries: list[_Entry] = []
        offset = 0
        for rid, body in zip(ids, records):
            frame = encode_record(rid, body, now)
            entries.append(_Entry(rid, name, offset + HEADER_SIZE, len(body), now))
            chunks.append(frame)
            offset += len(frame)
        try:
            _write_atomic(self.directory / name, b"".join(chunks))
        except OSError as exc:
            with contextlib.suppress(OSError):
                (self.directory / (name + ".tmp")).unlink()
            raise SpoolError(
                f"cannot write spool segment {self.directory / name}: {exc.strerror or exc}: "
                "free disk space or fix the directory's permissions; the pass will be read again"
            ) from exc
        self._next_id = ids[-1] + 1
        self._segments[name] = _Segment(name, offset, list(ids))
        self._bytes += offset
        for entry in entries:
            self._pending[entry.id] = entry
        self._enforce_limit()
        return ids

    def _enforce_limit(self) -> None:
        doomed: list[_Segment] = []
        size = self._bytes
        for seg in self._segments.values():
            if size <= self.max_bytes:
                break
            doomed.append(seg)
            size -= seg.size
        if not doomed:
            return
        dropped_ids = [rid for seg in doomed for rid in seg.ids if rid in self._pending]
        payloads = 0
        events = 0
        ledger = [dict(e, gaps=list(e["gaps"])) for e in self._ledger]
        for rid in dropped_ids:
            try:
                body = json.loads(self._read_body(self._pending[rid]))
            except (OSError, ValueError) as exc:
                self.corrupt_records += 1
                log.warning("spool record %d could not be read while dropping it (%s): skipped", rid, exc)
                continue
            gaps = gaps_of_dropped(body)
            payloads += 1
            events += len(body.get("events") or [])
            if gaps:
                self._ledger_add(ledger, body.get("host") or {}, gaps)
        # Decide durably first (ledger + doomed names), then unlink: see "drop" in the docstring.
        self._write_meta(ledger=ledger, dropping=[seg.name for seg in doomed])
        self._ledger = ledger
        for seg in doomed:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / seg.name).unlink()
            self._forget_segment(seg)
        _fsync_dir(self.directory)
        self._write_meta()
        self.dropped_payloads += payloads
        self.dropped_events += events
        log.warning(
            "spool %s is over its limit of %d bytes: dropped the %d oldest unsent payload(s) holding "
            "%d event(s); they will be reported to the backend as spool_full gaps. Raise the spool "
            "limit or fix the connection to the backend",
            self.directory,
            self.max_bytes,
            payloads,
            events,
        )

    def _ledger_add(
        self, ledger: list[dict[str, Any]], host: dict[str, Any], gaps: list[dict[str, Any]]
    ) -> None:
        key = _host_key(host)
        for entry in reversed(ledger):
            if _host_key(entry["host"]) == key and len(entry["gaps"]) + len(gaps) <= LEDGER_ENTRY_MAX_GAPS:
                entry["gaps"].extend(gaps)
                return
        ledger.append({"id": self._next_id, "at": self._clock(), "host": host, "gaps": gaps})
        self._next_id += 1

    def _forget_segment(self, seg: _Segment) -> None:
        for rid in seg.ids:
            self._pending.pop(rid, None)
            self._acked.discard(rid)
        self._segments.pop(seg.name, None)
        self._bytes -= seg.size

    # -- reading ---------------------------------------------------------------------------

    def _read_body(self, entry: _Entry) -> bytes:
        with open(self.directory / entry.segment, "rb") as f:
            f.seek(entry.offset - HEADER_SIZE)
            frame = f.read(HEADER_SIZE + entry.length)
        found, _ = scan_segment(frame, entry.segment) if len(frame) >= HEADER_SIZE else ([], 1)
        if not found or found[0][0] != entry.id:
            raise ValueError(f"record {entry.id} in {entry.segment} no longer passes its checksum")
        return frame[HEADER_SIZE:]

    def peek(self, max_records: int, max_bytes: int) -> list[SpoolRecord]:
        """The oldest unsent records, ledger entries first, in order: at most `max_records` and
        `max_bytes` of bodies, but always at least one when any wait."""
        out: list[SpoolRecord] = []
        total = 0
        for entry in self._ledger:
            body = json.dumps(
                {"schema": 1, "host": entry["host"], "state": None, "events": [], "gaps": entry["gaps"]},
                separators=(",", ":"),
            ).encode()
            if out and (len(out) >= max_records or total + len(body) > max_bytes):
                return out
            out.append(SpoolRecord(int(entry["id"]), body, float(entry["at"])))
            total += len(body)
        rotten: list[int] = []
        for rec in list(self._pending.values()):
            if out and (len(out) >= max_records or total + rec.length > max_bytes):
                break
            try:
                body = self._read_body(rec)
            except (OSError, ValueError) as exc:
                self.corrupt_records += 1
                log.warning("spool record %d is unreadable (%s): skipped", rec.id, exc)
                rotten.append(rec.id)
                continue
            out.append(SpoolRecord(rec.id, body, rec.appended_at))
            total += rec.length
        if rotten:
            self.ack(rotten)  # I4: never block the queue behind a record that cannot be read
        return out

    # -- removal ---------------------------------------------------------------------------

    def ack(self, ids: Iterable[int]) -> None:
        """The backend took these records: forget them, delete segments left with none (I3)."""
        wanted = set(ids)
        if not wanted:
            return
        self._ledger = [e for e in self._ledger if int(e["id"]) not in wanted]
        touched: set[str] = set()
        for rid in wanted:
            entry = self._pending.pop(rid, None)
            if entry is not None:
                self._acked.add(rid)
                touched.add(entry.segment)
        for name in sorted(touched):
            seg = self._segments.get(name)
            if seg is not None:
                self._delete_if_done(seg)
        try:
            self._write_meta()
        except OSError as exc:
            raise SpoolError(
                f"cannot record acknowledgements in {self.directory / META}: {exc.strerror or exc}: "
                "free disk space; the records will be sent again (harmless)"
            ) from exc

    def _delete_if_done(self, seg: _Segment) -> None:
        if all(rid in self._acked for rid in seg.ids):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / seg.name).unlink()
            self._forget_segment(seg)

    def set_aside(self, ids: Sequence[int], reason: str) -> Path:
        """Move records the backend refused (422) to rejected/ with its reason, then drop them
        from the queue: kept for a human, never retried forever."""
        wanted = set(ids)
        bodies: list[Any] = []
        for rec in self.peek(max_records=len(self._pending) + len(self._ledger), max_bytes=1 << 62):
            if rec.id in wanted:
                try:
                    bodies.append(json.loads(rec.body))
                except ValueError:
                    bodies.append(rec.body.decode("utf-8", "replace"))
        at = datetime.fromtimestamp(self._clock(), timezone.utc)
        path = self.directory / "rejected" / f"{at.strftime('%Y%m%dT%H%M%S.%fZ')}-{min(wanted)}.json"
        doc = {"rejected_at": at.isoformat(), "reason": reason, "ids": sorted(wanted), "payloads": bodies}
        try:
            _write_atomic(path, json.dumps(doc, indent=1).encode())
        except OSError as exc:
            raise SpoolError(
                f"cannot write {path}: {exc.strerror or exc}: free disk space; the batch stays queued"
            ) from exc
        self.ack(wanted)
        return path

    # -- meta ------------------------------------------------------------------------------

    def _write_meta(
        self, *, ledger: list[dict[str, Any]] | None = None, dropping: list[str] | None = None
    ) -> None:
        doc = {
            "next_id": self._next_id,
            "acked": sorted(self._acked),
            "ledger": self._ledger if ledger is None else ledger,
            "dropping": dropping or [],
        }
        _write_atomic(self.directory / META, json.dumps(doc, separators=(",", ":")).encode())

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
