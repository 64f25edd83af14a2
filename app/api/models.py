"""Response models of the read API, and the query parameters its routes share.

pydantic lives here, at the HTTP boundary only: store modules (app/store/*) return frozen
dataclasses and these models read them (`from_attributes`). Times serialise as ISO 8601 UTC
with `Z`. The shapes are the lead's API notes: lists answer {"items": [...]}.

Shared parameters: `RangeDep` (since/until, default the last 24 h), the name filters (no NUL:
PostgreSQL text cannot hold one, so such a name could never match), and the contract words
as enums from agent/payload.py.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from agent.payload import Action, GapReason, Kind, Mode, Source
from app.errors import InvalidInput
from app.store.cursor import (
    MAX_NAME_CURSOR_LENGTH,
    Cursor,
    CursorError,
    NameCursor,
    decode_cursor,
    decode_name_cursor,
)
from app.store.status import Status as StatusName

# ---------------------------------------------------------------- shared query parameters

DEFAULT_RANGE = dt.timedelta(hours=24)
# Times outside these are clamped: nothing splitwatch stores predates the epoch, and bucket
# arithmetic must not overflow datetime's year 9999.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)

NAME_PATTERN = r"^[^\x00]+$"
NAME_MAX = 255

HostFilter = Annotated[
    str | None,
    Query(description="Only this host (name).", min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN),
]
GuestFilter = Annotated[
    str | None,
    Query(
        description="Only this guest (name); `(host)` selects plain host processes (events without a guest).",
        min_length=1,
        max_length=NAME_MAX,
        pattern=NAME_PATTERN,
    ),
]
KindFilter = Annotated[Kind | None, Query(description="Only this kind of lock.")]
ActionFilter = Annotated[Action | None, Query(description="Only events the host answered this way.")]
SourceFilter = Annotated[Source | None, Query(description="Only events read from this source.")]
NameInPath = Annotated[str, Path(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)]

# Pages of the name-ordered lists (/hosts, /guests): keyset on the name (#14).
PAGE_MAX = 1000
PageLimit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="At most this many per page.")]
NameCursorParam = Annotated[
    str | None,
    Query(max_length=MAX_NAME_CURSOR_LENGTH, description="The `next_cursor` of the previous page as is."),
]


def _invalid_cursor(exc: CursorError) -> InvalidInput:
    return InvalidInput(
        str(exc),
        code="invalid_cursor",
        details=[{"field": "query.cursor", "problem": "not a cursor of this server", "type": "cursor"}],
    )


def name_position(cursor: str | None) -> NameCursor | None:
    """The decoded `cursor` of a name-ordered list, or 422 invalid_cursor with the remedy."""
    if cursor is None:
        return None
    try:
        return decode_name_cursor(cursor)
    except CursorError as exc:
        raise _invalid_cursor(exc) from None


def time_position(cursor: str | None) -> Cursor | None:
    """The decoded `cursor` of a newest-first list (/events, /gaps), or 422 invalid_cursor."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except CursorError as exc:
        raise _invalid_cursor(exc) from None


_ISO_DATE_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_only(value: object) -> object:
    # pydantic would also read "0.5" or "1700000000" as Unix times; the API speaks ISO 8601 only.
    if isinstance(value, str) and not _ISO_DATE_START.match(value):
        raise ValueError("expected an ISO 8601 time such as 2026-11-24T12:00:00Z")
    return value


IsoTime = Annotated[dt.datetime, BeforeValidator(_iso_only)]

_SINCE = Query(
    description="Start of the range, inclusive (ISO 8601; no offset means UTC). Default: 24 h before `until`."
)
_UNTIL = Query(description="End of the range, exclusive (ISO 8601; no offset means UTC). Default: now.")


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: dt.datetime
    until: dt.datetime
    now: dt.datetime


def _utc(at: dt.datetime, field: str) -> dt.datetime:
    # The API speaks UTC: an ISO time without an offset is taken as UTC, not server time.
    try:
        at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is in year 0 in UTC, 9999-12-31T23:00-02:00 in year 10000:
        # neither exists in datetime (issue 14: this was a 500).
        raise InvalidInput(
            f"{field} {at.isoformat()} is outside the years 1-9999 once converted to UTC: "
            "give a time between 1970 and 9000, or with the offset Z",
            code="invalid_time",
            details=[{"field": f"query.{field}", "problem": "out of range in UTC", "type": "invalid_time"}],
        ) from None
    return min(max(at, EARLIEST), LATEST)


