"""GET /api/v1/summary: the fleet overview's figures for a range."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.hosts import status_rule
from app.api.models import RangeDep, Summary
from app.deps import ConnDep, SettingsDep, ViewerDep
from app.errors import error_responses
from app.store import summary as store

router = APIRouter(prefix="/api/v1", tags=["summary"])


@router.get(
    "/summary",
    operation_id="get_summary",
    response_model=Summary,
    responses=error_responses(401, 403, 422),
    summary="Fleet totals for the range and the hosts' current condition",
)
def get_summary(_viewer: ViewerDep, conn: ConnDep, settings: SettingsDep, time_range: RangeDep) -> Summary:
    summary = store.fleet_summary(
        conn, since=time_range.since, until=time_range.until, rule=status_rule(conn, settings, time_range)
    )
    return Summary.model_validate(summary)
