"""GET /api/v1/hosts and /api/v1/hosts/{name}: the fleet's hosts, their status and history."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import Connection

from app.api.models import (
    FIRST_NAME,
    NEXT_CURSOR,
    HostDetail,
    HostList,
    HostVerdict,
    NameCursorParam,
    NameInPath,
    PageLimit,
    RangeDep,
    links,
    name_position,
)
from app.deps import ConnDep, SettingsDep, ViewerDep
from app.errors import NotFound, error_responses
from app.settings import Settings
from app.store import hosts as store
from app.store.backend_break import recent_breaks
from app.store.hosts import HostFilter, StatusRule
from app.store.status import STATUSES, Status

router = APIRouter(prefix="/api/v1", tags=["hosts"])


def status_rule(conn: Connection, settings: Settings, time_range: RangeDep) -> StatusRule:
    """The status rule at the request's `now`, leaving the backend's own outages out of silence."""
    return StatusRule(time_range.now, settings.silent_after_s, recent_breaks(conn, time_range.now))


@router.get(
    "/hosts",
    operation_id="list_hosts",
    response_model=HostList,
    responses={
        **error_responses(401, 403, 422),
        **links(
            FirstHost=("get_host", {"name": FIRST_NAME}),
            GuestsOfFirstHost=("list_guests", {"host": FIRST_NAME}),
            NextPage=("list_hosts", {"cursor": NEXT_CURSOR}),
        ),
    },
    summary="Hosts with their status, and their events and guests in the range, a page at a time: by name, "
    "or the busiest first",
    description="`sort=name` (default): every host, by name. `sort=events`: the hosts with events in the "
    "range, most first. `needs_action` and `status` keep only the hosts whose status matches (both: "
    "both must); the page and its cursor count those only. Pass `next_cursor` back as `cursor`, with "
    "the same `sort` and filters, for the next page.",
)
def list_hosts(
    conn: ConnDep,
    settings: SettingsDep,
    _viewer: ViewerDep,
    time_range: RangeDep,
    limit: PageLimit = 100,
    cursor: NameCursorParam = None,
    sort: Annotated[Literal["name", "events"], Query(description="Order of the list.")] = "name",
    needs_action: Annotated[
        bool | None,
        Query(description="Only the hosts whose status needs action (true) or does not (false)."),
    ] = None,
    status: Annotated[
        list[Status] | None,
        Query(
            max_length=len(STATUSES),
            description="Only the hosts with one of these statuses (repeat the parameter for several), "
            "e.g. `status=silent`.",
        ),
    ] = None,
) -> HostList:
    page = store.list_hosts(
        conn,
        since=time_range.since,
        until=time_range.until,
        rule=status_rule(conn, settings, time_range),
        limit=limit,
        after=name_position(cursor),
        only=HostFilter(needs_action, frozenset(status) if status is not None else None),
        sort=sort,
    )
    return HostList.model_validate({"items": page.items, "next_cursor": page.next_cursor})


def _not_found(name: str) -> NotFound:
    return NotFound(
        f"host {name!r} is not known: no agent has reported under that name; "
        "GET /api/v1/hosts lists the hosts",
        code="host_not_found",
    )


@router.get(
    "/hosts/{name}/verdict",
    operation_id="get_host_verdict",
    response_model=HostVerdict,
    responses=error_responses(401, 403, 404, 422),
    summary="One host's consistency verdict now: its name, reason, details and since when",
)
def get_host_verdict(
    name: NameInPath, conn: ConnDep, settings: SettingsDep, _viewer: ViewerDep, time_range: RangeDep
) -> HostVerdict:
    view = store.get_verdict(conn, name, rule=status_rule(conn, settings, time_range))
    if view is None:
        raise _not_found(name)
    s = view.status
    return HostVerdict(
        host=view.host,
        status=s.status,
        label=s.label,
        verdict=s.verdict,
        reason=s.reason,
        needs_action=s.needs_action,
        details=s.details,
        since=s.since,
        observed_at=view.observed_at,
    )


@router.get(
    "/hosts/{name:path}",
    operation_id="get_host",
    response_model=HostDetail,
    responses={
        **error_responses(401, 403, 404, 422),
        **links(FirstGuest=("get_guest", {"name": "$response.body#/guests/0"})),
    },
    summary="One host: its status, CPUs, state changes and guests in the range",
)
def get_host(
    _viewer: ViewerDep, name: NameInPath, conn: ConnDep, settings: SettingsDep, time_range: RangeDep
) -> HostDetail:
    detail = store.get_host(
        conn,
        name,
        since=time_range.since,
        until=time_range.until,
        rule=status_rule(conn, settings, time_range),
    )
    if detail is None:
        raise _not_found(name)
    return HostDetail.model_validate(
        {
            **{f.name: getattr(detail.host, f.name) for f in dataclasses.fields(detail.host)},
            "guests": detail.guests,
            "cpus": detail.cpus,
            "states": detail.states,
        }
    )