async def time_range(
    since: Annotated[IsoTime | None, _SINCE] = None,
    until: Annotated[IsoTime | None, _UNTIL] = None,
) -> TimeRange:
    # async: pure arithmetic, so it runs on the event loop instead of costing a threadpool hop.
    now = dt.datetime.now(dt.UTC)
    end = _utc(until, "until") if until is not None else now
    start = _utc(since, "since") if since is not None else max(end - DEFAULT_RANGE, EARLIEST)
    if start > end:
        raise InvalidInput(
            f"since ({start.isoformat()}) is after until ({end.isoformat()}): "
            "give a since earlier than until, or omit one of them",
            code="invalid_range",
            details=[{"field": "query.since", "problem": "after until", "type": "invalid_range"}],
        )
    return TimeRange(start, end, now)


RangeDep = Annotated[TimeRange, Depends(time_range)]

# ---------------------------------------------------------------- OpenAPI links


def links(**targets: tuple[str, dict[str, str]]) -> dict[int | str, dict[str, Any]]:
    """A `responses=` entry declaring OpenAPI links of the 200 answer: name -> (operationId,
    {parameter: runtime expression}). Clients and schemathesis' stateful phase follow them
    (a list to one of its items, a page to the next)."""
    return {
        200: {
            "description": "Successful Response",
            "links": {
                name: {"operationId": operation, "parameters": parameters}
                for name, (operation, parameters) in targets.items()
            },
        }
    }


FIRST_NAME = "$response.body#/items/0/name"
NEXT_CURSOR = "$response.body#/next_cursor"

# ---------------------------------------------------------------- response models


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Cpu(_Out):
    cpu: int
    test_ctrl: int | None = Field(description="MSR_TEST_CTRL (0x33) as read; null when the read failed.")
    sld_on: bool | None = Field(description="Split-lock #AC detection on (TEST_CTRL bit 29).")
    bld_on: bool | None = Field(description="Bus-lock #DB detection on (DEBUGCTL bit 2).")
    error: str | None


class _HostBase(_Out):
    name: str
    boot_id: str
    kernel: str
    cpu_model: str
    agent_version: str
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime | None = Field(
        description="The agent's last report; null when no agent ever reported (an imported host)."
    )
    status: StatusName = Field(
        description="silent (no report for longer than silent_after_s, not counting the backend's own "
        "outages, or never), else the agent's consistency verdict (docs/kernel.md), else unknown "
        "(no verdict sent)."
    )
    reason: str = Field(description="Why, in one sentence (the agent's words for a verdict).")
    needs_action: bool = Field(
        description="true for drift, stuck_off, inconsistent_config, foreign_hypervisor."
    )
    verdict: StatusName = Field(description="The agent's newest verdict, kept while the host is silent.")
    verdict_details: dict[str, Any] = Field(description="The verdict's details: cpus, guests, module, era...")
    verdict_since: dt.datetime | None = Field(description="The sample that first gave this verdict.")
    mode: Mode | None = Field(description="split_lock_detect mode; null until the agent sent a state.")
    ratelimit: int | None
    mitigate: int | None
    sld_supported: bool | None
    bld_supported: bool | None
    cpus_total: int
    cpus_on: int
    cpus_off: int
    cpus_error: int
    events: int = Field(description="sum of event counts in the range.")
    health: dict[str, Any] | None = Field(description="The agent's own figures from its newest batch.")


class Host(_HostBase):
    guests: int = Field(description="Distinct guests with events on this host in the range.")


_NEXT = "Pass as `cursor` for the next page; null at the end."


class HostList(BaseModel):
    items: list[Host]
    next_cursor: str | None = Field(description=_NEXT)


class HostState(_Out):
    observed_at: dt.datetime
    boot_id: str
    kernel: str
    mode: Mode
    ratelimit: int | None
    mitigate: int | None
    sld_supported: bool
    bld_supported: bool
    cpus_on: int
    cpus_off: int
    cpus_error: int
    verdict: StatusName | None = Field(description="The consistency verdict of that sample (null: none).")
    cpus: list[Cpu]


class HostDetail(_HostBase):
    guests: list[str] = Field(description="Names of the guests with events on this host in the range.")
    cpus: list[Cpu] = Field(description="The latest per-CPU state.")
    states: list[HostState] = Field(
        description="State changes in the range, oldest first, led by the state in force at `since`."
    )


