"""GET /api/v1/gaps: the counted losses, newest received first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.models import GapList, HostFilter, RangeDep
from app.deps import ConnDep, ViewerDep
from app.errors import error_responses
from app.store import gaps as store

router = APIRouter(prefix="/api/v1", tags=["gaps"])


@router.get(
    "/gaps",
    operation_id="list_gaps",
    response_model=GapList,
    responses=error_responses(401, 403, 422),
    summary="Losses the agents counted (overrun, suppressed, spool_full, forged), received in the range",
)
def list_gaps(
    _viewer: ViewerDep,
    conn: ConnDep,
    time_range: RangeDep,
    host: HostFilter = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many, newest first.")] = 1000,
) -> GapList:
    views = store.list_gaps(conn, since=time_range.since, until=time_range.until, host_name=host, limit=limit)
    return GapList.model_validate({"items": views})
