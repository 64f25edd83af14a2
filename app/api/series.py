"""GET /api/v1/series: counts over time for the charts, from the rollups (app/store/series.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.models import (
    ActionFilter,
    GuestFilter,
    HostFilter,
    KindFilter,
    RangeDep,
    SeriesAnswer,
    SourceFilter,
)
from app.deps import ConnDep, ViewerDep
from app.errors import InvalidInput, error_responses
from app.rollups.buckets import bucket_count, default_step
from app.store.events import Filters, resolve_filters
from app.store.series import DEFAULT_TOP, MAX_BUCKETS, MAX_TOP, GroupBy, read_series

router = APIRouter(prefix="/api/v1", tags=["series"])

MAX_STEP = 366 * 86400


@router.get(
    "/series",
    operation_id="get_series",
    response_model=SeriesAnswer,
    responses=error_responses(401, 403, 422),
    summary="sum of event counts per time bucket and key",
    description="Buckets start at multiples of `step` since the Unix epoch; every bucket from the one "
    "holding `since` up to `until` is present, zeros included. Read from the hourly rollup when the "
    "step is a multiple of 3600, else the per-minute one. Guest key of events without a guest: `(host)`. "
    "At most `top` keys, the largest over the range; the rest are summed in one last line flagged "
    "`other` (key `(other)`), so the lines still add up to the total.",
)
def get_series(
    _viewer: ViewerDep,
    conn: ConnDep,
    time_range: RangeDep,
    group_by: Annotated[GroupBy, Query(description="What each series is.")] = "action",
    step: Annotated[
        int | None,
        Query(
            ge=60,
            le=MAX_STEP,
            multiple_of=60,
            description="Bucket width in seconds, a multiple of 60. Default: ~300 buckets over the range.",
        ),
    ] = None,
    top: Annotated[
        int,
        Query(ge=1, le=MAX_TOP, description="Keys with the largest totals; the rest sum into `(other)`."),
    ] = DEFAULT_TOP,
    host: HostFilter = None,
    guest: GuestFilter = None,
    kind: KindFilter = None,
    action: ActionFilter = None,
    source: SourceFilter = None,
) -> SeriesAnswer:
    since, until = time_range.since, time_range.until
    # step is a multiple of 60 (declared: multipleOf 60): the finest rollup is per minute.
    step_s = default_step(since, until) if step is None else step
    buckets = bucket_count(since, until, step_s)
    if buckets > MAX_BUCKETS:
        needed = -(-int((until - since).total_seconds()) // MAX_BUCKETS)
        needed = -(-needed // 60) * 60
        raise InvalidInput(
            f"step {step_s}s over this range gives {buckets} buckets, more than the {MAX_BUCKETS} a series "
            f"may have: use a step of at least {needed}s or a shorter range",
            code="too_many_buckets",
            details=[{"field": "query.step", "problem": "too many buckets", "type": "too_many_buckets"}],
        )
    filters = Filters(
        host=host,
        guest=guest,
        kind=kind.value if kind else None,
        action=action.value if action else None,
        source=source.value if source else None,
    )
    result = read_series(
        conn,
        resolve_filters(conn, filters),
        since=since,
        until=until,
        step_s=step_s,
        group_by=group_by,
        top=top,
    )
    return SeriesAnswer.model_validate(result)
