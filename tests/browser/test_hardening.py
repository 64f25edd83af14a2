"""Issue 14 in the browser: names with `/`, the Content-Security-Policy, /docs offline.

A module of its own (its own server and data), so the shared fleet's figures stay as they are.
Every page here runs under the CSP the server sends; a violation (a blocked script, style or
frame) is collected from the page's `securitypolicyviolation` events and the console.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.settings import Settings
from tests.app.conftest import Server, Tokens, upgrade
from tests.app.fill import Filler, ev, state

GUEST = "team/db-1"  # a libvirt-style name with a slash (a VMM's -name may hold anything)
HOST = "rack-7/kvm-01"

# Collects CSP violations in the page itself, from the first script on.
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  e => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('hardening') / 'splitwatch.db'}"
    upgrade(url)
    server = Server(Settings(database_url=url, log_level="warning"))
    server.start()
    tokens = Tokens(url)
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    fill = Filler(server.url, tokens)
    try:
        fill.send(
            HOST,
            state=state(now - dt.timedelta(minutes=30), mode="warn"),
            events=[ev(now - dt.timedelta(minutes=20 + i), guest=GUEST, action="warn") for i in range(3)],
        )
    finally:
        fill.close()
    try:
        yield server, tokens.viewer()
    finally:
        server.stop()


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    page.add_init_script(WATCH_CSP)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.console_lines = console
    yield page
    ctx.close()


def wait_until(page: Any, expression: str) -> None:
    """Poll `expression` from Python: page.wait_for_function evaluates its predicate with
    `eval` inside the page, which this page's CSP (rightly) forbids."""
    deadline = time.monotonic() + 15
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after 15 s: {expression}"
        time.sleep(0.05)


def ready(page: Any) -> None:
    wait_until(page, "document.body.dataset.rendered === location.hash && !document.body.dataset.loading")


def csp_problems(page: Any) -> list[str]:
    found: list[str] = page.evaluate("window.__csp")
    found += [line for line in page.console_lines if "Content Security Policy" in line]
    return found


def log_in(page: Any, url: str, viewer: str, hash_: str) -> None:
    page.goto(f"{url}/{hash_}")
    page.wait_for_selector("#app:not([hidden]), #login:not([hidden])")
    if page.is_visible("#login"):
        page.fill("#login-token", viewer)
        page.click("#login-submit")
        page.wait_for_selector("#app:not([hidden])")
    ready(page)


def test_guest_and_host_whose_names_hold_a_slash_open_from_the_dashboard(
    tab: Any, site: tuple[Server, str]
) -> None:
    server, viewer = site
    log_in(tab, server.url, viewer, "#/fleet?range=24h")
    tab.click(f"#top-guests tr >> text={GUEST}")
    wait_until(tab, "location.hash.startsWith('#/guest/team%2Fdb-1')")
    ready(tab)
    assert GUEST in tab.inner_text("#view")
    hosts = tab.eval_on_selector_all("#guest-hosts tbody tr", "rs => rs.map(r => r.dataset.host)")
    assert hosts == [HOST]
    assert "warn 3" in " ".join(tab.inner_text("#guest-actions").split())
    tab.click(f"#guest-hosts tr[data-host='{HOST}'] td:nth-child(1)")
    wait_until(tab, "location.hash.startsWith('#/host/rack-7%2Fkvm-01')")
    ready(tab)
    assert HOST in tab.inner_text("#view")
    assert not [line for line in tab.console_lines if line.startswith(("error", "pageerror"))]
    assert csp_problems(tab) == []


def test_dashboard_sends_a_strict_csp_and_still_draws_its_charts(tab: Any, site: tuple[Server, str]) -> None:
    server, viewer = site
    response = tab.goto(f"{server.url}/")
    headers = response.headers
    csp = headers["content-security-policy"]
    for directive in ("script-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri"):
        assert directive in csp
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    log_in(tab, server.url, viewer, f"#/host/{HOST.replace('/', '%2F')}?range=24h")
    tab.wait_for_selector("#chart-host-action .main-svg")  # Plotly drew under the CSP
    log_in(tab, server.url, viewer, "#/fleet?range=24h")
    tab.wait_for_selector(".js-plotly-plot .main-svg")
    assert csp_problems(tab) == []


def test_docs_page_renders_swagger_ui_with_no_request_leaving_the_server(
    tab: Any, site: tuple[Server, str]
) -> None:
    server, _viewer = site
    origin = urlsplit(server.url).netloc
    elsewhere: list[str] = []

    def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == origin or route.request.url.startswith("data:"):
            route.continue_()
        else:  # offline: the CDN FastAPI's default page used is unreachable
            elsewhere.append(route.request.url)
            route.abort()

    tab.route("**/*", only_this_server)
    tab.goto(f"{server.url}/docs")
    tab.wait_for_selector(".swagger-ui .info .title")
    assert "splitwatch" in tab.inner_text(".swagger-ui .info .title")
    tab.wait_for_selector(".opblock-summary-path")
    paths = tab.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.innerText)")
    assert "/api/v1/ingest" in [p.replace("\u200b", "") for p in paths]
    assert elsewhere == []
    assert csp_problems(tab) == []


def test_frontend_files_come_from_the_app_package() -> None:
    # The wheel carries app/frontend (tests/test_packaging.py builds one); in the repository it
    # is a link to frontend/, so there is one copy of the dashboard.
    from app.api.frontend import FRONTEND_DIR

    repo_frontend = Path(__file__).resolve().parents[2] / "frontend"
    assert repo_frontend.resolve() == FRONTEND_DIR
    assert (FRONTEND_DIR / "index.html").is_file()
