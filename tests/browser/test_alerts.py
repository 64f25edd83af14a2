"""The Alerts page in real Chromium against a real backend whose own evaluator fires (#12).

The module's server runs the alerting loop every ALERT_INTERVAL_S; data goes in through ingest
and the rules and webhooks through the admin API, as an operator would. What fires is then
read back from GET /api/v1/alerts and compared with what the page shows: the firing table,
the header's count, the history, the rules, each webhook's last delivery (a real receiver on
127.0.0.1 answering 200, another answering 410), silences made with the page's own button,
and the alert marks on the fleet and host charts.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.app.conftest import Server, Tokens, auth, upgrade
from tests.app.fill import Filler, ev, state
from tests.browser.conftest import SCREENSHOTS, Fleet
from tests.browser.test_dashboard import figure, ready

pytestmark = pytest.mark.browser

ALERT_INTERVAL_S = 0.5
BUILTIN = {"GuestKilled", "HostInconsistent", "AgentSilent", "EventsLost", "ForgedKernelLog", "NewOffender"}


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Gone(_Answer):
    status = 410


@dataclass
class AlertFleet(Fleet):
    admin: str
    receiver_url: str
    gone_url: str

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/api/v1{path}", headers=auth(token or self.admin), timeout=30, **kw
        )

    def firing(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api("GET", "/alerts?status=firing&limit=1000").json()["items"]
        return items


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll `check` (the backend's evaluator runs on its own clock) until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s}s (last: {got!r})")
        time.sleep(0.1)


def _receiver(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
    return server


def _fill(url: str, tokens: Tokens, now: dt.datetime) -> None:
    fill = Filler(url, tokens)
    ago = lambda minutes: now - dt.timedelta(minutes=minutes)  # noqa: E731
    try:
        # kvm-b, fatal: db-7 killed a minute ago (GuestKilled, with nothing configured).
        fill.send(
            "kvm-b", state=state(ago(30), mode="fatal"), events=[ev(ago(1), guest="db-7", action="sigbus")]
        )
        # kvm-c, warn: cpu 2 reads off in three samples in a row and the agent says drift
        # (HostInconsistent, built on the consistency verdict, #16).
        for minutes in (20, 15, 10):
            fill.send(
                "kvm-c",
                state=state(ago(minutes), mode="warn", off=[2], verdict="drift", reason="CPU 2 reads off"),
            )
        # kvm-a, warn: web-1 busy (the threshold rules below).
        fill.send("kvm-a", state=state(ago(30), mode="warn"), events=[ev(ago(5), guest="web-1", count=9)])
    finally:
        fill.close()


@pytest.fixture(scope="module")
def alerting(tmp_path_factory: pytest.TempPathFactory, server_log: list[str]) -> Iterator[AlertFleet]:
    tmp: Path = tmp_path_factory.mktemp("alerting")
    url = f"sqlite:///{tmp / 'splitwatch.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url, log_level="info", alert_interval=ALERT_INTERVAL_S, webhook_allow_private=True
    )
    server = Server(settings)
    server.start()
    ok, gone = _receiver(_Answer), _receiver(_Gone)
    tokens = Tokens(url)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        fleet = AlertFleet(
            server.url,
            tokens.viewer(),
            now,
            server,
            server_log,
            admin=tokens.admin(),
            receiver_url=f"http://127.0.0.1:{ok.server_address[1]}/hook",
            gone_url=f"http://127.0.0.1:{gone.server_address[1]}/gone",
        )
        for hook in (
            {"url": fleet.receiver_url, "format": "alertmanager"},
            {"url": fleet.gone_url, "format": "native", "match": {"severity": "critical"}},
        ):
            created = fleet.api("POST", "/webhooks", json=hook)
            assert created.status_code == 201, created.text
        # Data after the webhooks: a notice goes to the webhooks there when its alert fires.
        _fill(server.url, tokens, now)
        rule = {"type": "threshold", "kind": "split_lock", "group_by": "guest", "window": "1h", "for": "0s"}
        for name, threshold in (("BusyGuest", 5), ("ShortLived", 1)):
            created = fleet.api("POST", "/alert-rules", json={**rule, "name": name, "threshold": threshold})
            assert created.status_code == 201, created.text

        def fired() -> bool:
            names = {a["labels"]["alertname"] for a in fleet.firing()}
            return {"GuestKilled", "HostInconsistent", "BusyGuest", "ShortLived"} <= names

        wait_for("the built-in and threshold rules fire", fired)
        # ShortLived is disabled: its alerts resolve, and are history.
        short = next(r for r in fleet.api("GET", "/alert-rules").json()["items"] if r["name"] == "ShortLived")
        assert fleet.api("PATCH", f"/alert-rules/{short['id']}", json={"enabled": False}).status_code == 200

        def resolved() -> bool:
            names = {a["labels"]["alertname"] for a in fleet.firing()}
            return "ShortLived" not in names

        wait_for("a disabled rule's alerts resolve", resolved)
        yield fleet
    finally:
        server.stop()
        ok.shutdown()
        gone.shutdown()


def open_as(page: Any, fleet: AlertFleet, token: str, hash_: str) -> None:
    page.goto(f"{fleet.url}/{hash_}")
    page.wait_for_selector("#app:not([hidden]), #login:not([hidden])")
    if page.is_visible("#login"):
        page.fill("#login-token", token)
        page.click("#login-submit")
        page.wait_for_selector("#app:not([hidden])")
    ready(page)


def rows(page: Any, table: str, key: str = "fingerprint") -> list[str]:
    found: list[str] = page.eval_on_selector_all(f"#{table} tbody tr", f"rs => rs.map(r => r.dataset.{key})")
    return found


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def header_count(page: Any) -> int:
    page.wait_for_selector("#firing-count:not([hidden])")
    return int(page.inner_text("#firing-count"))


def header_shows(page: Any, count: int) -> None:
    """The header's count becomes `count` (it is refreshed with the view, on its own request)."""
    page.wait_for_function(f"document.querySelector('#firing-count').textContent === '{count}'")


