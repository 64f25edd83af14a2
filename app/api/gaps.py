"""GET /api/v1/gaps: the counted losses, newest received first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.models import NEXT_CURSOR, GapList, HostFilter, RangeDep, links, time_position
from app.deps import ConnDep, ViewerDep
from app.errors import error_responses
from app.store import gaps as store

router = APIRouter(prefix="/api/v1", tags=["gaps"])


@router.get(
    "/gaps",
    operation_id="list_gaps",
    response_model=GapList,
    responses={
        **error_responses(401, 403, 422),
        **links(
            HostOfFirstGap=("get_host", {"name": "$response.body#/items/0/host"}),
            NextPage=("list_gaps", {"cursor": NEXT_CURSOR}),
        ),
    },
    summary="Losses the agents counted (overrun, suppressed, spool_full, forged), received in the range",
)
def list_gaps(
    _viewer: ViewerDep,
    conn: ConnDep,
    time_range: RangeDep,
    host: HostFilter = None,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="At most this many per page, newest first")
    ] = 1000,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="The `next_cursor` of the previous page, unchanged."),
    ] = None,
) -> GapList:
    page = store.list_gaps(
        conn,
        since=time_range.since,
        until=time_range.until,
        host_name=host,
        limit=limit,
        after=time_position(cursor),
    )
    return GapList.model_validate({"items": page.items, "next_cursor": page.next_cursor})
