"""The alerting API: who may do what, what it refuses and why (issue 12)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.app.conftest import Server, Tokens, assert_error, auth

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def admin(server: Server, tokens: Tokens) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, headers=auth(tokens.admin())) as c:
        yield c


@pytest.fixture
def private_ok(settings: Any) -> Any:
    return settings.model_copy(update={"webhook_allow_private": True})


RULE = {
    "name": "busy",
    "type": "threshold",
    "kind": "split_lock",
    "group_by": "guest",
    "window": "60s",
    "threshold": 20,
    "for": "0s",
}


def builtin_id(client: httpx.Client, name: str) -> int:
    items = client.get("/api/v1/alert-rules").json()["items"]
    return int(next(r["id"] for r in items if r["name"] == name))


# ------------------------------------------------------------------------------ roles

WRITES = [
    ("POST", "/api/v1/alert-rules", RULE),
    ("PATCH", "/api/v1/alert-rules/1", {"enabled": False}),
    ("DELETE", "/api/v1/alert-rules/1", None),
    ("POST", "/api/v1/silences", {"matchers": {"host": "h"}, "duration": "1h"}),
    ("DELETE", "/api/v1/silences/1", None),
    ("POST", "/api/v1/webhooks", {"url": "https://hooks.example.com/x"}),
    ("PATCH", "/api/v1/webhooks/1", {"enabled": False}),
    ("DELETE", "/api/v1/webhooks/1", None),
    ("POST", "/api/v1/webhooks/1/deliveries/1/redeliver", None),
    ("POST", "/api/v1/webhooks/1/test", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_viewer_token_gets_403_on_every_rule_webhook_and_silence_write(
    viewer_client: httpx.Client, method: str, path: str, body: Any
) -> None:
    r = viewer_client.request(method, path, json=body)
    assert_error(r, 403, "wrong_role")


@pytest.mark.parametrize("path", ["/api/v1/webhooks", "/api/v1/webhooks/1", "/api/v1/webhooks/1/deliveries"])
def test_webhooks_are_admin_only_even_to_read(viewer_client: httpx.Client, path: str) -> None:
    assert_error(viewer_client.get(path), 403, "wrong_role")


def test_viewer_reads_rules_alerts_and_silences(viewer_client: httpx.Client) -> None:
    for path in ("/api/v1/alert-rules", "/api/v1/alerts", "/api/v1/silences"):
        r = viewer_client.get(path)
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["items"], list)


def test_no_token_is_401(client: httpx.Client) -> None:
    assert_error(client.post("/api/v1/alert-rules", json=RULE), 401)


# ------------------------------------------------------------------------------ rules


def test_builtin_rules_exist_with_nothing_configured(viewer_client: httpx.Client) -> None:
    items = viewer_client.get("/api/v1/alert-rules").json()["items"]
    builtin = {r["name"]: r for r in items if r["builtin"]}
    assert set(builtin) == {
        "GuestKilled",
        "HostInconsistent",
        "AgentSilent",
        "EventsLost",
        "ForgedKernelLog",
        "NewOffender",
    }
    assert all(r["enabled"] for r in builtin.values())
    assert builtin["GuestKilled"]["severity"] == "critical"


def test_threshold_rule_round_trips_with_durations_in_both_forms(admin: httpx.Client) -> None:
    r = admin.post(
        "/api/v1/alert-rules",
        json={**RULE, "window": "5m", "for": 90, "match": {"action": "warn"}, "labels": {"team": "virt"}},
    )
    assert r.status_code == 201, r.text
    rule = r.json()
    assert (rule["window"], rule["window_s"], rule["for"], rule["for_s"]) == ("5m", 300, "90s", 90)
    assert rule["match"] == {"action": "warn"} and rule["labels"] == {"team": "virt"}
    assert admin.get(f"/api/v1/alert-rules/{rule['id']}").json() == rule
    r = admin.patch(f"/api/v1/alert-rules/{rule['id']}", json={"threshold": 5, "enabled": False})
    assert r.status_code == 200 and (r.json()["threshold"], r.json()["enabled"]) == (5, False)
    assert admin.delete(f"/api/v1/alert-rules/{rule['id']}").status_code == 204
    assert_error(admin.get(f"/api/v1/alert-rules/{rule['id']}"), 404, "rule_not_found")


def test_duplicate_rule_name_is_409(admin: httpx.Client) -> None:
    assert admin.post("/api/v1/alert-rules", json=RULE).status_code == 201
    assert_error(admin.post("/api/v1/alert-rules", json=RULE), 409, "rule_name_taken")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"window": "30s"}, "window"),
        ({"window": "soon"}, "window"),
        ({"threshold": 0}, "threshold"),
        ({"group_by": "cpu"}, "group_by"),
        ({"match": {"cpu": "3"}}, "match"),
        ({"match": {"action": "explode"}}, "match"),
        ({"labels": {"alertname": "x"}}, "labels"),
        ({"labels": {"bad-name": "x"}}, "labels"),
        ({"type": "guest_killed"}, "type"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_rule_is_422_naming_the_field(admin: httpx.Client, change: dict[str, Any], field: str) -> None:
    body = assert_error(admin.post("/api/v1/alert-rules", json={**RULE, **change}), 422)
    assert field in body["message"]


def test_builtin_rule_can_be_retuned_and_disabled_but_not_deleted_or_renamed(admin: httpx.Client) -> None:
    rid = builtin_id(admin, "EventsLost")
    r = admin.patch(
        f"/api/v1/alert-rules/{rid}", json={"threshold": 5000, "window": "2h", "severity": "critical"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["threshold"], r.json()["window_s"], r.json()["severity"]) == (5000, 7200, "critical")
    assert admin.patch(f"/api/v1/alert-rules/{rid}", json={"enabled": False}).json()["enabled"] is False
    assert_error(admin.delete(f"/api/v1/alert-rules/{rid}"), 409, "builtin_rule")
    assert_error(admin.patch(f"/api/v1/alert-rules/{rid}", json={"name": "Other"}), 422, "builtin_rule")


# ------------------------------------------------------------------------------ silences


def test_silence_needs_a_matcher_and_a_future_end(admin: httpx.Client) -> None:
    assert_error(admin.post("/api/v1/silences", json={"matchers": {}, "duration": "1h"}), 422)
    assert_error(admin.post("/api/v1/silences", json={"matchers": {"host": "h"}}), 422, "invalid_silence")
    past = {"matchers": {"host": "h"}, "ends_at": "2020-01-01T00:00:00Z"}
    assert_error(admin.post("/api/v1/silences", json=past), 422, "invalid_silence")
    r = admin.post("/api/v1/silences", json={"matchers": {"host": "h"}, "duration": "2h", "comment": "why"})
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["active"] is True and s["comment"] == "why" and s["created_by"].startswith("token #")
    assert [x["id"] for x in admin.get("/api/v1/silences", params={"active": True}).json()["items"]] == [
        s["id"]
    ]
    assert admin.delete(f"/api/v1/silences/{s['id']}").json()["active"] is False
    assert admin.get("/api/v1/silences", params={"active": True}).json()["items"] == []
    assert_error(admin.delete("/api/v1/silences/999"), 404, "silence_not_found")


# ------------------------------------------------------------------------------ webhooks


def test_secret_is_generated_shown_once_and_never_again(admin: httpx.Client) -> None:
    r = admin.post(
        "/api/v1/webhooks", json={"url": "https://1.1.1.1/hook", "match": {"severity": "critical"}}
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and created["has_secret"] is True
    for shown in (
        admin.get(f"/api/v1/webhooks/{created['id']}").json(),
        admin.get("/api/v1/webhooks").json(),
    ):
        assert "whsec_" not in str(shown)
        assert "secret" not in (shown.get("items", [shown])[0])


def test_given_secret_is_checked(admin: httpx.Client) -> None:
    body = assert_error(
        admin.post("/api/v1/webhooks", json={"url": "https://1.1.1.1/", "secret": "hunter2"}), 422
    )
    assert "whsec_" in body["message"]
    ok = {"url": "https://1.1.1.1/", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    assert admin.post("/api/v1/webhooks", json=ok).json()["secret"] == ok["secret"]
    am = {"url": "https://1.1.1.1/", "format": "alertmanager_api", "secret": ok["secret"]}
    assert_error(admin.post("/api/v1/webhooks", json=am), 422, "invalid_webhook")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:9093/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://172.16.5.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://169.254.10.10/", "link-local"),
        ("http://100.64.0.1/", "shared"),
        ("http://0.0.0.0/", "unspecified"),
        ("ftp://hooks.example.com/", "scheme"),
        ("http://user:pw@1.1.1.1/", "credentials"),
        ("http:///nohost", "host"),
    ],
)
def test_private_loopback_and_metadata_urls_are_refused_saying_why(
    admin: httpx.Client, url: str, says: str
) -> None:
    body = assert_error(admin.post("/api/v1/webhooks", json={"url": url}), 422, "url_refused")
    assert says in body["message"]


def test_allow_private_admits_private_but_never_metadata(private_ok: Any, tokens: Tokens) -> None:
    srv = Server(private_ok)
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, headers=auth(tokens.admin()), timeout=30) as c:
            assert c.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}).status_code == 201
            assert c.post("/api/v1/webhooks", json={"url": "http://10.0.0.7/hook"}).status_code == 201
            body = assert_error(c.post("/api/v1/webhooks", json={"url": "http://169.254.169.254/"}), 422)
            assert "metadata" in body["message"]
    finally:
        srv.stop()


def test_patch_checks_the_new_url_and_404s_unknown_webhooks(admin: httpx.Client) -> None:
    hook = admin.post("/api/v1/webhooks", json={"url": "https://1.1.1.1/a"}).json()
    assert_error(
        admin.patch(f"/api/v1/webhooks/{hook['id']}", json={"url": "http://10.0.0.1/"}), 422, "url_refused"
    )
    r = admin.patch(
        f"/api/v1/webhooks/{hook['id']}", json={"url": "https://1.0.0.1/b", "match": {"host": "h"}}
    )
    assert (
        r.status_code == 200 and r.json()["url"] == "https://1.0.0.1/b" and r.json()["match"] == {"host": "h"}
    )
    assert_error(admin.patch("/api/v1/webhooks/999", json={"enabled": False}), 404, "webhook_not_found")
    assert_error(admin.get("/api/v1/webhooks/999/deliveries"), 404, "webhook_not_found")
    assert admin.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert_error(admin.delete(f"/api/v1/webhooks/{hook['id']}"), 404)