class HostVerdict(BaseModel):
    host: str
    status: StatusName = Field(description="silent, else the verdict, else unknown.")
    label: str = Field(description="The status in words: `per-task off`, `stuck off`...")
    verdict: StatusName = Field(description="The agent's newest verdict, kept while silent.")
    reason: str
    needs_action: bool
    details: dict[str, Any]
    since: dt.datetime | None = Field(description="When the host entered this status.")
    observed_at: dt.datetime | None = Field(description="The agent sample the verdict is about.")


class Guest(_Out):
    name: str
    uuid: str | None
    vmm: str
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    last_host: str | None
    last_action: Action | None
    killed: bool = Field(description="A SIGBUS killed it (host in fatal mode); killed_at is the last time.")
    killed_at: dt.datetime | None
    killed_by: Literal["kernel_line", "tracefs", "vmm_exit"] | None = Field(
        default=None,
        description="How its last kill was known: the kernel's line, a tracefs hit, or its VMM's exit "
        "in fatal mode after the boot's one kernel line was spent (an inference).",
    )
    events: int = Field(description="sum of its event counts in the range, all hosts.")
    hosts: list[str] = Field(description="Hosts it had events on in the range.")


class GuestList(BaseModel):
    items: list[Guest]
    next_cursor: str | None = Field(description=_NEXT)


class AddressCount(_Out):
    address: str
    count: int
    space: Literal["guest-kernel", "guest-user"]


class Sighting(_Out):
    host: str
    uuid: str | None
    vmm: str
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    last_action: Action | None
    killed_at: dt.datetime | None
    same_guest: bool = Field(
        description="The host saw the guest's identity (its name and uuid); false: a namesake, whose "
        "events count under the name but never move the guest's last host, action or kill."
    )


class GuestDetail(Guest):
    actions: dict[str, int] = Field(description="sum of event counts in the range per action.")
    top_addresses: list[AddressCount] = Field(description="Trap addresses with the most events in the range.")
    sightings: list[Sighting] = Field(
        description="What each host reported of this name, most recent first (at most 100 hosts)."
    )


class Event(_Out):
    id: int
    host: str
    boot_id: str
    source: Source
    seq: int
    time: dt.datetime
    received_at: dt.datetime
    kind: Kind
    comm: str
    tid: int
    tgid: int | None
    address: str | None
    count: int
    action: Action
    guest: str | None = Field(description="Guest name; null for a plain host process.")
    vcpu: int | None
    vmm: str | None


class EventPage(BaseModel):
    items: list[Event]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )
    # "Events" meant two things (#17): the traps counted (the summary's `events`) and the
    # records listed here; every page says both for the whole filter and range.
    traps_total: int = Field(
        description="Traps counted by every record of the filter in the range: the sum of `count` "
        "(what /summary calls `events`)."
    )
    records_total: int = Field(
        description="Records (rows) of the filter in the range, every page together. A kernel-log "
        "record may count 0 traps: a first sighting of a trap tracefs already counted."
    )


class SeriesLine(_Out):
    key: str
    points: list[tuple[dt.datetime, int]] = Field(
        description="[bucket start, sum of event counts] per bucket."
    )


class SeriesAnswer(_Out):
    step: int = Field(description="Bucket width in seconds.")
    series: list[SeriesLine]
    others: int = Field(
        default=0,
        description="Keys beyond `top` summed into the last line, key `(other)`; 0: no such line.",
    )


class Gap(_Out):
    host: str
    boot_id: str
    source: Source
    first_seq: int
    last_seq: int
    count: int = Field(description="Events lost.")
    reason: GapReason | Literal["guest_cap"] = Field(
        description="guest_cap: the events are stored, but without their guest (the host was over "
        "SPLITWATCH_MAX_GUESTS_PER_HOST)."
    )
    received_at: dt.datetime


class GapList(BaseModel):
    items: list[Gap]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null at the end")


class Summary(_Out):
    events: int = Field(description="sum of event counts in the range.")
    guests_affected: int = Field(description="Guests with events in the range.")
    guests_killed: int = Field(description="Guests killed by SIGBUS in the range.")
    hosts_total: int
    hosts_by_mode: dict[str, int] = Field(
        description="Hosts per current mode; `unknown` before a first state."
    )
    hosts_by_status: dict[str, int] = Field(description="Hosts per status (app/store/status.py).")
    hosts_need_action: int = Field(
        description="Hosts whose verdict needs action: drift, stuck_off, inconsistent_config, "
        "foreign_hypervisor."
    )
    hosts_silent: int
    gaps: int = Field(description="Events lost (sum of gap counts) received in the range.")
