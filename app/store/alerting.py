"""Alert rules, alerts, silences, webhooks and their deliveries as the API reads and writes them.

Reads take a Connection; writes are `fn(conn)` jobs for the app's writer. Rows come out as
plain dicts in the API's shape (app/api/alert_models.py validates them). Every list is bounded
by a limit. The evaluator and the sender (app/alerts/) own the alert and delivery state; what
the API changes here is configuration, plus a silence's expiry and a redelivery.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from app.alerts.outbox import generator_url
from app.alerts.rules import format_duration, silenced_by
from app.alerts.signing import new_msg_id
from app.settings import Settings
from app.store.tables import alert, alert_rule, silence, webhook, webhook_delivery

# ------------------------------------------------------------------------------ rules


def _rule_view(row: Any, firing: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "kind": row.kind,
        "group_by": row.group_by or "fleet",
        "window": format_duration(row.window_s),
        "window_s": row.window_s,
        "threshold": row.threshold,
        "for": format_duration(row.for_s),
        "for_s": row.for_s,
        "severity": row.severity,
        "match": row.match or {},
        "labels": row.labels or {},
        "annotations": row.annotations or {},
        "builtin": bool(row.builtin),
        "enabled": bool(row.enabled),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "firing": firing,
    }


def _firing_by_rule(conn: Connection, rule_id: int | None = None) -> dict[int, int]:
    q = select(alert.c.rule_id, func.count()).where(alert.c.status == "firing").group_by(alert.c.rule_id)
    if rule_id is not None:
        q = q.where(alert.c.rule_id == rule_id)
    return {rid: int(n) for rid, n in conn.execute(q)}


def list_rules(conn: Connection, limit: int) -> list[dict[str, Any]]:
    firing = _firing_by_rule(conn)
    rows = conn.execute(
        select(alert_rule).order_by(alert_rule.c.builtin.desc(), alert_rule.c.id).limit(limit)
    )
    return [_rule_view(r, firing.get(r.id, 0)) for r in rows]


def get_rule(conn: Connection, rule_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(alert_rule).where(alert_rule.c.id == rule_id)).one_or_none()
    if row is None:
        return None
    return _rule_view(row, _firing_by_rule(conn, rule_id).get(rule_id, 0))


def rule_row(conn: Connection, rule_id: int) -> Any:
    return conn.execute(select(alert_rule).where(alert_rule.c.id == rule_id)).one_or_none()


def rule_name_taken(conn: Connection, name: str, other_than: int | None = None) -> bool:
    q = select(alert_rule.c.id).where(alert_rule.c.name == name)
    if other_than is not None:
        q = q.where(alert_rule.c.id != other_than)
    return conn.execute(q).first() is not None


def insert_rule(conn: Connection, values: Mapping[str, Any], now: dt.datetime) -> int:
    return int(
        conn.execute(
            insert(alert_rule)
            .values(**values, builtin=False, created_at=now, updated_at=now)
            .returning(alert_rule.c.id)
        ).scalar_one()
    )


def update_rule(conn: Connection, rule_id: int, values: Mapping[str, Any], now: dt.datetime) -> None:
    conn.execute(update(alert_rule).where(alert_rule.c.id == rule_id).values(**values, updated_at=now))


def delete_rule(conn: Connection, rule_id: int) -> None:
    conn.execute(delete(alert_rule).where(alert_rule.c.id == rule_id))


# ------------------------------------------------------------------------------ alerts


def _active_silences(conn: Connection, now: dt.datetime) -> list[tuple[int, Mapping[str, str]]]:
    return [
        (sid, dict(m or {}))
        for sid, m in conn.execute(
            select(silence.c.id, silence.c.matchers).where(
                silence.c.starts_at <= now, silence.c.ends_at > now
            )
        )
    ]


def _alert_view(
    row: Any, silences: list[tuple[int, Mapping[str, str]]], settings: Settings
) -> dict[str, Any]:
    labels = dict(row.labels)
    by = silenced_by(labels, silences) if row.status != "resolved" else []
    return {
        "id": row.id,
        "rule_id": row.rule_id,
        "rule": row.rule_name,
        "fingerprint": row.fingerprint,
        "status": row.status,
        "labels": labels,
        "annotations": dict(row.annotations),
        "value": row.value,
        "pending_since": row.pending_since,
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        "last_evaluated_at": row.last_evaluated_at,
        "generator_url": generator_url(labels, settings),
        "silenced": bool(by),
        "silenced_by": by,
        "notified": row.notified_at is not None,
    }


@dataclass(frozen=True, slots=True)
class AlertPage:
    items: list[dict[str, Any]]
    # The id below which the list goes on (the next page starts strictly after it), or None at
    # its end: a mass outage fires an AgentSilent per host, more than any one page.
    next_before: int | None


def list_alerts(
    conn: Connection,
    settings: Settings,
    *,
    status: str | None,
    rule: str | None,
    host: str | None,
    guest: str | None,
    since: dt.datetime | None,
    limit: int,
    now: dt.datetime,
    before: int | None = None,
) -> AlertPage:
    """One page of alerts, newest first (by id: ids grow as alerts open), below `before`."""
    q = select(alert, alert_rule.c.name.label("rule_name")).join(
        alert_rule, alert_rule.c.id == alert.c.rule_id
    )
    if status is not None:
        q = q.where(alert.c.status == status)
    if rule is not None:
        q = q.where(alert_rule.c.name == rule)
    if since is not None:
        # History: alerts still open, or that ended in the range.
        q = q.where((alert.c.ends_at.is_(None)) | (alert.c.ends_at >= since))
    if before is not None:
        q = q.where(alert.c.id < before)
    # host/guest are labels (JSON): filtered here, over a bounded window of rows. A window that
    # ends before the page is full still gives where to go on from: a page may then be short.
    scan = limit if host is None and guest is None else min(limit * 20, 20_000)
    rows = conn.execute(q.order_by(alert.c.id.desc()).limit(scan + 1)).all()
    more, rows = len(rows) > scan, rows[:scan]
    silences = _active_silences(conn, now)
    out = []
    for i, row in enumerate(rows):
        labels = row.labels or {}
        if host is not None and labels.get("host") != host:
            continue
        if guest is not None and labels.get("guest") != guest:
            continue
        out.append(_alert_view(row, silences, settings))
        if len(out) >= limit:
            return AlertPage(out, row.id if more or i + 1 < len(rows) else None)
    return AlertPage(out, rows[-1].id if more else None)


def get_alert(conn: Connection, settings: Settings, alert_id: int, now: dt.datetime) -> dict[str, Any] | None:
    row = conn.execute(
        select(alert, alert_rule.c.name.label("rule_name"))
        .join(alert_rule, alert_rule.c.id == alert.c.rule_id)
        .where(alert.c.id == alert_id)
    ).one_or_none()
    return None if row is None else _alert_view(row, _active_silences(conn, now), settings)


# ------------------------------------------------------------------------------ silences


def _silence_view(row: Any, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": row.id,
        "matchers": row.matchers,
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        "created_by": row.created_by,
        "comment": row.comment,
        "created_at": row.created_at,
        "active": row.starts_at <= now < row.ends_at,
    }


def list_silences(
    conn: Connection, *, active: bool | None, limit: int, now: dt.datetime
) -> list[dict[str, Any]]:
    q = select(silence)
    if active is True:
        q = q.where(silence.c.starts_at <= now, silence.c.ends_at > now)
    elif active is False:
        q = q.where((silence.c.starts_at > now) | (silence.c.ends_at <= now))
    return [_silence_view(r, now) for r in conn.execute(q.order_by(silence.c.id.desc()).limit(limit))]


def get_silence(conn: Connection, silence_id: int, now: dt.datetime) -> dict[str, Any] | None:
    row = conn.execute(select(silence).where(silence.c.id == silence_id)).one_or_none()
    return None if row is None else _silence_view(row, now)


def insert_silence(conn: Connection, values: Mapping[str, Any]) -> int:
    return int(conn.execute(insert(silence).values(**values).returning(silence.c.id)).scalar_one())


def expire_silence(conn: Connection, silence_id: int, now: dt.datetime) -> bool:
    """Ends the silence now (kept for the record); False when there is none."""
    row = conn.execute(select(silence.c.ends_at).where(silence.c.id == silence_id)).one_or_none()
    if row is None:
        return False
    if row.ends_at > now:
        conn.execute(update(silence).where(silence.c.id == silence_id).values(ends_at=now))
    return True


# ------------------------------------------------------------------------------ webhooks

DELIVERY_COLUMNS = (
    "id",
    "webhook_id",
    "alert_id",
    "msg_id",
    "notice",
    "status",
    "attempts",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "latency_ms",
    "response_snippet",
    "created_at",
    "last_attempt_at",
    "delivered_at",
)


def _delivery_view(row: Any) -> dict[str, Any]:
    return {c: getattr(row, c) for c in DELIVERY_COLUMNS}


def _webhook_view(row: Any, last: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "format": row.format,
        "match": row.match or {},
        "enabled": bool(row.enabled),
        "gone_at": row.gone_at,
        "disabled_reason": row.disabled_reason,
        "created_at": row.created_at,
        "has_secret": bool(row.secret),
        "last_delivery": last,
    }


def _last_deliveries(conn: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    d = webhook_delivery
    # The latest attempted delivery per webhook (pending ones never tried say nothing yet).
    latest = (
        select(func.max(d.c.id))
        .where(d.c.webhook_id.in_(ids), d.c.attempts > 0)
        .group_by(d.c.webhook_id)
        .scalar_subquery()
    )
    rows = conn.execute(select(d).where(d.c.id.in_(latest))).all()
    return {r.webhook_id: _delivery_view(r) for r in rows}


def list_webhooks(conn: Connection, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(webhook).order_by(webhook.c.id).limit(limit)).all()
    last = _last_deliveries(conn, [r.id for r in rows])
    return [_webhook_view(r, last.get(r.id)) for r in rows]


def get_webhook(conn: Connection, webhook_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(webhook).where(webhook.c.id == webhook_id)).one_or_none()
    if row is None:
        return None
    return _webhook_view(row, _last_deliveries(conn, [row.id]).get(row.id))


def webhook_exists(conn: Connection, webhook_id: int) -> bool:
    return conn.execute(select(webhook.c.id).where(webhook.c.id == webhook_id)).first() is not None


def insert_webhook(conn: Connection, values: Mapping[str, Any], now: dt.datetime) -> int:
    return int(
        conn.execute(insert(webhook).values(**values, created_at=now).returning(webhook.c.id)).scalar_one()
    )


def update_webhook(conn: Connection, webhook_id: int, values: Mapping[str, Any]) -> bool:
    if not webhook_exists(conn, webhook_id):
        return False
    values = dict(values)
    if values.get("enabled") is True:
        values.update(gone_at=None, disabled_reason=None)  # the admin turned it back on
    if values:
        conn.execute(update(webhook).where(webhook.c.id == webhook_id).values(**values))
    return True


def delete_webhook(conn: Connection, webhook_id: int) -> bool:
    return conn.execute(delete(webhook).where(webhook.c.id == webhook_id)).rowcount == 1


def list_deliveries(
    conn: Connection, webhook_id: int, *, status: str | None, limit: int
) -> list[dict[str, Any]]:
    q = select(webhook_delivery).where(webhook_delivery.c.webhook_id == webhook_id)
    if status is not None:
        q = q.where(webhook_delivery.c.status == status)
    return [_delivery_view(r) for r in conn.execute(q.order_by(webhook_delivery.c.id.desc()).limit(limit))]


def get_delivery(conn: Connection, webhook_id: int, delivery_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(webhook_delivery).where(
            webhook_delivery.c.id == delivery_id, webhook_delivery.c.webhook_id == webhook_id
        )
    ).one_or_none()
    return None if row is None else _delivery_view(row)


def redeliver(conn: Connection, webhook_id: int, delivery_id: int, now: dt.datetime) -> int | None:
    """A new pending delivery with the same body (and a new webhook-id: the receiver is meant
    to process it again); None when there is no such delivery."""
    row = conn.execute(
        select(webhook_delivery).where(
            webhook_delivery.c.id == delivery_id, webhook_delivery.c.webhook_id == webhook_id
        )
    ).one_or_none()
    if row is None:
        return None
    return int(
        conn.execute(
            insert(webhook_delivery)
            .values(
                webhook_id=webhook_id,
                alert_id=row.alert_id,
                msg_id=new_msg_id(),
                notice=row.notice,
                body=row.body,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .returning(webhook_delivery.c.id)
        ).scalar_one()
    )