def test_firing_now_lists_every_firing_alert_and_the_header_counts_them(
    page: Any, alerting: AlertFleet
) -> None:
    open_as(page, alerting, alerting.viewer, "#/alerts?range=24h")
    firing = alerting.firing()
    assert sorted(rows(page, "firing")) == sorted(a["fingerprint"] for a in firing)
    killed = next(a for a in firing if a["labels"]["alertname"] == "GuestKilled")
    row = page.inner_text(f"#firing tr[data-fingerprint='{killed['fingerprint']}']")
    assert "critical" in row and "kvm-b" in row and "db-7" in row and killed["annotations"]["summary"] in row
    # Worst first.
    assert page.get_attribute("#firing tbody tr:first-child", "data-severity") == "critical"
    assert header_count(page) == len([a for a in firing if not a["silenced"]])
    assert int(page.inner_text("#card-firing .card-value")) == len(firing)
    shot(page, "alerts")


def test_history_shows_the_alerts_that_resolved_in_the_window(page: Any, alerting: AlertFleet) -> None:
    open_as(page, alerting, alerting.viewer, "#/alerts?range=1h")
    resolved = alerting.api("GET", "/alerts?status=resolved&limit=1000").json()["items"]
    short = {a["fingerprint"] for a in resolved if a["labels"]["alertname"] == "ShortLived"}
    assert short, "disabling ShortLived resolved its alerts"
    assert short <= set(rows(page, "history"))
    assert not set(rows(page, "history")) & {a["fingerprint"] for a in alerting.firing()}


def test_rules_list_the_built_in_ones_and_ours_with_what_they_fire_on(
    page: Any, alerting: AlertFleet
) -> None:
    open_as(page, alerting, alerting.viewer, "#/alerts?range=24h")
    names = set(rows(page, "rules", "name"))
    assert BUILTIN | {"BusyGuest", "ShortLived"} == names
    assert "disabled" in page.inner_text("#rules tr[data-name='ShortLived']")
    busy = page.inner_text("#rules tr[data-name='BusyGuest']")
    assert "≥ 5 split_lock event(s) per guest in 1h" in busy
    assert "built-in" in page.inner_text("#rules tr[data-name='GuestKilled']")


