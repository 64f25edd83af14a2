"""Alerting end to end in one backend: events in through the ingest route, notices out to real
HTTP receivers on 127.0.0.1 and to a real Alertmanager (issue 12, "Done means")."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks

from agent.payload import Action
from tests.app.alerts.conftest import Alerting, Alertmanager, Receiver, poll

# Every field of an Alertmanager v4 webhook body, and of each of its alerts, as Alertmanager 0.25
# sends them (tests/samples/alertmanager/0.25-webhook-firing.json was captured from it).
AM_FIELDS = {
    "receiver",
    "status",
    "alerts",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "version",
    "groupKey",
    "truncatedAlerts",
}
AM_ALERT_FIELDS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


def previous_minute() -> datetime:
    """A time in the minute bucket before the current one: counted by a 60 s window now, out of
    it at the next minute boundary (so a test waits at most a minute for the resolve). Past the
    minute's 40th second it waits for the next minute, so the ingests and the first evaluation
    (on a loaded CI box: several seconds) still fall in this minute. Take it once per test: the
    events of one alert must share its minute."""
    now = datetime.now(UTC)
    if now.second >= 40:
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0) - timedelta(seconds=30)


def verify(secret: str, request: Any) -> Any:
    return standardwebhooks.Webhook(secret).verify(request.body, request.headers)


@pytest.mark.slow
def test_threshold_rule_fires_an_alertmanager_v4_body_that_verifies_then_resolves(
    alerting: Alerting, receiver: Receiver
) -> None:
    rule = alerting.rule(
        name="busy-guest",
        type="threshold",
        kind="split_lock",
        group_by="guest",
        window="60s",
        threshold=3,
        **{"for": "0s"},
    )
    hook = alerting.webhook(receiver.url, format="alertmanager", match={"alertname": "busy-guest"})
    secret = hook["secret"]
    assert secret.startswith("whsec_")

    at = previous_minute()
    alerting.ingest("kvm-1", guest="vm-busy", n=2, at=at)
    alerting.ingest("kvm-1", guest="vm-quiet", n=1, at=at)
    alerting.ingest("kvm-1", guest="vm-busy", n=1, at=at)  # 3: at the threshold

    firing = poll(lambda: receiver.bodies("firing"), "the firing notice")
    request = receiver.requests[0]
    body = verify(secret, request)  # raises WebhookVerificationError when the signature is wrong
    assert request.headers["webhook-id"].startswith("msg_")
    assert set(body) == AM_FIELDS
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == f"webhook-{hook['id']}"
    assert body["externalURL"] == "https://splitwatch.example.com"
    assert body["truncatedAlerts"] == 0
    [alert] = body["alerts"]
    assert set(alert) == AM_ALERT_FIELDS
    assert alert["labels"] == {
        "alertname": "busy-guest",
        "severity": "warning",
        "host": "kvm-1",
        "guest": "vm-busy",
    }
    assert alert["status"] == "firing"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert "3 split_lock" in alert["annotations"]["summary"]
    assert "vm-busy" in alert["annotations"]["description"]
    assert alert["generatorURL"] == "https://splitwatch.example.com/#/guest/vm-busy?range=24h"
    assert len(alert["fingerprint"]) == 16
    assert body["commonLabels"] == alert["labels"]
    assert body["groupLabels"] == alert["labels"]
    assert (
        body["groupKey"] == '{}:{alertname="busy-guest", guest="vm-busy", host="kvm-1", severity="warning"}'
    )
    assert len(firing) == 1  # vm-quiet (1) stays under the threshold

    [listed] = alerting.alerts(status="firing", rule="busy-guest")
    assert listed["fingerprint"] == alert["fingerprint"]
    assert listed["rule_id"] == rule["id"]
    assert listed["value"] == 3

    resolved = poll(lambda: receiver.bodies("resolved"), "the resolved notice after the window", 150)
    [gone] = resolved[0]["alerts"]
    assert gone["status"] == "resolved"
    assert gone["fingerprint"] == alert["fingerprint"]
    assert gone["startsAt"] == alert["startsAt"]
    assert gone["endsAt"] > gone["startsAt"]
    verify(secret, receiver.requests[-1])
    assert receiver.requests[-1].headers["webhook-id"] != request.headers["webhook-id"]
    assert len(receiver.bodies("firing")) == 1  # fired once, never again
    assert alerting.alerts(status="firing", rule="busy-guest") == []


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_real_alertmanager_lists_the_pushed_alert_then_sees_it_resolved(
    alerting: Alerting, alertmanager: Alertmanager
) -> None:
    alerting.rule(name="am-busy", type="threshold", group_by="host", window="60s", threshold=1)
    hook = alerting.webhook(alertmanager.url, format="alertmanager_api", match={"alertname": "am-busy"})
    assert hook["secret"] is None and hook["has_secret"] is False

    alerting.ingest("kvm-am", guest="vm-am", at=previous_minute())
    [ours] = poll(lambda: alerting.alerts(status="firing", rule="am-busy"), "am-busy to fire")

    def listed() -> list[dict[str, Any]]:
        return [a for a in alertmanager.alerts() if a["labels"].get("alertname") == "am-busy"]

    [in_am] = poll(listed, "Alertmanager to list the alert")
    assert in_am["labels"] == {"alertname": "am-busy", "severity": "warning", "host": "kvm-am"}
    assert in_am["fingerprint"] == ours["fingerprint"]  # Alertmanager computes the same fingerprint
    assert in_am["status"]["state"] == "active"
    assert in_am["generatorURL"] == "https://splitwatch.example.com/#/host/kvm-am?range=24h"
    assert in_am["annotations"]["summary"] == ours["annotations"]["summary"]

    def resolved_by_am() -> list[Any]:
        return [
            b
            for b in alertmanager.receiver.bodies("resolved")
            if any(a["labels"].get("alertname") == "am-busy" for a in b["alerts"])
        ]

    poll(resolved_by_am, "Alertmanager to send its own resolved notice", 150)
    assert listed() == []  # resolved alerts leave Alertmanager's active list
    [delivery, *_] = [d for d in alerting.deliveries(hook["id"]) if d["notice"] == "resolved"]
    assert delivery["status"] == "delivered"


@pytest.mark.slow
def test_guest_killed_in_fatal_mode_alerts_with_no_rule_configured(
    alerting: Alerting, receiver: Receiver
) -> None:
    hook = alerting.webhook(receiver.url, format="native")  # no match: every alert
    alerting.ingest("kvm-fatal", guest="vm-doomed", action=Action.SIGBUS, mode="fatal")

    def killed() -> list[Any]:
        return [b for b in receiver.bodies("firing") if b["alert"]["rule"] == "GuestKilled"]

    [body] = poll(killed, "a GuestKilled notice")
    request = next(r for r in receiver.requests if r.json() == body)
    standardwebhooks.Webhook(hook["secret"]).verify(request.body, request.headers)
    assert body["version"] == "splitwatch/1"
    alert = body["alert"]
    assert alert["labels"] == {
        "alertname": "GuestKilled",
        "severity": "critical",
        "host": "kvm-fatal",
        "guest": "vm-doomed",
    }
    assert "SIGBUS" in alert["annotations"]["summary"]
    assert "fatal" in alert["annotations"]["description"]
    assert alert["url"] == "https://splitwatch.example.com/#/guest/vm-doomed?range=24h"
    assert alert["value"] == 1
    [rule] = [
        r for r in alerting.viewer.get("/api/v1/alert-rules").json()["items"] if r["name"] == "GuestKilled"
    ]
    assert rule["builtin"] is True and rule["firing"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_silence_suppresses_the_notice_until_it_expires(alerting: Alerting, receiver: Receiver) -> None:
    alerting.disable_builtins()
    alerting.rule(name="hushed", type="threshold", group_by="guest", window="60s", threshold=1)
    alerting.webhook(receiver.url)
    r = alerting.admin.post(
        "/api/v1/silences",
        json={"matchers": {"guest": "vm-hush"}, "duration": "1h", "comment": "maintenance"},
    )
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["active"] is True

    alerting.ingest("kvm-s", guest="vm-hush")
    alerting.ingest("kvm-s", guest="vm-loud")
    poll(lambda: receiver.bodies("firing"), "vm-loud's notice")
    [hushed] = poll(lambda: alerting.alerts(status="firing", guest="vm-hush"), "vm-hush to fire")
    assert hushed["silenced"] is True and hushed["silenced_by"] == [silence["id"]]
    assert hushed["notified"] is False
    # Several evaluations later, still nothing for vm-hush.
    seen = hushed["last_evaluated_at"]
    poll(
        lambda: alerting.alerts(status="firing", guest="vm-hush")[0]["last_evaluated_at"] > seen,
        "re-evaluation",
    )
    assert [b["alerts"][0]["labels"]["guest"] for b in receiver.bodies()] == ["vm-loud"]

    r = alerting.admin.delete(f"/api/v1/silences/{silence['id']}")
    assert r.status_code == 200 and r.json()["active"] is False
    poll(lambda: len(receiver.bodies("firing")) == 2, "vm-hush's notice once the silence expired")
    assert sorted(b["alerts"][0]["labels"]["guest"] for b in receiver.bodies()) == ["vm-hush", "vm-loud"]
