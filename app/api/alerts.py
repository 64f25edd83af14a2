"""GET /api/v1/alerts: the alerts, newest first: pending, firing and resolved (issue 12)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from app.api.alert_models import Alert, AlertList
from app.api.models import NAME_MAX, NAME_PATTERN, GuestFilter, HostFilter, IsoTime, time_position
from app.deps import ConnDep, SettingsDep, ViewerDep
from app.errors import NotFound, error_responses
from app.store import alerting as store
from app.store.cursor import encode_cursor

router = APIRouter(prefix="/api/v1", tags=["alerts"])


@router.get(
    "/alerts",
    operation_id="list_alerts",
    response_model=AlertList,
    responses=error_responses(401, 403, 422),
    summary="Alerts, newest first, a page at a time; status=firing for what fires now",
    description="Pass `next_cursor` back as `cursor`, with the same filters, for the next page.",
)
def list_alerts(
    conn: ConnDep,
    settings: SettingsDep,
    _viewer: ViewerDep,
    status: Annotated[
        Literal["pending", "firing", "resolved"] | None, Query(description="Only this state.")
    ] = None,
    rule: Annotated[
        str | None, Query(description="Only this rule (name).", max_length=NAME_MAX, pattern=NAME_PATTERN)
    ] = None,
    host: HostFilter = None,
    guest: GuestFilter = None,
    since: Annotated[
        IsoTime | None, Query(description="Only alerts still open or that ended at or after this.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="The `next_cursor` of the previous page, unchanged."),
    ] = None,
) -> AlertList:
    now = dt.datetime.now(dt.UTC)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    after = time_position(cursor)
    page = store.list_alerts(
        conn, settings, status=status, rule=rule, host=host, guest=guest, since=since, limit=limit, now=now,
        before=after.id if after is not None else None,
    )  # fmt: skip
    next_cursor = None
    if page.next_before is not None:
        # The cursor format of the newest-first lists; the time is `now`: alerts are paged by id.
        next_cursor = encode_cursor(now, page.next_before)
    return AlertList.model_validate({"items": page.items, "next_cursor": next_cursor})


@router.get(
    "/alerts/{alert_id}",
    operation_id="get_alert",
    response_model=Alert,
    responses=error_responses(401, 403, 404, 422),
    summary="One alert",
)
def get_alert(
    alert_id: Annotated[int, Path(ge=1, le=2**62)], conn: ConnDep, settings: SettingsDep, _viewer: ViewerDep
) -> Alert:
    view = store.get_alert(conn, settings, alert_id, dt.datetime.now(dt.UTC))
    if view is None:
        raise NotFound(
            f"alert {alert_id} does not exist: GET /api/v1/alerts lists them", code="alert_not_found"
        )
    return Alert.model_validate(view)
