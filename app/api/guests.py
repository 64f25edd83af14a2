"""GET /api/v1/guests and /api/v1/guests/{name}: which guests split-lock, where, and how often."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.models import (
    FIRST_NAME,
    NEXT_CURSOR,
    GuestDetail,
    GuestList,
    HostFilter,
    NameCursorParam,
    NameInPath,
    PageLimit,
    RangeDep,
    links,
    name_position,
)
from app.deps import ConnDep, ViewerDep
from app.errors import NotFound, error_responses
from app.store import guests as store

router = APIRouter(prefix="/api/v1", tags=["guests"])


@router.get(
    "/guests",
    operation_id="list_guests",
    response_model=GuestList,
    responses={
        **error_responses(401, 403, 422),
        **links(
            FirstGuest=("get_guest", {"name": FIRST_NAME}),
            NextPage=("list_guests", {"cursor": NEXT_CURSOR}),
        ),
    },
    summary="Guests, one page at a time: by name, or the busiest in the range first",
    description="`sort=name` (default): every guest, by name. `sort=events`: the guests with events in "
    "the range, most first. With `host`: only the guests that host reported. A guest's figures are its "
    "own across all hosts either way. Pass `next_cursor` back as `cursor` for the next page.",
)
def list_guests(
    conn: ConnDep,
    _viewer: ViewerDep,
    time_range: RangeDep,
    host: HostFilter = None,
    sort: Annotated[Literal["name", "events"], Query(description="Order of the list.")] = "name",
    limit: PageLimit = 100,
    cursor: NameCursorParam = None,
) -> GuestList:
    page = store.list_guests(
        conn,
        since=time_range.since,
        until=time_range.until,
        host_name=host,
        limit=limit,
        after=name_position(cursor),
        sort=sort,
    )
    return GuestList.model_validate({"items": page.items, "next_cursor": page.next_cursor})


@router.get(
    "/guests/{name:path}",
    operation_id="get_guest",
    response_model=GuestDetail,
    responses={
        **error_responses(401, 403, 404, 422),
        **links(LastHost=("get_host", {"name": "$response.body#/last_host"})),
    },
    summary="One guest: what the hosts did with its traps, and where in it they happen",
)
def get_guest(_viewer: ViewerDep, name: NameInPath, conn: ConnDep, time_range: RangeDep) -> GuestDetail:
    detail = store.get_guest(conn, name, since=time_range.since, until=time_range.until)
    if detail is None:
        raise NotFound(
            f"guest {name!r} is not known: no event was attributed to a guest of that name; "
            "GET /api/v1/guests lists the guests",
            code="guest_not_found",
        )
    return GuestDetail.model_validate(
        {
            **{f.name: getattr(detail.guest, f.name) for f in dataclasses.fields(detail.guest)},
            "actions": detail.actions,
            "top_addresses": detail.top_addresses,
            "sightings": detail.sightings,
        }
    )
