"""Payload → row dicts for app/ingest/write.py: pure (no database, no clock).

What is decided here, once, without I/O:
- the event rows of a batch, deduplicated on (source, seq) within the batch (first wins);
- one guest row per guest name (earliest/latest sighting, last action, when sigbus killed it
  and how that kill was known: `evidence`, #16);
- the state summary: per-CPU counts and the signature that tells whether the state changed
  (the consistency verdict is the agent's: it arrives in `state.consistency`, #16);
- rollup rows (sums per bucket and key) from the event rows actually inserted.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

from pydantic_core import TzInfo

from app.ingest.schema import CpuIn, PayloadIn, StateIn

NO_GUEST = 0  # rollups key "no guest" as 0: a NULL would never match the upsert key
_IMPLIED_EVIDENCE = {"kmsg": "kernel_line", "tracefs": "tracefs", "import": "kernel_line"}


@dataclass(slots=True)
class Rows:
    host: dict[str, Any]
    received_at: datetime
    state: StateIn | None
    guests: list[dict[str, Any]]  # unique by name, sorted by name (a stable lock order)
    # Event rows without host_id/guest_id (write.py adds them); event_guests[i] is the
    # guest name of events[i] (None: a host process).
    events: list[dict[str, Any]]
    event_guests: list[str | None]
    gaps: list[dict[str, Any]]
    health: dict[str, Any] | None
    received: int = 0  # events in the payload, duplicates within it included
    # Every event and gap comes from `splitwatch import` (which sends no state): old text
    # logs, not the running agent, so the host's current identity must not follow it.
    import_only: bool = False


def build_rows(payload: PayloadIn, received_at: datetime) -> Rows:
    """The batch's rows. Consumes payload.events: their dicts become the event rows."""
    host = payload.host
    boot_id = host.boot_id
    events: list[dict[str, Any]] = []
    event_guests: list[str | None] = []
    seen: set[tuple[str, int]] = set()
    guests: dict[str, dict[str, Any]] = {}
    for e in payload.events:
        key = (e["source"], e["seq"])
        if key in seen:
            continue
        seen.add(key)
        at = e["time"]
        action = e["action"]
        # The validated dict becomes the row in place (a fresh 14-key dict per event costs
        # more than these few stores); its nested guest moves out to vcpu, vmm and the name.
        row_: dict[str, Any] = e  # type: ignore[assignment]
        g = row_.pop("guest")
        # How a sigbus kill was known: the agent says so (#16); older agents imply it by source.
        evidence = row_.pop("evidence", None) or _IMPLIED_EVIDENCE.get(e["source"])
        row_["boot_id"] = boot_id
        row_["received_at"] = received_at
        if g is None:
            row_["vcpu"] = row_["vmm"] = None
        else:
            row_["vcpu"] = g["vcpu"]
            row_["vmm"] = g["vmm"]
        events.append(row_)
        if g is None:
            event_guests.append(None)
            continue
        name = g["name"]
        event_guests.append(name)
        row = guests.get(name)
        killed_at = at if action == "sigbus" else None
        killed_by = evidence if killed_at is not None else None
        if row is None:
            guests[name] = {
                "name": name,
                "uuid": g["uuid"],
                "vmm": g["vmm"],
                "first_seen_at": at,
                "last_seen_at": at,
                "last_action": action,
                "killed_at": killed_at,
                "killed_by": killed_by,
            }
            continue
        if at < row["first_seen_at"]:
            row["first_seen_at"] = at
        if at >= row["last_seen_at"]:
            row["last_seen_at"] = at
            row["last_action"] = action
            row["vmm"] = g["vmm"]
            if g["uuid"] is not None:
                row["uuid"] = g["uuid"]
        if killed_at is not None and (row["killed_at"] is None or killed_at > row["killed_at"]):
            row["killed_at"] = killed_at
            row["killed_by"] = killed_by
        if row["uuid"] is None and g["uuid"] is not None:
            row["uuid"] = g["uuid"]
    gaps = [
        {
            "boot_id": boot_id,
            "source": g.source,
            "first_seq": g.first_seq,
            "last_seq": g.last_seq,
            "count": g.count,
            "reason": g.reason,
            "received_at": received_at,
        }
        for g in payload.gaps
    ]
    return Rows(
        host={
            "name": host.name,
            "boot_id": host.boot_id,
            "kernel": host.kernel,
            "cpu_model": host.cpu_model,
            "agent_version": host.agent_version,
        },
        received_at=received_at,
        state=payload.state,
        guests=[guests[name] for name in sorted(guests)],
        events=events,
        event_guests=event_guests,
        gaps=gaps,
        health=payload.health,
        received=len(payload.events),
        import_only=_import_only(payload),
    )


def _import_only(payload: PayloadIn) -> bool:
    if payload.state is not None or not (payload.events or payload.gaps):
        return False
    return all(e["source"] == "import" for e in payload.events) and all(
        g.source == "import" for g in payload.gaps
    )


# ----------------------------------------------------------------------------- state


def cpu_dicts(cpus: Sequence[CpuIn]) -> list[dict[str, Any]]:
    return [
        {"cpu": c.cpu, "test_ctrl": c.test_ctrl, "sld_on": c.sld_on, "bld_on": c.bld_on, "error": c.error}
        for c in sorted(cpus, key=lambda c: c.cpu)
    ]


