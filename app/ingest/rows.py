"""Payload → row dicts for app/ingest/write.py: pure (no database, no clock).

What is decided here, once, without I/O:
- the event rows of a batch, deduplicated on (source, seq) within the batch (first wins);
- one guest row per guest name (earliest/latest sighting, last action, when sigbus killed it);
- the state summary: per-CPU counts, the signature that tells whether the state changed,
  and the next drift streaks from the previous ones;
- rollup rows (sums per bucket and key) from the event rows actually inserted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.ingest.schema import CpuIn, PayloadIn, StateIn

NO_GUEST = 0  # rollups key "no guest" as 0: a NULL would never match the upsert key


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
        if row is None:
            guests[name] = {
                "name": name,
                "uuid": g["uuid"],
                "vmm": g["vmm"],
                "first_seen_at": at,
                "last_seen_at": at,
                "last_action": action,
                "killed_at": killed_at,
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


def detection_expected(state: StateIn) -> bool:
    """The mode says split-lock detection should be on on every core (DESIGN.md §1)."""
    return state.mode in ("warn", "fatal") and state.sld_supported


def next_streaks(previous: Mapping[str, int], state: StateIn) -> dict[str, int]:
    """Consecutive samples each core read off while the mode says on.

    +1 for a core reading sld_on false while detection is expected; 0 when it reads on;
    a core whose MSR could not be read keeps its streak (no evidence either way); every
    streak resets when the mode no longer expects detection.
    """
    if not detection_expected(state):
        return {}
    out: dict[str, int] = {}
    for c in state.cpus:
        key = str(c.cpu)
        prev = int(previous.get(key, 0))
        if c.error is not None or c.sld_on is None:
            if prev:
                out[key] = prev
        elif c.sld_on:
            continue
        else:
            out[key] = prev + 1
    return out


def drifting(streaks: Mapping[str, int], threshold: int) -> list[int]:
    return sorted(int(cpu) for cpu, n in streaks.items() if n >= threshold)


def state_signature(
    boot_id: str, kernel: str, mode: str | None, ratelimit: int | None, mitigate: int | None,
    sld_supported: bool | None, bld_supported: bool | None, cpus: Iterable[Mapping[str, Any]], drift: bool,
) -> tuple[Any, ...]:  # fmt: skip
    """What must differ for a new host_state row: mode, ratelimit, mitigate, support flags,
    per-CPU sld_on/bld_on/error-set, kernel, boot_id and drift (test_ctrl's other bits do not)."""
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
        bool(drift),
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

    Minutes are summed first, keyed by epoch seconds (cheaper than a datetime per event);
    hours are summed from the minutes.
    """
    minutes: dict[tuple[int, int, str, str, str], list[int]] = {}
    for e, gid in events:
        key = (
            # Whole seconds first: a float timestamp of year 9999 has ~30 µs resolution, so
            # 23:59:59.999999 would round up into year 10000 (issue 14: a 500 that the agent
            # retried forever). A microsecond-free time converts exactly.
            int(e["time"].replace(microsecond=0).timestamp()) // 60 * 60,
            NO_GUEST if gid is None else gid,
            e["kind"],
            e["action"],
            e["source"],
        )
        acc = minutes.get(key)
        if acc is None:
            minutes[key] = [e["count"], 1]
        else:
            acc[0] += e["count"]
            acc[1] += 1
    hours: dict[tuple[int, int, str, str, str], list[int]] = {}
    for (minute, gid, kind, action, source), (count, n) in minutes.items():
        hkey = (minute // 3600 * 3600, gid, kind, action, source)
        hacc = hours.get(hkey)
        if hacc is None:
            hours[hkey] = [count, n]
        else:
            hacc[0] += count
            hacc[1] += n
    return {60: _rows(minutes, host_id), 3600: _rows(hours, host_id)}


def _rows(sums: Mapping[tuple[int, int, str, str, str], list[int]], host_id: int) -> list[dict[str, Any]]:
    return [
        {
            "bucket": datetime.fromtimestamp(key[0], UTC),
            "host_id": host_id,
            "guest_id": key[1],
            "kind": key[2],
            "action": key[3],
            "source": key[4],
            "count": acc[0],
            "events": acc[1],
        }
        for key, acc in sorted(sums.items())
    ]
