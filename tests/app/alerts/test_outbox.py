"""The sender against real receivers on 127.0.0.1: down then up, slow, 429 with Retry-After,
500, 410, redirects and 4xx each get exactly their behaviour; the delivery log says what
happened; a delivery can be sent again by API (issue 12). What each answer means, purely:
test_decide.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import standardwebhooks

from tests.app.alerts.conftest import Alerting, Answer, Receiver, poll

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def fire(alerting: Alerting, receiver: Receiver, guest: str = "vm-1", **webhook: Any) -> dict[str, Any]:
    """A webhook for rule "t" and an alert of it firing for `guest`; returns the webhook."""
    if not any(r["name"] == "t" for r in alerting.viewer.get("/api/v1/alert-rules").json()["items"]):
        alerting.rule(name="t", type="threshold", group_by="guest", window="60s", threshold=1)
    hook = webhook.pop("hook", None) or alerting.webhook(receiver.url, match={"alertname": "t"}, **webhook)
    alerting.ingest("kvm-o", guest=guest)
    return hook


def delivery(
    alerting: Alerting, hook: dict[str, Any], done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        items = alerting.deliveries(hook["id"])
        return items[0] if items and done(items[0]) else None

    found: dict[str, Any] = poll(find, "the delivery to reach the expected state")
    return found


# ------------------------------------------------------------------------------ real receivers


def test_receiver_down_then_up_gets_the_notice_once(make_alerting: Callable[..., Alerting]) -> None:
    alerting = make_alerting(webhook_max_attempts=1000)
    receiver = Receiver()  # not listening yet: connection refused
    hook = fire(alerting, receiver)
    down = delivery(alerting, hook, lambda d: d["attempts"] >= 2)
    assert down["status"] == "pending"
    assert "cannot reach the receiver" in down["last_error"]
    receiver.start()
    try:
        done = delivery(alerting, hook, lambda d: d["status"] == "delivered")
        assert len(receiver.requests) == 1
        assert receiver.requests[0].headers["webhook-id"] == done["msg_id"]
        assert done["last_status_code"] == 200 and done["response_snippet"] == "ok"
        assert done["attempts"] >= 3 and done["latency_ms"] is not None
    finally:
        receiver.stop()


def test_slow_receiver_times_out_and_is_retried(
    make_alerting: Callable[..., Alerting], receiver: Receiver
) -> None:
    alerting = make_alerting(webhook_timeout_s=0.5, webhook_max_attempts=1000)
    receiver.script([Answer(delay_s=1.5), Answer(delay_s=1.5)])  # then answers at once
    hook = fire(alerting, receiver, "vm-slow-1")
    fire(alerting, receiver, "vm-slow-2", hook=hook)
    poll(
        lambda: (
            len(receiver.bodies()) >= 4
            and all(d["status"] == "delivered" for d in alerting.deliveries(hook["id"]))
            and len(alerting.deliveries(hook["id"])) == 2
        ),
        "both notices delivered",
    )
    first = alerting.deliveries(hook["id"])[-1]
    assert first["attempts"] >= 2
    timed_out = [r for r in receiver.requests if r.headers["webhook-id"] == first["msg_id"]]
    assert len(timed_out) == first["attempts"]  # the same webhook-id on every retry
    assert "timed out after 0.5s" in (first["last_error"] or "") or first["attempts"] >= 2


def test_one_request_at_a_time_per_webhook_oldest_first(alerting: Alerting, receiver: Receiver) -> None:
    receiver.answer(delay_s=0.3)  # slow, but within the timeout
    hook = fire(alerting, receiver, "vm-c1")
    for guest in ("vm-c2", "vm-c3", "vm-c4"):
        fire(alerting, receiver, guest, hook=hook)
    poll(lambda: len(receiver.requests) == 4, "four notices")
    assert receiver.max_in_flight == 1
    sent = [r.headers["webhook-id"] for r in receiver.requests]
    logged = [d["msg_id"] for d in reversed(alerting.deliveries(hook["id"]))]  # oldest first
    assert sent == logged


def test_429_with_retry_after_waits_that_long_then_delivers(alerting: Alerting, receiver: Receiver) -> None:
    receiver.script([Answer(429, {"Retry-After": "2"}, b"slow down")])
    hook = fire(alerting, receiver)
    done = delivery(alerting, hook, lambda d: d["status"] == "delivered")
    assert done["attempts"] == 2
    first, second = receiver.requests
    assert second.at - first.at >= 1.9  # not before Retry-After (a lower bound, not a speed)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


def test_500_is_retried_with_backoff_until_the_last_attempt_then_failed(
    alerting: Alerting, receiver: Receiver
) -> None:
    receiver.answer(500, body=b"database on fire")
    hook = fire(alerting, receiver)
    failed = delivery(alerting, hook, lambda d: d["status"] == "failed")
    assert failed["attempts"] == 4  # webhook_max_attempts of the fixture
    assert failed["last_status_code"] == 500
    assert failed["response_snippet"] == "database on fire"
    assert "gave up after 4 attempts" in failed["last_error"]
    assert len(receiver.requests) == 4
    assert {r.headers["webhook-id"] for r in receiver.requests} == {failed["msg_id"]}
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert all(g >= 0.15 for g in gaps)  # backoff: at least half the (capped) wait each time


def test_410_disables_the_webhook_visibly_and_nothing_more_is_sent(
    alerting: Alerting, receiver: Receiver
) -> None:
    receiver.answer(410, body=b"gone")
    hook = fire(alerting, receiver, "vm-a")
    gone = delivery(alerting, hook, lambda d: d["status"] == "gone")
    assert gone["attempts"] == 1
    shown = alerting.admin.get(f"/api/v1/webhooks/{hook['id']}").json()
    assert shown["enabled"] is False and shown["gone_at"] is not None
    assert "410" in shown["disabled_reason"]
    assert shown["last_delivery"]["status"] == "gone"
    fire(alerting, receiver, "vm-b", hook=hook)
    [b] = poll(lambda: alerting.alerts(status="firing", rule="t", guest="vm-b"), "the second alert")
    seen = b["last_evaluated_at"]
    poll(
        lambda: alerting.alerts(status="firing", rule="t", guest="vm-b")[0]["last_evaluated_at"] > seen,
        "re-evaluation",
    )
    assert len(alerting.deliveries(hook["id"])) == 1  # a disabled webhook is told nothing
    assert len(receiver.requests) == 1
    # Enabled again by the admin: it gets the next alert.
    receiver.answer(200)
    r = alerting.admin.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": True})
    assert r.status_code == 200 and r.json()["gone_at"] is None and r.json()["disabled_reason"] is None
    fire(alerting, receiver, "vm-c", hook=hook)
    poll(lambda: len(receiver.requests) == 2, "the next notice after re-enabling")
    assert receiver.bodies()[-1]["alerts"][0]["labels"]["guest"] == "vm-c"


@pytest.mark.parametrize("answer", [Answer(302, {"Location": "http://127.0.0.1:1/elsewhere"}), Answer(400)])
def test_redirect_or_400_is_final_after_one_attempt(
    alerting: Alerting, receiver: Receiver, answer: Answer
) -> None:
    receiver.answer(answer.status, answer.headers)
    hook = fire(alerting, receiver)
    failed = delivery(alerting, hook, lambda d: d["status"] == "failed")
    assert failed["attempts"] == 1
    assert str(answer.status) in failed["last_error"]
    assert len(receiver.requests) == 1


def test_redeliver_sends_the_same_body_again_with_a_new_webhook_id(
    alerting: Alerting, receiver: Receiver
) -> None:
    hook = fire(alerting, receiver)
    first = delivery(alerting, hook, lambda d: d["status"] == "delivered")
    r = alerting.admin.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{first['id']}/redeliver")
    assert r.status_code == 202, r.text
    again = r.json()
    assert again["status"] == "pending" and again["msg_id"] != first["msg_id"]
    poll(lambda: len(receiver.requests) == 2, "the redelivery")
    a, b = receiver.requests
    assert a.body == b.body
    assert b.headers["webhook-id"] == again["msg_id"]
    standardwebhooks.Webhook(hook["secret"]).verify(b.body, b.headers)
    r = alerting.admin.post(f"/api/v1/webhooks/{hook['id']}/deliveries/999999/redeliver")
    assert r.status_code == 404


def test_test_notice_is_signed_and_logged(alerting: Alerting, receiver: Receiver) -> None:
    hook = alerting.webhook(receiver.url, format="alertmanager")
    r = alerting.admin.post(f"/api/v1/webhooks/{hook['id']}/test")
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["status"], d["notice"], d["last_status_code"]) == ("delivered", "test", 200)
    [req] = receiver.requests
    body = standardwebhooks.Webhook(hook["secret"]).verify(req.body, req.headers)
    assert body["alerts"][0]["labels"]["alertname"] == "SplitwatchTest"