@dataclass(frozen=True, slots=True)
class CpuCounts:
    total: int
    on: int
    off: int
    error: int


def cpu_counts(cpus: Sequence[CpuIn]) -> CpuCounts:
    """on/off by sld_on (split-lock #AC detection per core); error when it could not be read."""
    on = off = error = 0
    for c in cpus:
        if c.error is not None or c.sld_on is None:
            error += 1
        elif c.sld_on:
            on += 1
        else:
            off += 1
    return CpuCounts(total=len(cpus), on=on, off=off, error=error)


def state_signature(
    boot_id: str, kernel: str, mode: str | None, ratelimit: int | None, mitigate: int | None,
    sld_supported: bool | None, bld_supported: bool | None, cpus: Iterable[Mapping[str, Any]],
    verdict: str | None,
) -> tuple[Any, ...]:  # fmt: skip
    """What must differ for a new host_state row: mode, ratelimit, mitigate, support flags,
    per-CPU sld_on/bld_on/error-set, kernel, boot_id and the verdict (test_ctrl's other bits
    and the verdict's reason words do not)."""
    per_cpu = tuple(
        sorted((int(c["cpu"]), c.get("sld_on"), c.get("bld_on"), c.get("error") is not None) for c in cpus)
    )
    return (
        boot_id,
        kernel,
        mode,
        ratelimit,
        mitigate,
        bool(sld_supported),
        bool(bld_supported),
        per_cpu,
        verdict,
    )


# ----------------------------------------------------------------------------- rollups


def rollup_rows(events: Iterable[Mapping[str, Any]], host_id: int, step_s: int) -> list[dict[str, Any]]:
    """Sums of count and of rows per (bucket, guest_id, kind, action, source), sorted by key.

    Events carry `guest_id` (None for host processes). Buckets start at multiples of step_s
    since the epoch; in UTC that is the minute (60) or the hour (3600).
    """
    if step_s not in (60, 3600):
        raise ValueError(f"rollups exist for 60 s and 3600 s, not {step_s} s")
    return rollups(((e, e["guest_id"]) for e in events), host_id)[step_s]


def rollups(
    events: Iterable[tuple[Mapping[str, Any], int | None]], host_id: int
) -> dict[int, list[dict[str, Any]]]:
    """{60: rollup_1m rows, 3600: rollup_1h rows} from (event row, guest_id) pairs.

    Minutes are summed first, keyed by the UTC minute's calendar fields (year to minute: five
    attribute reads, where an epoch second per event cost two thirds of a 1000-event batch's
    rollups, #13); hours are summed from the minutes. Times must be aware; any offset is
    read as its UTC instant.
    """
    minutes: dict[tuple[int, int, int, int, int, int, str, str, str], list[int]] = {}
    utc: object = UTC  # the last tzinfo seen to be a fixed offset of 0: its fields are UTC
    for e, gid in events:
        at = e["time"]
        if at.tzinfo is not utc:
            if _fixed_utc(at.tzinfo):
                utc = at.tzinfo
            else:
                at = at.astimezone(UTC)
        key = (
            at.year, at.month, at.day, at.hour, at.minute,
            NO_GUEST if gid is None else gid, e["kind"], e["action"], e["source"],
        )  # fmt: skip
        acc = minutes.get(key)
        if acc is None:
            minutes[key] = [e["count"], 1]
        else:
            acc[0] += e["count"]
            acc[1] += 1
    hours = fold_sums(minutes, lambda k: (k[0], k[1], k[2], k[3], 0, *k[5:]))
    return {60: _rows(minutes, host_id), 3600: _rows(hours, host_id)}


K = TypeVar("K", bound=Hashable)


def fold_sums(sums: Mapping[K, list[int]], coarser: Callable[[K], K]) -> dict[K, list[int]]:
    """[count, events] sums per key added up per `coarser(key)`: a minute's into its hour's.
    Here and in the SQLite writer's rollups (app/ingest/write.py), whose keys are text."""
    out: dict[K, list[int]] = {}
    for key, (count, n) in sums.items():
        folded = coarser(key)
        acc = out.get(folded)
        if acc is None:
            out[folded] = [count, n]
        else:
            acc[0] += count
            acc[1] += n
    return out


def _fixed_utc(zone: object) -> bool:
    """A time zone of constant offset 0 (UTC, or the schema's parsed `Z` / `+00:00`)."""
    return isinstance(zone, timezone | TzInfo) and zone.utcoffset(None) == _ZERO


_ZERO = timedelta(0)


def _rows(
    sums: Mapping[tuple[int, int, int, int, int, int, str, str, str], list[int]], host_id: int
) -> list[dict[str, Any]]:
    return [
        {
            "bucket": datetime(key[0], key[1], key[2], key[3], key[4], tzinfo=UTC),
            "host_id": host_id,
            "guest_id": key[5],
            "kind": key[6],
            "action": key[7],
            "source": key[8],
            "count": acc[0],
            "events": acc[1],
        }
        for key, acc in sorted(sums.items())
    ]
