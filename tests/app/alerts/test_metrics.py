"""/metrics figures of alerting (issue 12): firing alerts, notifications by webhook, the outbox."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.payload import Action
from tests.app.alerts.conftest import Alerting, Receiver, poll

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_firing_alerts_notifications_and_outbox_are_exposed(alerting: Alerting, receiver: Receiver) -> None:
    before = samples(alerting.server.url)
    assert before[("splitwatch_outbox_depth", ())] == 0
    assert before[("splitwatch_outbox_oldest_age_seconds", ())] == 0
    hook = alerting.webhook(receiver.url, match={"alertname": "GuestKilled"})
    down = alerting.webhook("http://127.0.0.1:9/nothing-listens", match={"alertname": "GuestKilled"})
    alerting.ingest("kvm-m", guest="vm-m", action=Action.SIGBUS, mode="fatal")
    poll(lambda: receiver.requests, "the notice")
    poll(lambda: samples(alerting.server.url).get(("splitwatch_outbox_depth", ())) == 1, "one notice waiting")
    now = samples(alerting.server.url)
    assert now[("splitwatch_alerts_firing", (("alertname", "GuestKilled"), ("severity", "critical")))] == 1
    assert (
        now[("splitwatch_notifications_total", (("result", "delivered"), ("webhook", str(hook["id"]))))] == 1
    )
    assert now[("splitwatch_outbox_oldest_age_seconds", ())] >= 0
    assert not any(
        k[0] == "splitwatch_notifications_total" and ("webhook", str(down["id"])) in k[1] for k in now
    )
