"""Fleets larger than any page the dashboard asks for (#13). The fleet overview ranks ("Top hosts",
the hosts whose changes are marked) the fleet's busiest and those in trouble, not the busiest
among the first page of names; in a mass outage, more alerts fire than one page holds, and the
header and the Alerts page say "at least", not a wrong count. Real uvicorn, every host through
ingest, real Chromium.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from app.settings import Settings
from app.store.engine import make_engine
from app.store.tables import host
from app.store.tokens import create_agent_tokens
from tests.app.conftest import Server, Tokens, upgrade
from tests.app.fill import Filler, ev, state
from tests.browser.conftest import SCREENSHOTS, Fleet, _serve
from tests.browser.test_admin import log_in
from tests.browser.test_dashboard import open_logged_in, ready, shot
from tests.browser.test_time_truth import assert_log_out_on_the_first_line

pytestmark = pytest.mark.browser

# More hosts than the old view's one page by name (1,000), all quiet; the hosts that matter sort
# after every one of them.
QUIET = [f"kvm-{i:04d}" for i in range(1001)]
BUSY, SILENT, DRIFTING = "zz-busy", "zz-silent", "zz-drift"
DRIFT = "detection is off on cpu 2 in 3 consecutive samples while the mode is warn"


class _BatchTokens:
    """Every host's agent token made in one statement (one engine per token is minutes here)."""

    def __init__(self, url: str, names: list[str]) -> None:
        engine = make_engine(url)
        with engine.begin() as conn:
            self._tokens = dict(create_agent_tokens(conn, names))
        engine.dispose()

    def agent(self, host: str = "") -> str:
        return self._tokens[host]


@pytest.fixture(scope="module")
def big_fleet(tmp_path_factory: pytest.TempPathFactory, server_log: list[str]) -> Iterator[Fleet]:
    server, tokens = _serve(tmp_path_factory.mktemp("big"), server_log)
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    seen = now - dt.timedelta(minutes=30)
    fill = Filler(server.url, _BatchTokens(server.settings.database_url, [*QUIET, BUSY, SILENT, DRIFTING]))
    try:
        for name in QUIET:
            fill.send(name, state=state(seen))
        fill.send("kvm-0500", events=[ev(seen, guest="vm-0500", count=3)])
        fill.send(BUSY, state=state(seen), events=[ev(seen, guest="vm-busy", count=50)])
        fill.send(SILENT, state=state(seen))
        fill.send(DRIFTING, state=state(seen, off=[2], verdict="drift", reason=DRIFT))
    finally:
        fill.close()
    engine = make_engine(server.settings.database_url)
    with engine.begin() as conn:  # its agent stopped an hour ago (silent_after_s is 300)
        conn.execute(
            update(host).where(host.c.name == SILENT).values(last_seen_at=now - dt.timedelta(hours=1))
        )
    engine.dispose()
    try:
        yield Fleet(server.url, tokens.viewer(), now, server, server_log)
    finally:
        server.stop()


def test_top_hosts_of_a_big_fleet_lead_with_the_drifting_the_silent_and_the_busiest_whatever_their_names(
    page: Any, big_fleet: Fleet
) -> None:
    open_logged_in(page, big_fleet, "#/fleet?range=6h")
    rows = page.eval_on_selector_all("#top-hosts tbody tr", "rs => rs.map(r => r.dataset.host)")
    # Needs action, then silent, then the busiest (consistent) hosts by events.
    assert rows[:4] == [DRIFTING, SILENT, BUSY, "kvm-0500"]
    assert page.text_content("#card-silent .card-value") == "1"
    assert page.text_content("#card-hosts .card-value") == f"{len(QUIET) + 3:,}"
    # The table says what it holds: not every host of the fleet.
    assert page.inner_text("#top-hosts-hint") == (
        "Of the fleet's 1,004 hosts: those that need action, the silent ones and the 100 busiest"
        " in this window. Every host, page by page: all · silent · needing action."
    )
    shot(page, "fleet-big")


DRIFTERS = [f"drift-{i}" for i in range(5)]


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory, server_log: list[str]) -> Iterator[Fleet]:
    """1,001 hosts whose agents all stopped an hour ago, and 5 reporting hosts that drift: more
    alerts fire (1,000 AgentSilent, the most one rule opens at once, and 5 HostInconsistent)
    than one page of the alert list holds."""
    url = f"sqlite:///{tmp_path_factory.mktemp('outage') / 'splitwatch.db'}"
    upgrade(url)
    server = Server(Settings(database_url=url, log_level="info", alert_interval=0.5))
    server.start()
    now = dt.datetime.now(dt.UTC)
    fill = Filler(server.url, _BatchTokens(url, [*QUIET, *DRIFTERS]))
    try:
        for name in QUIET:
            fill.send(name, state=state(now - dt.timedelta(hours=1)))
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(update(host).values(last_seen_at=now - dt.timedelta(hours=1)))
        engine.dispose()
        for name in DRIFTERS:
            fill.send(name, state=state(now, off=[2], verdict="drift", reason=DRIFT))
    finally:
        fill.close()
    try:
        yield Fleet(server.url, Tokens(url).viewer(), now, server, server_log)
    finally:
        server.stop()


