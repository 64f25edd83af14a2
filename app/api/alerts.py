"""GET /api/v1/alerts: the alerts, newest first: pending, firing and resolved (issue 12)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from app.api.alert_models import Alert, AlertList
from app.api.models import NAME_MAX, NAME_PATTERN, GuestFilter, HostFilter, IsoTime
from app.deps import ConnDep, SettingsDep, ViewerDep
from app.errors import NotFound, error_responses
from app.store import alerting as store

router = APIRouter(prefix="/api/v1", tags=["alerts"])


@router.get(
    "/alerts",
    operation_id="list_alerts",
    response_model=AlertList,
    responses=error_responses(401, 403, 422),
    summary="Alerts, newest first; status=firing for what fires now",
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
) -> AlertList:
    now = dt.datetime.now(dt.UTC)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    items = store.list_alerts(
        conn, settings, status=status, rule=rule, host=host, guest=guest, since=since, limit=limit, now=now
    )
    return AlertList.model_validate({"items": items})


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
