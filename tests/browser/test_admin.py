"""The admin page (#15): hosts with their agent token's last use, hosts that enrolled but never
reported, enrollment tokens with their uses; shown to an admin token only. Real Chromium."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.app.conftest import auth
from tests.browser.conftest import SCREENSHOTS, Fleet
from tests.browser.test_dashboard import ready, shot
from tests.browser.test_time_truth import assert_log_out_on_the_first_line

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def admin_token(fleet: Fleet) -> str:
    """An admin token, an enrollment token used twice: kvm-new-1 and kvm-new-2 enrolled and never reported."""
    from tests.app.conftest import Tokens

    raw = Tokens(fleet.server.settings.database_url).admin()
    made = httpx.post(
        f"{fleet.url}/api/v1/tokens",
        json={"role": "enroll", "host_glob": "kvm-new-*", "max_uses": 5, "label": "rack 9"},
        headers=auth(raw),
    ).json()
    for i in (1, 2):
        answer = httpx.post(
            f"{fleet.url}/api/v1/enroll",
            json={"host": f"kvm-new-{i}", "boot_id": "b", "machine_id": f"{i:032x}"},
            headers=auth(made["token"]),
        )
        assert answer.status_code == 201, answer.text
    return raw


def log_in(page: Any, fleet: Fleet, token: str, hash_: str) -> None:
    page.goto(f"{fleet.url}/{hash_}")
    page.wait_for_selector("#app:not([hidden]), #login:not([hidden])")
    if page.is_visible("#app"):
        page.click("#logout")
    page.fill("#login-token", token)
    page.click("#login-submit")
    page.wait_for_selector("#app:not([hidden])")
    ready(page)


def column(page: Any, table: str, index: int) -> list[str]:
    cells: list[str] = page.eval_on_selector_all(
        f"#{table} tbody tr", f"rows => rows.map(r => r.children[{index}].textContent)"
    )
    return cells


def test_admin_sees_hosts_tokens_never_reported_hosts_and_enrollment_uses(
    fresh_page: Any, fleet: Fleet, admin_token: str
) -> None:
    log_in(fresh_page, fleet, admin_token, "#/fleet")
    fresh_page.wait_for_selector("#nav-admin:not([hidden])")
    fresh_page.click("#nav-admin")
    fresh_page.wait_for_selector("#agent-tokens")
    ready(fresh_page)
    shot(fresh_page, "admin")
    assert sorted(column(fresh_page, "agent-tokens", 0)) == [
        "kvm-a", "kvm-b", "kvm-c", "kvm-d", "kvm-new-1", "kvm-new-2",
    ]  # fmt: skip
    hosts, last_report = column(fresh_page, "agent-tokens", 0), column(fresh_page, "agent-tokens", 4)
    reported = dict(zip(hosts, last_report, strict=True))
    assert reported["kvm-new-1"] == "never" and reported["kvm-a"] != "never"
    assert sorted(column(fresh_page, "never-reported", 0)) == ["kvm-new-1", "kvm-new-2"]
    assert fresh_page.inner_text("#card-never-reported .card-value") == "2"
    assert column(fresh_page, "enroll-tokens", 2) == ["kvm-new-*"]
    assert column(fresh_page, "enroll-tokens", 3) == ["2 / 5"]
    assert column(fresh_page, "enroll-tokens", 1) == ["live"]
    # A reporting host's name opens its page.
    fresh_page.click("#agent-tokens a:text-is('kvm-a')")
    ready(fresh_page)
    assert fresh_page.url.endswith("#/host/kvm-a") or "#/host/kvm-a?" in fresh_page.url


def test_a_viewer_sees_no_admin_link_and_the_page_says_it_needs_an_admin_token(
    fresh_page: Any, fleet: Fleet
) -> None:
    log_in(fresh_page, fleet, fleet.viewer, "#/admin")
    assert fresh_page.is_hidden("#nav-admin")
    text = fresh_page.inner_text("#view")
    assert "needs an admin token" in text and "viewer token" in text
    assert fresh_page.query_selector("#agent-tokens") is None


def test_an_admins_bar_keeps_log_out_on_its_first_line_at_1280_px(
    fresh_page: Any, fleet: Fleet, admin_token: str
) -> None:
    # The Admin link makes the bar's links one longer than a viewer's (#17's bar, #15's link).
    fresh_page.set_viewport_size({"width": 1280, "height": 900})
    log_in(fresh_page, fleet, admin_token, "#/fleet?range=6h")
    fresh_page.wait_for_selector("#nav-admin:not([hidden])")
    assert_log_out_on_the_first_line(fresh_page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    fresh_page.screenshot(
        path=str(SCREENSHOTS / "topbar-1280-admin.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 90}
    )
