"""Webhook bodies against what a real Alertmanager 0.25 sent to a webhook receiver
(tests/samples/alertmanager/, captured from `prometheus-alertmanager` with a receiver on
127.0.0.1): the same fields, of the same JSON types, the same time format."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from app.alerts.bodies import Notice, alertmanager_api_body, alertmanager_body, go_time, native_body

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "alertmanager"
STARTS = dt.datetime(2026, 11, 30, 7, 58, 20, 348766, tzinfo=dt.UTC)
ENDS = dt.datetime(2026, 11, 30, 7, 58, 24, tzinfo=dt.UTC)
LABELS = {"alertname": "GuestKilled", "severity": "critical", "host": "h1", "guest": "vm1"}


def notice(status: str) -> Notice:
    return Notice(
        alert_id=1,
        rule="GuestKilled",
        status=status,
        labels=LABELS,
        annotations={"summary": "s", "description": "d"},
        starts_at=STARTS,
        ends_at=ENDS if status == "resolved" else None,
        generator_url="http://x/#/guest/vm1",
        fingerprint="5c24bf30b42931b2",
        value=1,
    )


def shape(value: Any) -> Any:
    """The JSON structure with leaves replaced by their types."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_alertmanager_body_has_every_field_of_the_real_one_with_the_same_types(status: str) -> None:
    real = json.loads((SAMPLES / f"0.25-webhook-{status}.json").read_text())
    ours = alertmanager_body([notice(status)], "hook", "http://vm:18932")
    # groupLabels differ by design: one alert per notice, so its group is its whole label set.
    assert {**shape(ours), "groupLabels": None} == {**shape(real), "groupLabels": None}
    assert set(real["groupLabels"].items()) <= set(ours["groupLabels"].items())
    assert ours["version"] == real["version"] == "4"
    assert ours["status"] == real["status"]
    assert ours["alerts"][0]["labels"] == real["alerts"][0]["labels"]
    assert ours["alerts"][0]["fingerprint"] == real["alerts"][0]["fingerprint"]
    assert ours["alerts"][0]["endsAt"] == real["alerts"][0]["endsAt"] or status == "firing"
    assert ours["commonLabels"] == real["commonLabels"]
    assert ours["commonAnnotations"] == real["commonAnnotations"]
    assert ours["truncatedAlerts"] == real["truncatedAlerts"]


def test_firing_alert_ends_at_gos_zero_time_like_alertmanager() -> None:
    real = json.loads((SAMPLES / "0.25-webhook-firing.json").read_text())
    assert (
        alertmanager_body([notice("firing")], "hook", "")["alerts"][0]["endsAt"]
        == real["alerts"][0]["endsAt"]
    )


def test_group_key_is_alertmanagers_format_with_the_alert_as_its_group() -> None:
    real = json.loads((SAMPLES / "0.25-webhook-firing.json").read_text())
    assert real["groupKey"] == '{}:{alertname="GuestKilled"}'  # Alertmanager grouped by alertname
    ours = alertmanager_body([notice("firing")], "hook", "")
    assert ours["groupKey"] == '{}:{alertname="GuestKilled", guest="vm1", host="h1", severity="critical"}'
    assert ours["groupLabels"] == LABELS


def test_times_are_rfc3339_utc_with_z() -> None:
    assert go_time(STARTS) == "2026-11-30T07:58:20.348766Z"
    assert go_time(ENDS) == "2026-11-30T07:58:24Z"
    assert go_time(None) == "0001-01-01T00:00:00Z"


def test_alertmanager_api_body_sends_ends_at_only_on_resolve() -> None:
    [firing] = alertmanager_api_body([notice("firing")])
    assert set(firing) == {"labels", "annotations", "startsAt", "generatorURL"}
    [resolved] = alertmanager_api_body([notice("resolved")])
    assert resolved["endsAt"] == "2026-11-30T07:58:24Z"


def test_native_body_carries_the_rule_value_and_link() -> None:
    body = native_body(notice("resolved"), "https://sw.example.com")
    assert body["version"] == "splitwatch/1" and body["status"] == "resolved"
    assert body["alert"]["rule"] == "GuestKilled" and body["alert"]["value"] == 1
    assert body["alert"]["ends_at"] == "2026-11-30T07:58:24Z"
    assert body["alert"]["url"] == "http://x/#/guest/vm1"
    assert body["external_url"] == "https://sw.example.com"
