"""GET /api/v1/guests and /api/v1/guests/{name}: which guests split-lock, where, and how often."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter

from app.api.models import GuestDetail, GuestList, HostFilter, NameInPath, RangeDep
from app.deps import ConnDep, ViewerDep
from app.errors import NotFound, error_responses
from app.store import guests as store

router = APIRouter(prefix="/api/v1", tags=["guests"])


@router.get(
    "/guests",
    operation_id="list_guests",
    response_model=GuestList,
    responses=error_responses(401, 403, 422),
    summary="Guests with their events in the range, most first",
    description="With `host`: the guests that had events on that host in the range or were last seen "
    "on it. A guest's figures are its own across all hosts either way.",
)
def list_guests(
    _viewer: ViewerDep, conn: ConnDep, time_range: RangeDep, host: HostFilter = None
) -> GuestList:
    views = store.list_guests(conn, since=time_range.since, until=time_range.until, host_name=host)
    return GuestList.model_validate({"items": views})


@router.get(
    "/guests/{name:path}",
    operation_id="get_guest",
    response_model=GuestDetail,
    responses=error_responses(401, 403, 404, 422),
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
        }
    )
