"""`splitwatch alerts` and `splitwatch webhook test ID` (issue 12), as a user runs them (here, beside
the receiver fixtures they need)."""

from __future__ import annotations

import json

import pytest
import standardwebhooks

from agent.payload import Action
from tests.app.alerts.conftest import Alerting, Receiver, poll
from tests.app.cli.test_serve import run

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_alerts_lists_what_fires_now(alerting: Alerting, migrated_db_url: str) -> None:
    result = run("alerts", "--database-url", migrated_db_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no firing alerts"
    alerting.ingest("kvm-c", guest="vm-gone", action=Action.SIGBUS, mode="fatal")
    poll(lambda: alerting.alerts(status="firing", rule="GuestKilled"), "GuestKilled to fire")
    result = run("alerts", "--database-url", migrated_db_url)
    assert result.returncode == 0, result.stderr
    [line] = [li for li in result.stdout.splitlines() if "GuestKilled" in li]
    fields = line.split("\t")
    assert fields[1:4] == ["GuestKilled", "critical", "host=kvm-c guest=vm-gone"]
    assert "killed by SIGBUS" in fields[4]
    as_json = run("alerts", "--json", "--database-url", migrated_db_url)
    rows = [json.loads(li) for li in as_json.stdout.splitlines()]
    assert any(r["labels"]["alertname"] == "GuestKilled" and r["status"] == "firing" for r in rows)


def test_alerts_refuses_an_unknown_status(migrated_db_url: str) -> None:
    result = run("alerts", "--status", "angry", "--database-url", migrated_db_url)
    assert result.returncode == 2 and "firing, pending or resolved" in result.stderr


def test_webhook_test_sends_a_signed_notice_and_logs_it(
    alerting: Alerting, receiver: Receiver, migrated_db_url: str
) -> None:
    hook = alerting.webhook(receiver.url, format="alertmanager")
    env = {"SPLITWATCH_WEBHOOK_ALLOW_PRIVATE": "true"}
    result = run("webhook", "test", str(hook["id"]), "--database-url", migrated_db_url, env=env)
    assert result.returncode == 0, result.stderr
    assert f"webhook {hook['id']}: delivered, HTTP 200" in result.stdout
    [request] = receiver.requests
    body = standardwebhooks.Webhook(hook["secret"]).verify(request.body, request.headers)
    assert body["version"] == "4" and body["alerts"][0]["labels"]["alertname"] == "SplitwatchTest"
    [logged] = alerting.deliveries(hook["id"])
    assert (logged["notice"], logged["status"], logged["msg_id"]) == (
        "test",
        "delivered",
        request.headers["webhook-id"],
    )


def test_webhook_test_says_why_it_failed(
    alerting: Alerting, receiver: Receiver, migrated_db_url: str
) -> None:
    hook = alerting.webhook(receiver.url)
    receiver.answer(500, body=b"broken")
    env = {"SPLITWATCH_WEBHOOK_ALLOW_PRIVATE": "true"}
    result = run("webhook", "test", str(hook["id"]), "--database-url", migrated_db_url, env=env)
    assert result.returncode == 1
    assert "failed, HTTP 500" in result.stderr and "Traceback" not in result.stderr
    # Without the setting, the loopback receiver is refused before anything is sent.
    result = run("webhook", "test", str(hook["id"]), "--database-url", migrated_db_url)
    assert result.returncode == 1 and "loopback" in result.stderr
    assert len(receiver.requests) == 1
    result = run("webhook", "test", "999", "--database-url", migrated_db_url)
    assert result.returncode == 1 and "no webhook 999" in result.stderr


def test_alerts_says_on_stderr_when_more_fire_than_its_limit(
    alerting: Alerting, migrated_db_url: str
) -> None:
    alerting.disable_builtins()
    alerting.rule(name="busy-host", type="threshold", group_by="host", window="60s", threshold=1)
    for host in ("kvm-1", "kvm-2", "kvm-3"):
        alerting.ingest(host)
    poll(lambda: len(alerting.alerts(status="firing")) == 3, "an alert for each of the 3 hosts")
    result = run("alerts", "--limit", "2", "--json", "--database-url", migrated_db_url)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2  # stdout: one alert per line, nothing else
    assert "the newest 2 firing alerts; there are more" in result.stderr
    whole = run("alerts", "--limit", "3", "--database-url", migrated_db_url)
    assert len(whole.stdout.splitlines()) == 3 and "there are more" not in whole.stderr