def test_webhooks_show_their_last_delivery_and_a_receiver_that_said_gone_is_disabled(
    fresh_page: Any, alerting: AlertFleet
) -> None:
    def settled() -> list[dict[str, Any]] | None:
        hooks: list[dict[str, Any]] = alerting.api("GET", "/webhooks").json()["items"]
        by_url = {h["url"]: h for h in hooks}
        ok = (by_url[alerting.receiver_url].get("last_delivery") or {}).get("status") == "delivered"
        gone = not by_url[alerting.gone_url]["enabled"]
        return hooks if ok and gone else None

    hooks = wait_for("one webhook delivers, the other is gone", settled)
    open_as(fresh_page, alerting, alerting.admin, "#/alerts?range=24h")
    ids = {h["url"]: str(h["id"]) for h in hooks}
    ok_row = fresh_page.inner_text(f"#webhooks tr[data-id='{ids[alerting.receiver_url]}']")
    assert "delivered" in ok_row and "HTTP 200" in ok_row and "every alert" in ok_row
    gone_row = fresh_page.inner_text(f"#webhooks tr[data-id='{ids[alerting.gone_url]}']")
    assert "disabled" in gone_row and "severity=critical" in gone_row
    assert "1 failing or disabled" in fresh_page.inner_text("#card-webhooks")


def test_a_viewer_sees_that_webhooks_are_for_admins_and_the_rest_of_the_page(
    page: Any, alerting: AlertFleet
) -> None:
    asked: list[str] = []

    def note(request: Any) -> None:
        if "/api/v1/webhooks" in request.url:
            asked.append(request.url)

    page.on("request", note)
    try:
        open_as(page, alerting, alerting.viewer, "#/alerts?range=24h")
    finally:
        page.remove_listener("request", note)
    assert asked == []  # not even asked for: it would be a 403
    assert "shown to admin tokens only" in page.inner_text("#view")
    assert page.query_selector("#webhooks") is None
    assert rows(page, "firing")  # the rest of the page is there


def test_a_viewer_pressing_silence_is_told_an_admin_token_is_needed_and_nothing_is_silenced(
    fresh_page: Any, alerting: AlertFleet
) -> None:
    open_as(fresh_page, alerting, alerting.viewer, "#/alerts?range=24h")
    inconsistent = next(a for a in alerting.firing() if a["labels"]["alertname"] == "HostInconsistent")
    row = f"#firing tr[data-fingerprint='{inconsistent['fingerprint']}']"
    fresh_page.click(f"{row} .silence-button")
    fresh_page.click(f"{row} .silence-form button[type=submit]")
    fresh_page.wait_for_function(
        f"document.querySelector(\"{row} .silence-message\").textContent.includes('admin token')"
    )
    assert alerting.api("GET", "/silences?active=true").json()["items"] == []