def test_in_a_mass_outage_the_header_and_the_alerts_page_say_at_least_the_page_they_read(
    page: Any, outage: Fleet
) -> None:
    # The evaluator opens the 1,005 alerts within a few of its 0.5 s rounds.
    deadline = time.monotonic() + 60  # liveness only
    open_logged_in(page, outage, "#/alerts")
    while True:
        if page.text_content("#card-firing .card-value") == "1,005":
            break
        if time.monotonic() > deadline:
            shown = page.text_content("#card-firing .card-value")
            pytest.fail(f"the 1,005 alerts did not fire within 60 s (Firing card: {shown})", pytrace=False)
        time.sleep(0.5)
        page.reload()  # the same URL again: a reload, not a hash change, renders it anew
        ready(page)
    page.wait_for_function("document.querySelector('#firing-count').textContent === '1000+'")
    # The card's figure is the rules' own counts (the server's), not the page's 1,000.
    assert page.text_content("#card-firing .card-sub") == "0 critical among 1,005 read"
    firing = page.eval_on_selector_all(
        "#rules tbody tr", "rs => Object.fromEntries(rs.map(r => [r.dataset.name, r.cells[3].textContent]))"
    )
    assert (firing["AgentSilent"], firing["HostInconsistent"], firing["GuestKilled"]) == ("1,000", "5", "0")
    assert page.inner_text("#firing-more").startswith("More than 1000 alerts fire: up to 25 of each rule")
    assert "more than 1000 alerts firing" in (page.get_attribute("#firing-count", "title") or "")
    # The table shows 25 alerts of a rule, the others as one line. The 5 HostInconsistent fired
    # before the 1,000 AgentSilent, so the newest 1,000 hold none of them: they are asked for.
    names = page.eval_on_selector_all("#firing tbody tr .alertname", "ns => ns.map(n => n.textContent)")
    assert names.count("AgentSilent") == 25
    assert names.count("HostInconsistent") == 5 and len(names) == 30
    line = page.text_content("#firing-folded li[data-rule='AgentSilent']")
    assert line == "975 more AgentSilent (warning) not shown: every such host"
    assert page.locator("#firing-folded li").count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "alerts-outage.png"), full_page=True)
    # "every such host": the Hosts page with every silent host, 100 a page.
    page.click("#firing-folded li[data-rule='AgentSilent'] a")
    page.wait_for_function("location.hash.startsWith('#/hosts') && location.hash.includes('status=silent')")
    ready(page)
    assert page.locator("#hosts tbody tr").count() == 100


# Per input: its content box's width less its placeholder's, in px (the text drawn in the input's font).
PLACEHOLDER_ROOM = """inputs => inputs.map(i => {
    const style = getComputedStyle(i);
    const ctx = document.createElement("canvas").getContext("2d");
    ctx.font = style.font;
    const box = i.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return box - ctx.measureText(i.placeholder).width;
})"""


def test_in_a_mass_outage_an_admins_bar_at_1280_px_keeps_log_out_on_its_first_line(
    fresh_page: Any, outage: Fleet
) -> None:
    # The widest bar the header draws: an admin's (one link more) with the Alerts count at
    # "1000+". Before, it pushed "log out" to a second line at 1280 px.
    admin = Tokens(outage.server.settings.database_url).admin()
    fresh_page.set_viewport_size({"width": 1280, "height": 900})
    log_in(fresh_page, outage, admin, "#/fleet?range=6h")
    fresh_page.wait_for_selector("#nav-admin:not([hidden])")
    deadline = time.monotonic() + 60  # liveness only: the evaluator opens the alerts in rounds
    while fresh_page.text_content("#firing-count") != "1000+":
        if time.monotonic() > deadline:
            pytest.fail(
                f"the badge never said 1000+ ({fresh_page.text_content('#firing-count')})", pytrace=False
            )
        time.sleep(0.5)
        fresh_page.reload()
        ready(fresh_page)
    assert_log_out_on_the_first_line(fresh_page)
    # The custom range's inputs show their whole placeholder ("YYYY-MM-DD HH:MM", "now").
    room = fresh_page.eval_on_selector_all(".custom input", PLACEHOLDER_ROOM)
    assert all(spare >= 0 for spare in room), room
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    fresh_page.screenshot(
        path=str(SCREENSHOTS / "topbar-1280-admin-outage.png"),
        clip={"x": 0, "y": 0, "width": 1280, "height": 90},
    )


def test_the_hosts_page_lists_every_silent_host_of_an_outage_page_by_page_each_once(
    page: Any, outage: Fleet
) -> None:
    open_logged_in(page, outage, "#/hosts?status=silent")
    listed: list[str] = []
    pages = 0
    while True:
        pages += 1
        names = page.eval_on_selector_all("#hosts tbody tr", "rs => rs.map(r => r.dataset.host)")
        assert len(names) <= 100
        listed += names
        if page.is_disabled("#page-next") or pages > 20:
            break
        page.click("#page-next")
        ready(page)
    assert (pages, len(listed), len(set(listed))) == (11, len(QUIET), len(QUIET))
    assert listed == sorted(QUIET)  # by name, none twice, none left out
    page.click("#page-previous")  # back one page: the tenth, as it was
    ready(page)
    assert page.text_content("#page-no") == "page 10 · 100 host(s)"

    open_logged_in(page, outage, "#/hosts?status=needs_action")
    assert page.eval_on_selector_all("#hosts tbody tr", "rs => rs.map(r => r.dataset.host)") == DRIFTERS
    shot(page, "hosts-needing-action")


def test_the_hosts_page_ranks_the_busiest_and_the_fleet_view_links_to_the_whole_lists(
    page: Any, big_fleet: Fleet
) -> None:
    open_logged_in(page, big_fleet, "#/hosts?range=6h&sort=events")
    busiest = page.eval_on_selector_all("#hosts tbody tr", "rs => rs.map(r => r.dataset.host)")
    assert busiest == [BUSY, "kvm-0500"]  # the only two with events in the window
    open_logged_in(page, big_fleet, "#/fleet?range=6h")
    page.click("#top-hosts-hint a:text-is('silent')")
    ready(page)
    assert page.eval_on_selector_all("#hosts tbody tr", "rs => rs.map(r => r.dataset.host)") == [SILENT]
    assert page.input_value("#host-filters select[name=status]") == "silent"
