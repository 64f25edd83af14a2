"""Request and response models of the alerting API: alert rules, alerts, silences, webhooks
and their deliveries (issue 12). Times are ISO 8601 UTC; durations are accepted as `"60s"`,
`"5m"`, `"1h"`, `"2d"` or seconds, and answered both ways (`"window": "1m"`, `"window_s": 60`).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from agent.payload import Action, Kind, Source
from app.alerts.rules import MATCH_KEYS, MAX_WINDOW_S, RESERVED_LABELS, parse_duration
from app.api.models import IsoTime

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_LABELS = 32
MAX_LABEL_VALUE = 1024
MAX_ANNOTATION = 4096


def _duration(value: object) -> int:
    if isinstance(value, str | int) and not isinstance(value, bool):
        seconds = parse_duration(value)
        if seconds > MAX_WINDOW_S:
            raise ValueError(f"at most {MAX_WINDOW_S // 86400} days")
        return seconds
    raise ValueError("expected a duration such as 60s, 5m, 1h or a number of seconds")


Duration = Annotated[int, BeforeValidator(_duration)]


def _label_map(value: dict[str, str], max_value: int) -> dict[str, str]:
    if len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} entries")
    for key, text in value.items():
        if not LABEL_NAME.match(key):
            raise ValueError(f"{key!r} is not a label name: letters, digits and _, not starting with a digit")
        if len(text) > max_value or "\x00" in text:
            raise ValueError(f"the value of {key!r} is longer than {max_value} characters or holds NUL")
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    _label_map(value, MAX_LABEL_VALUE)
    reserved = sorted(RESERVED_LABELS & set(value))
    if reserved:
        raise ValueError(f"{', '.join(reserved)} are set by splitwatch itself: use other label names")
    return value


def _matchers(value: dict[str, str]) -> dict[str, str]:
    return _label_map(value, MAX_LABEL_VALUE)


def _rule_match(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - MATCH_KEYS)
    if unknown:
        raise ValueError(f"unknown filter(s) {', '.join(unknown)}: use {', '.join(sorted(MATCH_KEYS))}")
    for key, allowed in (("action", Action), ("source", Source)):
        if key in value and value[key] not in {m.value for m in allowed}:
            raise ValueError(f"{key} {value[key]!r} is not one of {', '.join(m.value for m in allowed)}")
    return _label_map(value, 255)


Labels = Annotated[dict[str, str], AfterValidator(_labels)]
Annotations = Annotated[dict[str, str], AfterValidator(lambda v: _label_map(v, MAX_ANNOTATION))]
Matchers = Annotated[dict[str, str], AfterValidator(_matchers)]
RuleMatch = Annotated[dict[str, str], AfterValidator(_rule_match)]
RuleName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Severity = Literal["critical", "warning", "info"]
GroupBy = Literal["fleet", "host", "guest"]
WebhookFormat = Literal["alertmanager", "native", "alertmanager_api"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ------------------------------------------------------------------------------ rules


class AlertRuleCreate(_In):
    name: RuleName = Field(description="Unique; it is the alerts' `alertname` label.")
    type: Literal["threshold"] = Field(
        "threshold", description="Only threshold rules are created; the built-in rules exist already."
    )
    kind: Kind | None = Field(None, description="Count only this kind of lock; null: both.")
    group_by: GroupBy = Field("fleet", description="One alert for the fleet, or one per host or per guest.")
    window: Duration = Field(description="Count over this window (whole minutes of rollup buckets).")
    threshold: int = Field(ge=1, le=10**12, description="Fire when the count is at or above this.")
    for_: Duration = Field(0, alias="for", description="Only fire when true for this long (pending before).")
    severity: Severity = "warning"
    match: RuleMatch = Field(
        default_factory=dict, description="Filters on what is counted: host, guest, action, source."
    )
    labels: Labels = Field(default_factory=dict, description="Extra labels on its alerts.")
    annotations: Annotations = Field(
        default_factory=dict, description="Extra annotations; `{value}`, `{host}`, `{guest}` are filled in."
    )
    enabled: bool = True


class AlertRuleUpdate(_In):
    """Any subset. A built-in rule takes window, threshold, for, severity, match (host), labels,
    annotations and enabled; its name, type, kind and group_by are fixed."""

    name: RuleName | None = None
    kind: Kind | None = None
    group_by: GroupBy | None = None
    window: Duration | None = None
    threshold: int | None = Field(None, ge=1, le=10**12)
    for_: Duration | None = Field(None, alias="for")
    severity: Severity | None = None
    match: RuleMatch | None = None
    labels: Labels | None = None
    annotations: Annotations | None = None
    enabled: bool | None = None


class AlertRule(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: int
    name: str
    type: str = Field(
        description="threshold, or a built-in type: guest_killed, host_inconsistent, "
        "agent_silent, events_lost, forged_records, new_offender."
    )
    kind: Kind | None
    group_by: GroupBy
    window: str
    window_s: int
    threshold: int | None
    for_: str = Field(alias="for")
    for_s: int
    severity: Severity
    match: dict[str, str]
    labels: dict[str, str]
    annotations: dict[str, str]
    builtin: bool
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    firing: int = Field(description="Its alerts firing now.")


class AlertRuleList(BaseModel):
    items: list[AlertRule]


# ------------------------------------------------------------------------------ alerts


class Alert(BaseModel):
    id: int
    rule_id: int
    rule: str
    fingerprint: str = Field(description="Alertmanager's fingerprint of the labels (16 hex digits).")
    status: Literal["pending", "firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    value: int | None = Field(description="The figure that made it fire (count, seconds silent, ...).")
    pending_since: dt.datetime
    starts_at: dt.datetime | None = Field(description="When it began firing; null while pending.")
    ends_at: dt.datetime | None = Field(description="When it resolved.")
    last_evaluated_at: dt.datetime
    generator_url: str = Field(description="Where the dashboard shows it.")
    silenced: bool
    silenced_by: list[int] = Field(description="Ids of the active silences that match it.")
    notified: bool = Field(description="Its firing notices went to the outbox.")


class AlertList(BaseModel):
    items: list[Alert]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end. With `host` or `guest`, a page "
        "may hold fewer than `limit` alerts and still have one (those filters look at a bounded window of "
        "alerts per request)."
    )


# ------------------------------------------------------------------------------ silences


class SilenceCreate(_In):
    matchers: Matchers = Field(
        min_length=1, description="Label: value pairs an alert must all have to be silenced (at least one)."
    )
    starts_at: IsoTime | None = Field(None, description="Default: now.")
    ends_at: IsoTime | None = Field(None, description="When it expires; or give `duration`.")
    duration: Duration | None = Field(
        None, description="How long from starts_at, e.g. 2h (instead of ends_at)."
    )
    comment: str = Field("", max_length=1000)


class Silence(BaseModel):
    id: int
    matchers: dict[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime
    created_by: str | None
    comment: str
    created_at: dt.datetime
    active: bool


class SilenceList(BaseModel):
    items: list[Silence]


# ------------------------------------------------------------------------------ webhooks

WebhookUrl = Annotated[str, Field(min_length=1, max_length=2000)]


class WebhookCreate(_In):
    url: WebhookUrl = Field(
        description="http(s) URL of the receiver; for alertmanager_api, the Alertmanager's base URL."
    )
    format: WebhookFormat = "alertmanager"
    secret: str | None = Field(
        None,
        max_length=200,
        description="whsec_<base64>; generated when omitted (none for alertmanager_api).",
    )
    match: Matchers = Field(
        default_factory=dict, description="Only alerts with these labels; empty: every alert."
    )
    enabled: bool = True


class WebhookUpdate(_In):
    url: WebhookUrl | None = None
    format: WebhookFormat | None = None
    match: Matchers | None = None
    enabled: bool | None = Field(None, description="true also clears a 410 Gone.")


class Delivery(BaseModel):
    id: int
    webhook_id: int
    alert_id: int | None
    msg_id: str = Field(description="The webhook-id header: the same on every retry of this delivery.")
    notice: Literal["firing", "resolved", "test"] | str
    status: Literal["pending", "sending", "delivered", "failed", "gone"] | str
    attempts: int
    next_attempt_at: dt.datetime
    last_status_code: int | None
    last_error: str | None
    latency_ms: int | None
    response_snippet: str | None = Field(description="The first bytes of the receiver's latest answer.")
    created_at: dt.datetime
    last_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None


class DeliveryList(BaseModel):
    items: list[Delivery]


class Webhook(BaseModel):
    id: int
    url: str
    format: WebhookFormat
    match: dict[str, str]
    enabled: bool
    gone_at: dt.datetime | None = Field(
        description="When the receiver answered 410 Gone (and the webhook was disabled)."
    )
    disabled_reason: str | None
    created_at: dt.datetime
    has_secret: bool
    last_delivery: Delivery | None = Field(description="The latest attempted delivery.")


class WebhookCreated(Webhook):
    secret: str | None = Field(description="Shown only in this answer: store it to verify signatures.")


class WebhookList(BaseModel):
    items: list[Webhook]


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_unset=True)