def test_the_silence_button_silences_the_alert_by_its_labels_until_the_expiry_chosen(
    fresh_page: Any, alerting: AlertFleet
) -> None:
    open_as(fresh_page, alerting, alerting.admin, "#/alerts?range=24h")
    before = header_count(fresh_page)
    killed = next(a for a in alerting.firing() if a["labels"]["alertname"] == "GuestKilled")
    row = f"#firing tr[data-fingerprint='{killed['fingerprint']}']"
    fresh_page.click(f"{row} .silence-button")
    fresh_page.select_option(f"{row} select[name=duration]", "1h")
    fresh_page.fill(f"{row} input[name=comment]", "db-7 owner paged, OPS-42")
    shot(fresh_page, "alerts-silence-form")
    started = dt.datetime.now(dt.UTC)
    fresh_page.click(f"{row} .silence-form button[type=submit]")
    fresh_page.wait_for_selector(f"{row} .badge.silenced")

    (silence,) = alerting.api("GET", "/silences?active=true").json()["items"]
    assert silence["matchers"] == {"alertname": "GuestKilled", "host": "kvm-b", "guest": "db-7"}
    assert silence["comment"] == "db-7 owner paged, OPS-42"
    ends = dt.datetime.fromisoformat(silence["ends_at"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=59) < ends - started < dt.timedelta(minutes=61)
    assert next(a for a in alerting.firing() if a["fingerprint"] == killed["fingerprint"])["silenced"] is True
    assert rows(fresh_page, "silences", "id") == [str(silence["id"])]
    header_shows(fresh_page, before - 1)
    shot(fresh_page, "alerts-silenced")

    # Ending it from the page: the alert is loud again.
    fresh_page.click(f"#silences tr[data-id='{silence['id']}'] .end-silence")
    fresh_page.wait_for_selector(f"{row} .silence-button")
    assert alerting.api("GET", "/silences?active=true").json()["items"] == []
    header_shows(fresh_page, before)


def test_the_header_counts_firing_alerts_on_every_page(page: Any, alerting: AlertFleet) -> None:
    loud = len([a for a in alerting.firing() if not a["silenced"]])
    open_as(page, alerting, alerting.viewer, "#/events?range=1h")
    assert header_count(page) == loud
    assert "critical" in (page.get_attribute("#firing-count", "class") or "")


def test_fleet_and_host_charts_mark_when_alerts_fired(page: Any, alerting: AlertFleet) -> None:
    open_as(page, alerting, alerting.viewer, "#/fleet?range=1h")
    layout = page.evaluate("document.querySelector('#chart-action').layout")
    # Alerts fired in one evaluation share a label; its hover names each.
    named = [name for a in layout["annotations"] for name in (a.get("hovertext") or "").split("<br>")]
    assert "GuestKilled kvm-b / db-7" in named and "HostInconsistent kvm-c" in named
    bands = [s for s in layout["shapes"] if s["type"] == "rect" and s["y0"] == 0.94]
    assert len(bands) >= len(alerting.firing())
    types = page.eval_on_selector_all("#changes tbody tr", "rs => rs.map(r => r.dataset.type)")
    assert "alert" in types
    shot(page, "fleet-alert-marks")

    open_as(page, alerting, alerting.viewer, "#/host/kvm-b?range=1h")
    host_layout = page.evaluate("document.querySelector('#chart-host-action').layout")
    host_named = [n for a in host_layout["annotations"] for n in (a.get("hovertext") or "").split("<br>")]
    assert "GuestKilled" in host_named
    # Only this host's alerts: kvm-c's inconsistency and kvm-a's busy guest are not on kvm-b.
    assert "HostInconsistent" not in host_named and "BusyGuest" not in host_named
    assert figure(page, "#chart-host-action")  # the chart itself still draws


# The CSP the hardening work (issue 14) is bringing: no inline script, handler or style.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def test_the_alerts_page_and_its_silence_form_run_under_a_strict_content_security_policy(
    browser: Any, alerting: AlertFleet
) -> None:
    # A context of its own without the suite's bypass_csp (tests/browser/conftest.py): here the
    # policy must be in force.
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    fresh_page = ctx.new_page()
    try:
        _alerts_page_under_strict_csp(fresh_page, alerting)
    finally:
        ctx.close()


def _alerts_page_under_strict_csp(fresh_page: Any, alerting: AlertFleet) -> None:
    def with_csp(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

    refused: list[str] = []
    fresh_page.on(
        "console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None
    )
    fresh_page.route(f"{alerting.url}/", with_csp)
    # Logged in and rendered, waited on with selectors only: Playwright's string predicates
    # are evaluated with eval, which this policy refuses too.
    fresh_page.goto(f"{alerting.url}/#/alerts?range=24h")
    fresh_page.fill("#login-token", alerting.admin)
    fresh_page.click("#login-submit")
    fresh_page.wait_for_selector('body[data-rendered="#/alerts?range=24h"]:not([data-loading])')
    assert rows(fresh_page, "firing")  # the page ran
    first = "#firing tbody tr:first-child"
    fresh_page.click(f"{first} .silence-button")
    fresh_page.wait_for_selector(f"{first} .silence-form:not([hidden])")
    fresh_page.click(f"{first} .silence-button")  # closes it again, nothing sent
    assert refused == []
    # The control: the policy is in force, an inline script is refused and said so.
    with fresh_page.expect_console_message(lambda m: "Content Security Policy" in m.text) as message:
        fresh_page.evaluate(
            "() => document.head.append(Object.assign(document.createElement('script'), {textContent: '1'}))"
        )
    assert "inline script" in message.value.text
