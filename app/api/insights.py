"""GET /api/v1/insights/{throttling,fatal-readiness,kernel-eras}: answers built on the history
(issue 16 §2-§4). The rules are app/insights/*, the reads app/store/insights.py; the response
models live here, next to the only routes that answer with them.

Filters: `host` (repeatable: a set of hosts, a pool), `since`/`until` (default the last 24 h),
`limit` (each list; what it cut is counted in `more_*`). A host name that matches no host is a
404 here, not an empty answer as on /series: "ready: no offender" for a misspelt host of the
pool about to be switched to fatal would be a dangerous answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.api.models import NAME_MAX, NAME_PATTERN, RangeDep
from app.deps import ConnDep, ViewerDep
from app.errors import InvalidInput, NotFound, error_responses
from app.insights.cost import Cost
from app.insights.eras import ERAS, Era
from app.store import insights as store
from app.store.insights import HostRow

router = APIRouter(prefix="/api/v1/insights", tags=["insights"])

MAX_HOSTS = 500  # names in one `host` filter
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

HostName = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)]
HostsFilter = Annotated[
    list[HostName] | None,
    Query(description=f"Only these hosts (repeat the parameter, at most {MAX_HOSTS}). Default: every host."),
]
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description="At most this many rows per list; `more_*` counts the rest.")
]

BOUND = (
    "at least: each split-lock trap counted by tracefs while misery mode was on (warn mode, 5.19+, "
    "split_lock_mitigate 1 or no sysctl yet, as host_state said at the time) x 10 ms, the sleep "
    "split_lock_warn() takes before the one-core-at-a-time semaphore"
)


def _hosts(conn: ConnDep, names: Sequence[str] | None) -> list[HostRow]:
    if names is not None and len(names) > MAX_HOSTS:
        raise InvalidInput(
            f"{len(names)} host names given, more than the {MAX_HOSTS} one request may name: "
            "split the pool into several requests",
            code="too_many_hosts",
            details=[{"field": "query.host", "problem": "too many names", "type": "too_many_hosts"}],
        )
    rows, unknown = store.read_hosts(conn, names)
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise NotFound(
            f"host {shown} is not known: no agent has reported under that name; "
            "GET /api/v1/hosts lists the hosts",
            code="host_not_found",
        )
    return rows


# ------------------------------------------------------------------------------ throttling


class ThrottleFigure(BaseModel):
    vcpu_seconds_lower_bound: float | None = Field(
        description="At least this many vCPU-seconds were spent in misery mode's sleep "
        "(tracefs count x 10 ms); null when no count is known."
    )
    vcpu_share: float | None = Field(
        description="vcpu_seconds_lower_bound / window seconds: 0.01 is 1% of one vCPU's time "
        "over the window."
    )
    counted_traps: int = Field(description="Split-lock traps counted by tracefs while misery mode was on.")
    uncounted_sightings: int = Field(
        description="Kernel-log lines (kmsg, import) of traps with no true count: first sightings, "
        "not counts."
    )
    no_figure_reason: str | None = Field(description="Why vcpu_seconds_lower_bound is null.")


def _figure(cost: Cost) -> dict[str, object]:
    return {
        "vcpu_seconds_lower_bound": cost.vcpu_seconds,
        "vcpu_share": cost.vcpu_share,
        "counted_traps": cost.counted_traps,
        "uncounted_sightings": cost.uncounted_sightings,
        "no_figure_reason": cost.reason,
    }


class HostThrottle(ThrottleFigure):
    host: str
    misery_s: float = Field(description="Seconds of the window in which the host was in misery mode.")


class GuestThrottle(ThrottleFigure):
    host: str
    guest: str = Field(description="Guest name; `(host)` for the host's own processes.")


class FleetThrottle(ThrottleFigure):
    vcpu_hours_lower_bound: float | None
    sentence: str = Field(description="The fleet figure in words.")


class ThrottlingAnswer(BaseModel):
    since: dt.datetime
    until: dt.datetime
    window_s: float
    bound: str = Field(description="What the figures are a lower bound of, and why.")
    total: ThrottleFigure = Field(description="Guests and host processes together.")
    guests_total: FleetThrottle = Field(description="Guests only.")
    hosts: list[HostThrottle] = Field(description="Hosts with throttled traps, most vCPU time first.")
    more_hosts: int
    guests: list[GuestThrottle] = Field(description="Per guest per host, most vCPU time first.")
    more_guests: int


def _sentence(cost: Cost) -> str:
    if cost.vcpu_seconds is None:
        return f"Guests lost vCPU time to throttling in this window, but {cost.reason}."
    if not cost.counted_traps:
        return "No guest trap was counted in misery mode in this window: no throttling cost known."
    seconds = f"{cost.vcpu_seconds:,.10g} vCPU-seconds"
    amount = f"{cost.vcpu_seconds / 3600:,.2f} vCPU-hours ({seconds})" if cost.vcpu_seconds >= 36 else seconds
    return (
        f"Guests lost at least {amount} to throttling in this window "
        f"({cost.counted_traps:,} counted traps x 10 ms)."
    )


@router.get(
    "/throttling",
    operation_id="get_throttling_cost",
    response_model=ThrottlingAnswer,
    responses=error_responses(401, 403, 404, 422),
    summary="vCPU time lost to split-lock misery mode: a lower bound per guest, host and fleet",
    description="From tracefs counts only: each split-lock trap taken while misery mode was on costs "
    "its thread at least 10 ms. Guests seen only in the kernel log have no count known (null, with the "
    "reason). The state in force at each moment comes from the host's state history.",
)
def get_throttling(
    conn: ConnDep,
    _viewer: ViewerDep,
    time_range: RangeDep,
    host: HostsFilter = None,
    limit: Limit = DEFAULT_LIMIT,
) -> ThrottlingAnswer:
    hosts = _hosts(conn, host)
    result = store.throttling(conn, hosts, since=time_range.since, until=time_range.until, limit=limit)
    guests_total = result.guests_total
    return ThrottlingAnswer.model_validate(
        {
            "since": time_range.since,
            "until": time_range.until,
            "window_s": result.window_s,
            "bound": BOUND,
            "total": _figure(result.total),
            "guests_total": {
                **_figure(guests_total),
                "vcpu_hours_lower_bound": None
                if guests_total.vcpu_seconds is None
                else guests_total.vcpu_seconds / 3600,
                "sentence": _sentence(guests_total),
            },
            "hosts": [{"host": h.host, "misery_s": h.misery_s, **_figure(h.cost)} for h in result.hosts],
            "more_hosts": result.more_hosts,
            "guests": [{"host": g.host, "guest": g.guest, **_figure(g.cost)} for g in result.guests],
            "more_guests": result.more_guests,
        }
    )


# ------------------------------------------------------------------------- fatal readiness


class Offender(BaseModel):
    host: str
    guest: str | None = Field(description="Guest name; null for a plain host process (see `comm`).")
    comm: str | None = Field(
        description="Thread name of its last trap (a host process is named by it); null for a guest "
        "beyond `limit`, whose exact last trap was not looked up (its time is then the minute)."
    )
    kind: str
    last_trap_at: dt.datetime
    count: int | None = Field(description="Traps counted by tracefs; null when seen only in the kernel log.")
    sightings: int = Field(description="Kernel-log lines (kmsg, import): first sightings, not counts.")
    sources: list[str]
    killed: bool = Field(description="It already took SIGBUS (its host was in fatal mode).")


class HostReadiness(BaseModel):
    host: str
    mode: str | None = Field(description="The host's mode now.")
    ready: bool | None = Field(
        description="No offender in the watched stretch; null: no evidence either way."
    )
    verdict: str
    offenders: int
    last_offence_at: dt.datetime | None
    clean_since: dt.datetime | None = Field(
        description="Start of the offender-free stretch with detection on."
    )


class ReadinessAnswer(BaseModel):
    since: dt.datetime
    until: dt.datetime
    offenders: list[Offender] = Field(
        description="Who split_lock_detect=fatal would have killed, newest first."
    )
    more_offenders: int
    hosts: list[HostReadiness] = Field(description="Not ready first, then unknown, then ready.")
    more_hosts: int
    hosts_ready: int
    hosts_not_ready: int
    hosts_unknown: int


@router.get(
    "/fatal-readiness",
    operation_id="get_fatal_readiness",
    response_model=ReadinessAnswer,
    responses=error_responses(401, 403, 404, 422),
    summary="Can these hosts switch to split_lock_detect=fatal? Who would have been killed, per host",
    description="Every guest and host process whose traps in the window fatal mode would have answered "
    "with SIGBUS: split locks (not those reflected into a guest that enabled alignment checking itself, "
    "not kernel split locks), and bus locks of host processes on CPUs with bus-lock detection but no "
    "split-lock detection (elsewhere fatal mode turns bus-lock #DB off). Per host: ready (no offender "
    "while detection was on), not ready, or no evidence (detection off).",
)
def get_fatal_readiness(
    conn: ConnDep,
    _viewer: ViewerDep,
    time_range: RangeDep,
    host: HostsFilter = None,
    limit: Limit = DEFAULT_LIMIT,
) -> ReadinessAnswer:
    hosts = _hosts(conn, host)
    r = store.fatal_readiness(conn, hosts, since=time_range.since, until=time_range.until, limit=limit)
    return ReadinessAnswer.model_validate(
        {
            "since": time_range.since,
            "until": time_range.until,
            "offenders": [_offender(o) for o in r.offenders],
            "more_offenders": r.more_offenders,
            "hosts": [
                {
                    "host": h.host,
                    "mode": h.mode,
                    "ready": h.readiness.ready,
                    "verdict": h.readiness.verdict,
                    "offenders": h.offenders,
                    "last_offence_at": h.last_offence_at,
                    "clean_since": h.readiness.clean_since,
                }
                for h in r.hosts
            ],
            "more_hosts": r.more_hosts,
            "hosts_ready": r.ready,
            "hosts_not_ready": r.not_ready,
            "hosts_unknown": r.unknown,
        }
    )


def _offender(o: store.Offender) -> dict[str, object]:
    return {
        "host": o.host,
        "guest": o.guest,
        "comm": o.comm,
        "kind": o.kind,
        "last_trap_at": o.last_trap_at,
        "count": o.count,
        "sightings": o.sightings,
        "sources": o.sources,
        "killed": o.killed,
    }


# ----------------------------------------------------------------------------- kernel eras


class HostEra(BaseModel):
    host: str
    kernel: str
    mode: str | None
    mitigate: int | None
    era: Era = Field(description=f"One of {', '.join(ERAS)} (docs/kernel.md).")
    reason: str
    counts_are_floors: bool
    stuck_off: bool


class OffenderRate(Offender):
    per_hour: float = Field(description="tracefs count per hour, else kernel-log lines per hour (a floor).")
    basis: str
    throttled_s_per_hour_after_upgrade: float | None = Field(
        description="At least this many vCPU-seconds per hour misery mode would take after an upgrade to "
        "5.19+ (tracefs counts x 10 ms); null when seen only in the kernel log."
    )


class UpgradeImpact(HostEra):
    offenders: list[OffenderRate]
    more_offenders: int


class ErasAnswer(BaseModel):
    since: dt.datetime
    until: dt.datetime
    as_of: str = Field(description="`now`: eras are those of each host's latest report.")
    by_era: dict[str, int] = Field(description="Hosts per era.")
    hosts: list[HostEra] = Field(description="Each host's era, by name.")
    more_hosts: int
    floors: list[HostEra] = Field(description="5.7-5.18 in warn mode: per-task off makes counts floors.")
    more_floors: int
    upgrade: list[UpgradeImpact] = Field(
        description="Below 5.19 in warn mode: offenders in the window an upgrade would start throttling."
    )
    more_upgrade: int
    stuck_off: list[HostEra] = Field(
        description="split_lock_mitigate=0 on a kernel with the sysctl before the v6.15 fix: "
        "cores can stay off."
    )
    more_stuck_off: int


def _era(e: store.HostEra) -> dict[str, object]:
    return {
        "host": e.host,
        "kernel": e.kernel,
        "mode": e.mode,
        "mitigate": e.mitigate,
        "era": e.era.era,
        "reason": e.era.reason,
        "counts_are_floors": e.era.counts_are_floors,
        "stuck_off": e.era.stuck_off,
    }


@router.get(
    "/kernel-eras",
    operation_id="get_kernel_eras",
    response_model=ErasAnswer,
    responses=error_responses(401, 403, 404, 422),
    summary="What each host's kernel does with split locks, and what an upgrade would change",
    description="Hosts whose counts are floors (5.7-5.18), hosts below 5.19 whose offenders would start "
    "being throttled after an upgrade (with their rates over the window), and hosts in the `stuck off` "
    "era (split_lock_mitigate=0 before v6.15). Eras are as of each host's latest report.",
)
def get_kernel_eras(
    conn: ConnDep,
    _viewer: ViewerDep,
    time_range: RangeDep,
    host: HostsFilter = None,
    limit: Limit = DEFAULT_LIMIT,
) -> ErasAnswer:
    hosts = _hosts(conn, host)
    r = store.kernel_eras(conn, hosts, since=time_range.since, until=time_range.until, limit=limit)
    return ErasAnswer.model_validate(
        {
            "since": time_range.since,
            "until": time_range.until,
            "as_of": "now",
            "by_era": r.by_era,
            "hosts": [_era(e) for e in r.hosts],
            "more_hosts": r.more_hosts,
            "floors": [_era(e) for e in r.floors],
            "more_floors": r.more_floors,
            "upgrade": [
                {
                    **_era(u.host),
                    "offenders": [
                        {
                            **_offender(rate.offender),
                            "per_hour": rate.per_hour,
                            "basis": rate.basis,
                            "throttled_s_per_hour_after_upgrade": rate.throttled_s_per_hour_after_upgrade,
                        }
                        for rate in u.offenders
                    ],
                    "more_offenders": u.more,
                }
                for u in r.upgrade
            ],
            "more_upgrade": r.more_upgrade,
            "stuck_off": [_era(e) for e in r.stuck_off],
            "more_stuck_off": r.more_stuck_off,
        }
    )
