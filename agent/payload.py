"""Ingest payload, schema 1, exactly as docs/api.md writes it.

Frozen, slotted dataclasses: the agent's facts. `Payload.to_json()` is the one place the
payload becomes JSON, so `agent --once --stdout`, the spool and the transport all print the
same bytes for the same facts. The backend validates the same shape with pydantic
(app/ingest/schema.py); tests/test_contract.py feeds one into the other.

Optional extensions (absent keys keep older payloads valid, docs/api.md):
- `health`: the agent loop's own figures (#4), sent with each batch, absent from `--once --stdout`;
- `state.consistency`: the consistency verdict of this sample (agent/kernel/consistency.py, #16);
- `events[].evidence`: on a `sigbus` event, how the kill was known — `kernel_line`, `tracefs` or
  `vmm_exit` (a fatal-mode guest kill after the boot's one kernel line was spent, #16).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

SCHEMA = 1


class StrEnum(str, Enum):
    """`enum.StrEnum` (Python 3.11) for the agent's Python 3.9 (issue 17): a member is a `str` equal
    to its value, and `str()`/`format()` give the value, not `Mode.OFF`."""

    def __str__(self) -> str:
        return str(self.value)


class Mode(StrEnum):
    OFF = "off"
    WARN = "warn"
    FATAL = "fatal"
    RATELIMIT = "ratelimit"


class Action(StrEnum):
    """What the host did with one trap (docs/kernel.md)."""

    WARN = "warn"
    THROTTLE = "throttle"
    SIGBUS = "sigbus"
    RATELIMIT = "ratelimit"
    REFLECT = "reflect"
    OOPS = "oops"
    UNKNOWN = "unknown"


class Kind(StrEnum):
    SPLIT_LOCK = "split_lock"
    BUS_LOCK = "bus_lock"


class Source(StrEnum):
    KMSG = "kmsg"
    TRACEFS = "tracefs"
    IMPORT = "import"


class GapReason(StrEnum):
    OVERRUN = "overrun"
    SUPPRESSED = "suppressed"
    SPOOL_FULL = "spool_full"
    FORGED = "forged"


def format_time(at: datetime) -> str:
    """ISO 8601 UTC with a `Z`, microseconds kept: the payload's one time format."""
    if at.tzinfo is None:
        raise ValueError("payload times must be timezone-aware")
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class HostInfo:
    name: str
    boot_id: str
    kernel: str
    cpu_model: str
    agent_version: str


@dataclass(frozen=True)
class CpuState:
    cpu: int
    test_ctrl: int | None
    sld_on: bool | None
    bld_on: bool | None
    error: str | None = None


@dataclass(frozen=True)
class HostState:
    observed_at: datetime
    mode: Mode
    ratelimit: int | None
    mitigate: Literal[0, 1] | None
    sld_supported: bool
    bld_supported: bool
    cpus: tuple[CpuState, ...]
    consistency: dict[str, Any] | None = None  # {"verdict", "reason", "details"} (#16)


@dataclass(frozen=True)
class Guest:
    name: str
    uuid: str | None
    vmm: str
    vcpu: int | None


@dataclass(frozen=True)
class Event:
    source: Source
    seq: int
    time: datetime
    kind: Kind
    comm: str
    tid: int
    tgid: int | None
    address: str | None
    count: int
    action: Action
    guest: Guest | None = None
    evidence: str | None = None  # sigbus only: kernel_line | tracefs | vmm_exit (#16)


@dataclass(frozen=True)
class Gap:
    source: Source
    first_seq: int
    last_seq: int
    count: int
    reason: GapReason


@dataclass(frozen=True)
class Payload:
    host: HostInfo
    state: HostState | None
    events: tuple[Event, ...] = ()
    gaps: tuple[Gap, ...] = ()
    health: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schema": SCHEMA,
            "host": asdict(self.host),
            "state": _state_dict(self.state) if self.state is not None else None,
            "events": [_event_dict(e) for e in self.events],
            "gaps": [_plain(asdict(g)) for g in self.gaps],
        }
        if self.health is not None:
            body["health"] = self.health
        return body

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    # StrEnum members serialise as their value already; datetimes need our format.
    return {k: (format_time(v) if isinstance(v, datetime) else v) for k, v in d.items()}


def _state_dict(state: HostState) -> dict[str, Any]:
    return {
        "observed_at": format_time(state.observed_at),
        "mode": str(state.mode),
        "ratelimit": state.ratelimit,
        "mitigate": state.mitigate,
        "sld_supported": state.sld_supported,
        "bld_supported": state.bld_supported,
        "cpus": [asdict(c) for c in state.cpus],
        **({"consistency": state.consistency} if state.consistency is not None else {}),
    }


def _event_dict(event: Event) -> dict[str, Any]:
    return {
        "source": str(event.source),
        "seq": event.seq,
        "time": format_time(event.time),
        "kind": str(event.kind),
        "comm": event.comm,
        "tid": event.tid,
        "tgid": event.tgid,
        "address": event.address,
        "count": event.count,
        "action": str(event.action),
        "guest": asdict(event.guest) if event.guest is not None else None,
        **({"evidence": event.evidence} if event.evidence is not None else {}),
    }
