"""Notification bodies, pure: the three webhook formats.

alertmanager      Alertmanager's webhook body, version "4", field for field as Alertmanager
                  0.25 sends it (tests/samples/alertmanager/ holds real bodies it sent), so
                  receivers written for Alertmanager work unchanged. One alert per notice, so
                  groupLabels are the alert's labels and groupKey names the alert alone: a
                  receiver that tracks incidents by groupKey sees each alert open and close.
native            splitwatch's own: the alert with its rule, value and status, snake_case.
alertmanager_api  the body of Alertmanager's POST /api/v2/alerts (a list of postable alerts),
                  for pushing into a real Alertmanager.

Times: Alertmanager writes Go RFC 3339 with nanoseconds and "0001-01-01T00:00:00Z" for the
zero time (a firing alert's endsAt); the same here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
NATIVE_VERSION = "splitwatch/1"


@dataclass(frozen=True, slots=True)
class Notice:
    """One alert as a notice tells it."""

    alert_id: int | None
    rule: str
    status: str  # firing | resolved
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    generator_url: str
    fingerprint: str
    value: int | None = None


def go_time(at: dt.datetime | None) -> str:
    """RFC 3339 in UTC with the fraction Go prints (trailing zeros dropped), Z suffix."""
    if at is None:
        return GO_ZERO_TIME
    at = at.astimezone(dt.UTC)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    if at.microsecond:
        text += f".{at.microsecond:06d}".rstrip("0")
    return text + "Z"


def _go_label_set(labels: Mapping[str, str]) -> str:
    # prometheus/common model.LabelSet.String(): sorted, name="value" (Go %q quoting), ", ".
    return "{" + ", ".join(f"{k}={json.dumps(labels[k], ensure_ascii=False)}" for k in sorted(labels)) + "}"


def group_key(labels: Mapping[str, str]) -> str:
    """Alertmanager's "<route matchers>:<group labels>" for the root route `{}`."""
    return "{}:" + _go_label_set(labels)


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}


def alertmanager_body(notices: Sequence[Notice], receiver: str, external_url: str) -> dict[str, Any]:
    """Alertmanager webhook version 4 (alertmanager notify/webhook: Message)."""
    labels = [n.labels for n in notices]
    status = "firing" if any(n.status == "firing" for n in notices) else "resolved"
    group_labels = _common(labels)
    return {
        "receiver": receiver,
        "status": status,
        "alerts": [
            {
                "status": n.status,
                "labels": dict(sorted(n.labels.items())),
                "annotations": dict(sorted(n.annotations.items())),
                "startsAt": go_time(n.starts_at),
                "endsAt": go_time(n.ends_at if n.status == "resolved" else None),
                "generatorURL": n.generator_url,
                "fingerprint": n.fingerprint,
            }
            for n in notices
        ],
        "groupLabels": group_labels,
        "commonLabels": _common(labels),
        "commonAnnotations": _common([n.annotations for n in notices]),
        "externalURL": external_url,
        "version": "4",
        "groupKey": group_key(group_labels),
        "truncatedAlerts": 0,
    }


def native_body(notice: Notice, external_url: str) -> dict[str, Any]:
    """splitwatch's own format: one alert, snake_case, with its rule and value."""
    return {
        "version": NATIVE_VERSION,
        "status": notice.status,
        "alert": {
            "id": notice.alert_id,
            "rule": notice.rule,
            "status": notice.status,
            "fingerprint": notice.fingerprint,
            "labels": dict(sorted(notice.labels.items())),
            "annotations": dict(sorted(notice.annotations.items())),
            "value": notice.value,
            "starts_at": notice.starts_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "ends_at": notice.ends_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
            if notice.ends_at and notice.status == "resolved"
            else None,
            "url": notice.generator_url,
        },
        "external_url": external_url,
    }


def alertmanager_api_body(notices: Sequence[Notice]) -> list[dict[str, Any]]:
    """POST /api/v2/alerts of Alertmanager (postableAlerts). A firing alert carries no endsAt:
    Alertmanager then keeps it for its resolve_timeout, and the sender re-posts it well within
    that while it fires; a resolved one carries its endsAt, which resolves it at once."""
    out = []
    for n in notices:
        alert: dict[str, Any] = {
            "labels": dict(n.labels),
            "annotations": dict(n.annotations),
            "startsAt": go_time(n.starts_at),
            "generatorURL": n.generator_url,
        }
        if n.status == "resolved" and n.ends_at is not None:
            alert["endsAt"] = go_time(n.ends_at)
        out.append(alert)
    return out


def render(fmt: str, notice: Notice, receiver: str, external_url: str) -> str:
    """The body text of a notice in a webhook's format (compact JSON, as signed and sent)."""
    body: Any
    if fmt == "alertmanager":
        body = alertmanager_body([notice], receiver, external_url)
    elif fmt == "alertmanager_api":
        body = alertmanager_api_body([notice])
    else:
        body = native_body(notice, external_url)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
