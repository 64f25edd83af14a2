"""Ingest payload schema 1 (docs/api.md) as strict pydantic models: the HTTP edge.

Strict: JSON types are not coerced ("5" is not 5, 1.0 is not 1), every key of the schema is
required (as `agent.payload.Payload.to_json()` writes them all), unknown keys are refused
(the one optional extension is `health`), enums are the contract words, times are ISO 8601
UTC (`Z` or `+00:00`) and become aware datetimes, strings are bounded to their columns.
Optional additions (absent in older agents' payloads, which stay valid): `health`,
`state.consistency` (the agent's consistency verdict, #16) and `events[].evidence` (how a sigbus
kill was known, #16).
`parse_payload(body)` validates JSON bytes in one pass (pydantic-core parses and validates
without building Python dicts first).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    StringConstraints,
    WithJsonSchema,
    model_validator,
    with_config,
)
from pydantic_core import core_schema
from typing_extensions import TypedDict

from app.store.status import Verdict

SourceName = Literal["kmsg", "tracefs", "import"]
KindName = Literal["split_lock", "bus_lock"]
ActionName = Literal["warn", "throttle", "sigbus", "ratelimit", "reflect", "oops", "unknown"]
ModeName = Literal["off", "warn", "fatal", "ratelimit"]
GapReasonName = Literal["overrun", "suppressed", "spool_full", "forged"]
# The agent's verdict words (agent/kernel/consistency.py), one closed set: app/store/status.py.
VerdictName = Verdict
EvidenceName = Literal["kernel_line", "tracefs", "vmm_exit"]
MAX_DETAILS_CHARS = 4096

MAX_EVENTS = 50_000
MAX_GAPS = 10_000
MAX_CPUS = 8192
INT32 = 2**31 - 1
INT64 = 2**63 - 1


# ISO 8601 with an offset of 0 (`Z`, `+00:00`), checked inside pydantic-core: no Python call
# per event. A naive time fails `timezone_aware`, another offset `timezone_offset`. The string
# must start with a date and a `T`: pydantic alone would read "1700000000" as a Unix time
# (issue 14: the contract's times are ISO 8601 text).
ISO_DATETIME_START = r"^\d{4}-\d{2}-\d{2}[Tt ]"
UtcTime = Annotated[
    datetime,
    GetPydanticSchema(
        lambda _type, _handler: core_schema.chain_schema(
            [
                core_schema.str_schema(pattern=ISO_DATETIME_START, strict=True),
                core_schema.datetime_schema(tz_constraint=0, strict=False),  # lax: from the string
            ]
        )
    ),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _exactly_int(value: object) -> object:
    # Literal[1] alone takes `true` and `1.0` (they equal 1 in Python); the contract says 1.
    if type(value) is not int:
        raise ValueError("schema must be the integer 1")
    return value


def _finite(value: Any) -> Any:
    # NaN and ±Infinity are not JSON (PostgreSQL's json type refuses them, issue 14); health is
    # the agent's own free-form figures, so such a figure is stored as null rather than
    # refusing the batch (and with it the events).
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# The host's own facts: no control characters (they end up in logs, CSV and HTML).
_HOST_CHARS = r"^[^\x00-\x1f\x7f]*$"
# Observed text (COMM, guest names from a VMM's command line): a hostile process may put
# anything there, and refusing it would block the agent's spool; only NUL is refused, which
# PostgreSQL cannot store.
_DATA_CHARS = r"^[^\x00]*$"


def _s(min_length: int, max_length: int, pattern: str) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern)


HostName = Annotated[str, _s(1, 255, _HOST_CHARS)]
BootId = Annotated[str, _s(1, 64, _HOST_CHARS)]
KernelRelease = Annotated[str, _s(1, 128, _HOST_CHARS)]
CpuModel = Annotated[str, _s(0, 255, _HOST_CHARS)]
AgentVersion = Annotated[str, _s(1, 64, _HOST_CHARS)]
ErrorText = Annotated[str, _s(1, 500, _DATA_CHARS)]
GuestName = Annotated[str, _s(1, 255, _DATA_CHARS)]
GuestUuid = Annotated[str, _s(1, 64, _DATA_CHARS)]
VmmName = Annotated[str, _s(1, 32, _DATA_CHARS)]
Comm = Annotated[str, _s(0, 64, _DATA_CHARS)]
Address = Annotated[str, _s(3, 18, r"^0x[0-9a-f]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class HostIn(_Strict):
    name: HostName
    boot_id: BootId
    kernel: KernelRelease
    cpu_model: CpuModel
    agent_version: AgentVersion


class CpuIn(_Strict):
    cpu: int = Field(ge=0, le=MAX_CPUS * 8)
    test_ctrl: int | None = Field(ge=0, le=2**64 - 1)
    sld_on: bool | None
    bld_on: bool | None
    error: ErrorText | None


class ConsistencyIn(_Strict):
    """The agent's verdict on this sample (docs/api.md, docs/kernel.md "Consistency verdicts")."""

    verdict: VerdictName
    reason: Annotated[str, _s(1, 1000, _DATA_CHARS)]
    # Free-form like health: NaN and ±Infinity become null (PostgreSQL's json refuses them).
    details: Annotated[dict[str, Any], AfterValidator(_finite)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounded_details(self) -> ConsistencyIn:
        size = len(json.dumps(self.details, default=str))
        if size > MAX_DETAILS_CHARS:
            raise ValueError(f"consistency.details is {size} characters as JSON, over {MAX_DETAILS_CHARS}")
        return self


class StateIn(_Strict):
    observed_at: UtcTime
    mode: ModeName
    ratelimit: int | None = Field(ge=1, le=1000)
    mitigate: Literal[0, 1] | None
    sld_supported: bool
    bld_supported: bool
    cpus: list[CpuIn] = Field(max_length=MAX_CPUS)
    consistency: ConsistencyIn | None = None

    @model_validator(mode="after")
    def _unique_cpus(self) -> StateIn:
        seen: set[int] = set()
        for c in self.cpus:
            if c.cpu in seen:
                raise ValueError(f"cpu {c.cpu} appears twice in state.cpus: send each CPU once")
            seen.add(c.cpu)
        return self


# Events arrive by the thousand: they validate into TypedDicts (plain dicts, about half the
# cost of model instances), which the ingest path reads by key.
@with_config(ConfigDict(strict=True, extra="forbid"))
class GuestIn(TypedDict):
    name: GuestName
    uuid: GuestUuid | None
    vmm: VmmName
    vcpu: Annotated[int, Field(ge=0, le=INT32)] | None


@with_config(ConfigDict(strict=True, extra="forbid"))
class EventIn(TypedDict):
    source: SourceName
    seq: Annotated[int, Field(ge=0, le=INT64)]
    time: UtcTime
    kind: KindName
    comm: Comm
    tid: Annotated[int, Field(ge=0, le=INT32)]
    tgid: Annotated[int, Field(ge=0, le=INT32)] | None
    address: Address | None
    count: Annotated[int, Field(ge=0, le=INT32)]
    action: ActionName
    guest: GuestIn | None
    evidence: NotRequired[EvidenceName]


class GapIn(_Strict):
    source: SourceName
    first_seq: int = Field(ge=0, le=INT64)
    last_seq: int = Field(ge=0, le=INT64)
    count: int = Field(ge=0, le=INT32)
    reason: GapReasonName

    @model_validator(mode="after")
    def _ordered(self) -> GapIn:
        if self.last_seq < self.first_seq:
            raise ValueError(f"gap last_seq {self.last_seq} is before first_seq {self.first_seq}")
        return self


class PayloadIn(_Strict):
    schema_: Annotated[Literal[1], BeforeValidator(_exactly_int)] = Field(alias="schema")
    host: HostIn
    state: StateIn | None
    events: list[EventIn] = Field(max_length=MAX_EVENTS)
    gaps: list[GapIn] = Field(max_length=MAX_GAPS)
    # The agent loop's own figures (#4); free-form, shown as sent.
    health: Annotated[dict[str, Any], AfterValidator(_finite)] | None = None


def parse_payload(body: bytes) -> PayloadIn:
    """Validate JSON bytes; raises pydantic.ValidationError (json_invalid for non-JSON)."""
    return PayloadIn.model_validate_json(body)


def payload_json_schema() -> dict[str, Any]:
    """PayloadIn's JSON schema with its $defs inlined, for the OpenAPI request body."""
    schema = PayloadIn.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined
