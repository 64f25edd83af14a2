"""/api/v1/alert-rules: the rules, built in and threshold (issue 12). Viewers read; admins write.

Built-in rules cannot be deleted or renamed: disable them (`PATCH {"enabled": false}`) or retune
them. Deleting a threshold rule resolves its firing alerts first (their resolved notices go out).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import Connection

from app.alerts.evaluate import resolve_rule_alerts
from app.api.alert_models import AlertRule, AlertRuleCreate, AlertRuleList, AlertRuleUpdate
from app.deps import AdminDep, ConnDep, SettingsDep, ViewerDep, WriterDep
from app.errors import Conflict, InvalidInput, NotFound, error_responses
from app.store import alerting as store

router = APIRouter(prefix="/api/v1", tags=["alerts"])

RuleId = Annotated[int, Path(ge=1, le=2**31 - 1)]
BUILTIN_FIXED = ("name", "kind", "group_by")


def _not_found(rule_id: int) -> NotFound:
    return NotFound(
        f"alert rule {rule_id} does not exist: GET /api/v1/alert-rules lists the rules", code="rule_not_found"
    )


def _taken(name: str) -> Conflict:
    return Conflict(f"an alert rule named {name!r} exists already: pick another name", code="rule_name_taken")


@router.get(
    "/alert-rules",
    operation_id="list_alert_rules",
    response_model=AlertRuleList,
    responses=error_responses(401, 403, 422),
    summary="Alert rules, built-in ones first",
)
def list_alert_rules(
    conn: ConnDep, _viewer: ViewerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 500
) -> AlertRuleList:
    return AlertRuleList.model_validate({"items": store.list_rules(conn, limit)})


@router.get(
    "/alert-rules/{rule_id}",
    operation_id="get_alert_rule",
    response_model=AlertRule,
    responses=error_responses(401, 403, 404, 422),
    summary="One alert rule",
)
def get_alert_rule(rule_id: RuleId, conn: ConnDep, _viewer: ViewerDep) -> AlertRule:
    view = store.get_rule(conn, rule_id)
    if view is None:
        raise _not_found(rule_id)
    return AlertRule.model_validate(view)


@router.post(
    "/alert-rules",
    operation_id="create_alert_rule",
    response_model=AlertRule,
    status_code=201,
    responses=error_responses(400, 401, 403, 409, 422),
    summary="Create a threshold rule (admin)",
)
async def create_alert_rule(body: AlertRuleCreate, writer: WriterDep, _admin: AdminDep) -> AlertRule:
    values = {
        "name": body.name,
        "type": "threshold",
        "kind": body.kind.value if body.kind else None,
        "group_by": None if body.group_by == "fleet" else body.group_by,
        "window_s": body.window,
        "threshold": body.threshold,
        "for_s": body.for_,
        "severity": body.severity,
        "match": body.match,
        "labels": body.labels,
        "annotations": body.annotations,
        "enabled": body.enabled,
    }
    if body.window < 60:
        raise InvalidInput(
            f"window {body.window}s is shorter than a minute: rules count per-minute rollups, "
            "use 60s or more",
            code="invalid_window",
        )
    now = dt.datetime.now(dt.UTC)

    def _create(conn: Connection) -> int | None:
        if store.rule_name_taken(conn, body.name):
            return None
        return store.insert_rule(conn, values, now)

    rule_id = await writer.run(_create)
    if rule_id is None:
        raise _taken(body.name)
    return await _answer(writer, rule_id)


async def _answer(writer: Any, rule_id: int) -> AlertRule:
    view = await writer.run(lambda conn: store.get_rule(conn, rule_id))
    if view is None:
        raise _not_found(rule_id)
    return AlertRule.model_validate(view)


@router.patch(
    "/alert-rules/{rule_id}",
    operation_id="update_alert_rule",
    response_model=AlertRule,
    responses=error_responses(400, 401, 403, 404, 409, 422),
    summary="Change, retune, disable or enable a rule, built-in ones too (admin)",
)
async def update_alert_rule(
    rule_id: RuleId, body: AlertRuleUpdate, writer: WriterDep, _admin: AdminDep
) -> AlertRule:
    given = body.model_dump(exclude_unset=True)
    nulls = [k for k, v in given.items() if v is None and k not in ("kind",)]
    if nulls:
        raise InvalidInput(
            f"{', '.join(nulls)} cannot be null: leave them out to keep them", code="invalid_rule"
        )
    values: dict[str, Any] = {}
    for key, value in given.items():
        column = {"window": "window_s", "for_": "for_s"}.get(key, key)
        if key == "group_by":
            value = None if value == "fleet" else value
        if key == "kind" and value is not None:
            value = value.value if hasattr(value, "value") else value
        values[column] = value
    if "window_s" in values and values["window_s"] < 60:
        raise InvalidInput("window is shorter than a minute: use 60s or more", code="invalid_window")
    now = dt.datetime.now(dt.UTC)

    def _update(conn: Connection) -> str | None:
        row = store.rule_row(conn, rule_id)
        if row is None:
            return "missing"
        if row.builtin:
            fixed = [k for k in BUILTIN_FIXED if k in values]
            if fixed:
                return "builtin:" + ", ".join(fixed)
            if "threshold" in values and row.threshold is None:
                return "builtin:threshold"
            if set(values.get("match", {})) - {"host"}:
                return "builtin:match (only host)"
        if "name" in values and store.rule_name_taken(conn, values["name"], other_than=rule_id):
            return "taken"
        store.update_rule(conn, rule_id, values, now)
        return None

    problem = await writer.run(_update)
    if problem == "missing":
        raise _not_found(rule_id)
    if problem == "taken":
        raise _taken(values["name"])
    if problem is not None:
        raise InvalidInput(
            f"a built-in rule's {problem.split(':', 1)[1]} cannot be changed: disable it and create a "
            "threshold rule instead",
            code="builtin_rule",
        )
    return await _answer(writer, rule_id)


@router.delete(
    "/alert-rules/{rule_id}",
    operation_id="delete_alert_rule",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404, 409, 422),
    summary="Delete a threshold rule; its firing alerts resolve (admin)",
)
async def delete_alert_rule(
    rule_id: RuleId, writer: WriterDep, settings: SettingsDep, _admin: AdminDep
) -> Response:
    now = dt.datetime.now(dt.UTC)

    def _delete(conn: Connection) -> str | None:
        row = store.rule_row(conn, rule_id)
        if row is None:
            return "missing"
        if row.builtin:
            return "builtin"
        resolve_rule_alerts(conn, rule_id, settings, now)
        store.delete_rule(conn, rule_id)
        return None

    problem = await writer.run(_delete)
    if problem == "missing":
        raise _not_found(rule_id)
    if problem == "builtin":
        raise Conflict(
            f'alert rule {rule_id} is built in and cannot be deleted: PATCH it with {{"enabled": false}}',
            code="builtin_rule",
        )
    return Response(status_code=204)
