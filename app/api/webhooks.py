"""/api/v1/webhooks: where notices go, and their delivery log (issue 12). Admin only, reads too:
a webhook URL often carries a credential of its own.

The secret (whsec_...) is answered once, by POST; afterwards only `has_secret`. A URL on a
loopback, private, link-local or metadata address is refused with 422 and the reason, unless
SPLITWATCH_WEBHOOK_ALLOW_PRIVATE=true (app/alerts/urls.py; checked again at every send).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from app.alerts.outbox import send_test
from app.alerts.signing import new_secret, secret_problem
from app.alerts.urls import UrlRefused, check_url
from app.api.alert_models import (
    Delivery,
    DeliveryList,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookUpdate,
)
from app.deps import AdminDep, ConnDep, SettingsDep, WriterDep
from app.errors import InvalidInput, NotFound, error_responses
from app.settings import Settings
from app.store import alerting as store

router = APIRouter(prefix="/api/v1", tags=["webhooks"])

WebhookId = Annotated[int, Path(ge=1, le=2**31 - 1)]
DeliveryId = Annotated[int, Path(ge=1, le=2**62)]


def _not_found(webhook_id: int) -> NotFound:
    return NotFound(
        f"webhook {webhook_id} does not exist: GET /api/v1/webhooks lists them", code="webhook_not_found"
    )


async def _check_url(url: str, settings: Settings) -> None:
    try:
        await run_in_threadpool(check_url, url, settings.webhook_allow_private)
    except UrlRefused as exc:
        raise InvalidInput(
            f"webhook URL refused: {exc}",
            code="url_refused",
            details=[{"field": "body.url", "problem": str(exc), "type": "url_refused"}],
        ) from None


@router.get(
    "/webhooks",
    operation_id="list_webhooks",
    response_model=WebhookList,
    responses=error_responses(401, 403, 422),
    summary="Webhooks with their latest delivery (admin)",
)
def list_webhooks(
    conn: ConnDep, _admin: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 500
) -> WebhookList:
    return WebhookList.model_validate({"items": store.list_webhooks(conn, limit)})


@router.get(
    "/webhooks/{webhook_id}",
    operation_id="get_webhook",
    response_model=Webhook,
    responses=error_responses(401, 403, 404, 422),
    summary="One webhook (admin)",
)
def get_webhook(webhook_id: WebhookId, conn: ConnDep, _admin: AdminDep) -> Webhook:
    view = store.get_webhook(conn, webhook_id)
    if view is None:
        raise _not_found(webhook_id)
    return Webhook.model_validate(view)


@router.post(
    "/webhooks",
    operation_id="create_webhook",
    response_model=WebhookCreated,
    status_code=201,
    responses=error_responses(400, 401, 403, 422),
    summary="Add a webhook; the answer holds its secret, shown only this once (admin)",
)
async def create_webhook(
    body: WebhookCreate, writer: WriterDep, settings: SettingsDep, _admin: AdminDep
) -> WebhookCreated:
    if body.format == "alertmanager_api":
        if body.secret is not None:
            raise InvalidInput(
                "an alertmanager_api webhook posts to Alertmanager's API, which takes no signature: "
                "omit the secret",
                code="invalid_webhook",
            )
        secret = ""
    elif body.secret is None:
        secret = new_secret()
    else:
        problem = secret_problem(body.secret)
        if problem is not None:
            raise InvalidInput(f"webhook secret refused: {problem}", code="invalid_secret")
        secret = body.secret
    await _check_url(body.url, settings)
    now = dt.datetime.now(dt.UTC)
    values = {
        "url": body.url,
        "format": body.format,
        "secret": secret,
        "match": body.match,
        "enabled": body.enabled,
    }

    def _create(conn: Connection) -> dict[str, Any] | None:
        return store.get_webhook(conn, store.insert_webhook(conn, values, now))

    view = await writer.run(_create)
    assert view is not None
    return WebhookCreated.model_validate({**view, "secret": secret or None})


@router.patch(
    "/webhooks/{webhook_id}",
    operation_id="update_webhook",
    response_model=Webhook,
    responses=error_responses(400, 401, 403, 404, 422),
    summary="Change a webhook's URL, format, match or enabled (admin)",
)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, writer: WriterDep, settings: SettingsDep, _admin: AdminDep
) -> Webhook:
    values = body.model_dump(exclude_unset=True)
    nulls = [k for k, v in values.items() if v is None]
    if nulls:
        raise InvalidInput(
            f"{', '.join(nulls)} cannot be null: leave them out to keep them", code="invalid_webhook"
        )
    if "url" in values:
        await _check_url(values["url"], settings)

    def _update(conn: Connection) -> dict[str, Any] | Literal["secret"] | None:
        current = store.get_webhook(conn, webhook_id)
        if current is None:
            return None
        fmt = values.get("format", current["format"])
        if (fmt == "alertmanager_api") == current["has_secret"]:
            return "secret"
        store.update_webhook(conn, webhook_id, values)
        return store.get_webhook(conn, webhook_id)

    view = await writer.run(_update)
    if view is None:
        raise _not_found(webhook_id)
    if view == "secret":
        raise InvalidInput(
            "the format cannot switch between alertmanager_api (no secret) and a signed format: "
            "create a new webhook instead",
            code="invalid_webhook",
        )
    return Webhook.model_validate(view)


@router.delete(
    "/webhooks/{webhook_id}",
    operation_id="delete_webhook",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
    summary="Delete a webhook and its delivery log (admin)",
)
async def delete_webhook(webhook_id: WebhookId, writer: WriterDep, _admin: AdminDep) -> Response:
    if not await writer.run(lambda conn: store.delete_webhook(conn, webhook_id)):
        raise _not_found(webhook_id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    operation_id="list_webhook_deliveries",
    response_model=DeliveryList,
    responses=error_responses(401, 403, 404, 422),
    summary="The webhook's delivery log, newest first (admin)",
)
def list_deliveries(
    webhook_id: WebhookId,
    conn: ConnDep,
    _admin: AdminDep,
    status: Annotated[
        Literal["pending", "sending", "delivered", "failed", "gone"] | None,
        Query(description="Only this status."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    if not store.webhook_exists(conn, webhook_id):
        raise _not_found(webhook_id)
    return DeliveryList.model_validate(
        {"items": store.list_deliveries(conn, webhook_id, status=status, limit=limit)}
    )


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    operation_id="redeliver_webhook_delivery",
    response_model=Delivery,
    status_code=202,
    responses=error_responses(401, 403, 404, 422),
    summary="Send a delivery's body again, as a new delivery with a new webhook-id (admin)",
)
async def redeliver(
    webhook_id: WebhookId, delivery_id: DeliveryId, writer: WriterDep, _admin: AdminDep
) -> Delivery:
    now = dt.datetime.now(dt.UTC)

    def _redeliver(conn: Connection) -> dict[str, Any] | None:
        new_id = store.redeliver(conn, webhook_id, delivery_id, now)
        return None if new_id is None else store.get_delivery(conn, webhook_id, new_id)

    view = await writer.run(_redeliver)
    if view is None:
        raise NotFound(
            f"webhook {webhook_id} has no delivery {delivery_id}: "
            f"GET /api/v1/webhooks/{webhook_id}/deliveries lists them",
            code="delivery_not_found",
        )
    return Delivery.model_validate(view)


@router.post(
    "/webhooks/{webhook_id}/test",
    operation_id="test_webhook",
    response_model=Delivery,
    responses=error_responses(401, 403, 404, 422),
    summary="Send a signed test notice now and answer how it went (admin)",
)
async def test_webhook(
    webhook_id: WebhookId, request: Request, writer: WriterDep, settings: SettingsDep, _admin: AdminDep
) -> Delivery:
    delivery_id = await send_test(request.app.state.engine, writer.run, settings, webhook_id)
    if delivery_id is None:
        raise _not_found(webhook_id)
    view = await writer.run(lambda conn: store.get_delivery(conn, webhook_id, delivery_id))
    return Delivery.model_validate(view)
