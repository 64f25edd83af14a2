"""The dashboard tells the truth about time (#17): a past window shows that window's state, not
now's; the per-CPU chart reads at every range; killed guests lead the guest list; change marks
stay readable. Real uvicorn, FLEET ingested (tests/browser/conftest.py), real Chromium.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from typing import Any

import pytest

from tests.app.conftest import Tokens
from tests.app.fill import Filler, ev, lost, state
from tests.browser.conftest import FLEET, SCREENSHOTS, Fleet
from tests.browser.test_dashboard import open_logged_in, shot

pytestmark = pytest.mark.browser


def test_the_killed_guest_is_first_in_top_guests_though_it_has_the_fewest_events(
    page: Any, fleet: Fleet
) -> None:
    open_logged_in(page, fleet, "#/fleet?range=24h")
    killed = "db-7"  # kvm-b runs fatal mode: its one trap was a SIGBUS
    events = {g: sum(f.count for f in FLEET if f.guest == g) for g in {f.guest for f in FLEET if f.guest}}
    assert min(events, key=lambda g: events[g]) == killed  # by events alone it would be last
    guests = page.eval_on_selector_all("#top-guests tbody tr", "rs => rs.map(r => r.dataset.guest)")
    assert guests[0] == killed
    assert "killed" in page.inner_text("#top-guests tbody tr:first-child")
    shot(page, "fleet-killed-first")


def _yesterday_window(fleet: Fleet) -> str:
    """02:00-03:00 UTC of the day before the fleet's `now`: a window wholly in the past."""
    day = (fleet.now - dt.timedelta(days=1)).date()
    since = dt.datetime.combine(day, dt.time(2), dt.UTC)
    return f"since={since:%Y-%m-%dT%H:%M:%SZ}&until={since + dt.timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"


def test_a_window_yesterday_labels_current_state_now_and_shows_no_relative_last_report(
    page: Any, fleet: Fleet
) -> None:
    open_logged_in(page, fleet, f"#/fleet?{_yesterday_window(fleet)}")
    assert page.text_content("#card-action .card-label") == "Need action now"
    assert page.text_content("#card-hosts .card-label") == "Hosts now"
    assert "as of now, not of the window" in page.inner_text("#counted")
    hosts = page.inner_text("#top-hosts")
    assert "status now" in hosts and "last report (now)" in hosts
    assert not re.search(r"\d+ (s|min|h) ago", hosts)  # no "1 s ago" beside yesterday's window
    badges = page.eval_on_selector_all("#top-hosts tbody .badge.status", "bs => bs.map(b => b.textContent)")
    assert badges and all(b.startswith("now: ") for b in badges)  # every status says it is today's
    shot(page, "fleet-yesterday")

    open_logged_in(page, fleet, f"#/host/kvm-c?{_yesterday_window(fleet)}")
    status = page.text_content("#view h1 .badge.status")
    assert status.startswith("now: ")
    if page.is_visible("#verdict-banner"):  # a status that is not `consistent` has a banner
        assert page.inner_text("#verdict-banner").startswith("Now, not in this window")
    assert not re.search(r"\d+ (s|min|h) ago", page.inner_text(".view-host .kv"))
    shot(page, "host-yesterday")


def test_the_current_window_keeps_plain_labels_and_relative_last_reports(page: Any, fleet: Fleet) -> None:
    open_logged_in(page, fleet, "#/fleet?range=24h")
    assert page.text_content("#card-action .card-label") == "Need action"
    assert re.search(r"\d+ (s|min|h) ago", page.inner_text("#top-hosts"))


FLAPPING = "kvm-flap"  # not in FLEET: a host whose agent sent many states (core 3 flapping)
FLAP_STATES = 150  # more than the chart's column cap (charts.js MAX_CPU_COLUMNS = 120)
FLAP_EVERY_MIN = 8  # 150 x 8 min = 20 h: inside the 24 h window, beyond 6 h


@pytest.fixture(scope="module")
def flapping(fleet: Fleet) -> str:
    """kvm-flap reports a state every 8 minutes for 20 h; core 3 reads off in every other one."""
    fill = Filler(fleet.url, Tokens(fleet.server.settings.database_url))
    try:
        for i in range(FLAP_STATES):
            at = fleet.now - dt.timedelta(minutes=FLAP_EVERY_MIN * (FLAP_STATES - i))
            fill.send(FLAPPING, state=state(at, mode="warn", cpus=4, off=[3] if i % 2 else []))
    finally:
        fill.close()
    return FLAPPING


def visible_cells(page: Any) -> dict[str, Any]:
    """The per-CPU chart's drawn cells: how many columns, how wide on screen, what they hold."""
    got: dict[str, Any] = page.evaluate(
        """() => {
            const el = document.querySelector('#chart-cpus');
            const t = el.data[0];
            const width = el._fullLayout.xaxis._length;  // the plot area in px
            const columns = t.z[0].length;
            return {columns, px: width / columns, z: t.z};
        }"""
    )
    return got


@pytest.mark.parametrize("range_", ["24h", "6h", "1h"])
def test_the_per_cpu_chart_has_visible_cells_at_every_range(
    page: Any, fleet: Fleet, flapping: str, range_: str
) -> None:
    open_logged_in(page, fleet, f"#/host/{flapping}?range={range_}")
    cells = visible_cells(page)
    assert 2 <= cells["columns"] <= 120 and cells["px"] >= 5  # each cell wider than its 1 px gap
    z = cells["z"]
    assert len(z) == 4
    read = [v for v in z[0] if v is not None]
    assert read and all(v == 1 for v in read)  # core 0: on all along
    flapped = [v for v in z[3] if v is not None]
    assert flapped and any(v < 1 for v in flapped)  # core 3 reads off part of the time
    assert all(0 <= v <= 1 for v in flapped)  # a share of the time read, never more
    shot(page, f"host-cpus-{range_}")


ZERO_HOST = "kvm-zero"  # not in FLEET: one trap, counted by tracefs and printed by the kernel


@pytest.fixture(scope="module")
def zero_count(fleet: Fleet) -> str:
    fill = Filler(fleet.url, Tokens(fleet.server.settings.database_url))
    at = fleet.now - dt.timedelta(minutes=25)
    try:
        fill.send(
            ZERO_HOST,
            events=[
                ev(at, source="tracefs", count=4, address=None, action="throttle"),
                ev(at + dt.timedelta(seconds=1), source="kmsg", count=0, action="throttle"),
            ],
        )
    finally:
        fill.close()
    return ZERO_HOST


def test_the_explorer_names_traps_and_records_and_explains_count_0(
    page: Any, fleet: Fleet, zero_count: str
) -> None:
    open_logged_in(page, fleet, f"#/events?range=6h&host={zero_count}")
    totals = page.inner_text("#event-totals")
    assert totals.startswith("4 trap(s) counted in 2 record(s)")
    assert "first sighting" in page.inner_text("#count-zero-note")
    assert "2 record(s)" in page.inner_text("#page-no")
    shot(page, "events-count-zero")

    open_logged_in(page, fleet, "#/events?range=24h")
    day = [f for f in FLEET if f.minutes_ago < 24 * 60]
    traps = sum(f.count for f in day) + 4  # kvm-zero's trap, counted once
    assert page.inner_text("#event-totals").startswith(f"{traps} trap(s) counted in {len(day) + 2} record(s)")

    open_logged_in(page, fleet, "#/fleet?range=24h")
    assert page.text_content("#card-events .card-label") == "Traps counted"
    assert int(page.inner_text("#card-events .card-value").replace(",", "")) == traps


def test_the_csv_file_is_named_by_its_window_in_readable_utc_stamps(page: Any, fleet: Fleet) -> None:
    since, until = "2026-11-29T02:00:00Z", "2026-11-29T03:00:00Z"
    open_logged_in(page, fleet, f"#/events?since={since}&until={until}&host=kvm-a")
    with page.expect_download() as info:
        page.click("#download-csv")
    assert info.value.suggested_filename == "splitwatch-events-20261129T0200Z-20261129T0300Z-host-kvm-a.csv"


NOISY = "kvm-noisy"  # not in FLEET: an agent that keeps dropping kernel-log records
NOISY_GAPS = 30


@pytest.fixture(scope="module")
def noisy(fleet: Fleet) -> str:
    fill = Filler(fleet.url, Tokens(fleet.server.settings.database_url))
    try:
        fill.send(NOISY, state=state(fleet.now - dt.timedelta(minutes=30), mode="warn"))
        for i in range(NOISY_GAPS):
            fill.send(NOISY, gaps=[lost(3, reason="suppressed", first_seq=100 * (i + 1))])
    finally:
        fill.close()
    return NOISY


def test_repeated_gaps_of_one_host_are_one_mark_and_labels_stay_flat_and_apart(
    page: Any, fleet: Fleet, noisy: str
) -> None:
    # An end after now: a preset's end is the page's now, floored to the second, and the
    # gaps arrived within the last second.
    since, until = fleet.now - dt.timedelta(hours=6), fleet.now + dt.timedelta(hours=1)
    open_logged_in(page, fleet, f"#/fleet?since={since:%Y-%m-%dT%H:%M:%SZ}&until={until:%Y-%m-%dT%H:%M:%SZ}")
    rows = page.eval_on_selector_all(
        "#changes tbody tr", "rs => rs.map(r => Array.from(r.cells).map(c => c.innerText))"
    )
    noisy_rows = [r for r in rows if r[1] == noisy]
    assert len(noisy_rows) == 1, rows
    assert f"{3 * NOISY_GAPS} lost in {NOISY_GAPS} gaps (suppressed)" in noisy_rows[0][3]

    layout = page.evaluate(
        """() => {
            const el = document.querySelector('#chart-action');
            const top = el.getBoundingClientRect().top;
            const boxes = Array.from(el.querySelectorAll('.annotation')).map(a => {
                const r = a.getBoundingClientRect();
                return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
            });
            return {top, boxes, angles: el.layout.annotations.map(a => a.textangle || 0)};
        }"""
    )
    assert layout["boxes"] and all(angle == 0 for angle in layout["angles"])
    assert all(b["top"] >= layout["top"] for b in layout["boxes"])  # inside the chart, not over the toolbar
    boxes = sorted(layout["boxes"], key=lambda b: b["left"])
    for a, b in itertools.pairwise(boxes):
        assert a["right"] <= b["left"] + 1 or a["bottom"] <= b["top"] or b["bottom"] <= a["top"], (a, b)
    shot(page, "fleet-marks")


def test_agent_health_reads_as_words_not_json(page: Any, fleet: Fleet) -> None:
    fill = Filler(fleet.url, Tokens(fleet.server.settings.database_url))
    try:
        fill.send(
            "kvm-health",
            state=state(fleet.now - dt.timedelta(minutes=5)),
            health={
                "batches_sent": 7,
                "token_rejected": None,
                "statuses": {"kmsg": "ok", "tracefs": "absent"},
            },
        )
    finally:
        fill.close()
    open_logged_in(page, fleet, "#/host/kvm-health?range=1h")
    health = page.inner_text("#health")
    assert "{" not in health and "null" not in health
    assert "kmsg ok · tracefs absent" in health and "none" in health


def assert_log_out_on_the_first_line(page: Any) -> None:
    box = page.evaluate(
        """() => {
            const r = document.querySelector('#logout').getBoundingClientRect();
            const brand = document.querySelector('.brand').getBoundingClientRect();
            return {right: r.right, height: r.height, mid: r.top + r.height / 2,
                    brandTop: brand.top, brandBottom: brand.bottom, width: innerWidth};
        }"""
    )
    assert box["right"] <= box["width"], box  # inside the bar
    assert box["brandTop"] <= box["mid"] <= box["brandBottom"], box  # on the bar's first line
    assert box["height"] < 2 * (box["brandBottom"] - box["brandTop"]), box  # "log out" unbroken


@pytest.mark.parametrize("width", [1280, 1366, 1440])
def test_log_out_stays_on_one_line_inside_the_bar(page: Any, fleet: Fleet, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    try:
        open_logged_in(page, fleet, "#/fleet?range=6h")
        assert_log_out_on_the_first_line(page)
        page.screenshot(
            path=str(SCREENSHOTS / f"topbar-{width}.png"), clip={"x": 0, "y": 0, "width": width, "height": 90}
        )
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


def test_custom_range_fields_speak_iso_utc_24_h(page: Any, fleet: Fleet) -> None:
    open_logged_in(page, fleet, "#/fleet?since=2026-11-29T14:05:00Z&until=2026-11-29T15:00:00Z")
    assert page.input_value("#custom-since") == "2026-11-29 14:05"  # not 11/29/2026, 02:05 PM
    assert page.input_value("#custom-until") == "2026-11-29 15:00"
    page.fill("#custom-since", "2026-11-29 22:30")
    page.fill("#custom-until", "")
    page.click("#range-custom button[type=submit]")
    page.wait_for_function("decodeURIComponent(location.hash).includes('since=2026-11-29T22:30:00Z')")
    page.fill("#custom-since", "11/29/2026 10:30 PM")
    page.click("#range-custom button[type=submit]")
    assert "YYYY-MM-DD HH:MM" in page.inner_text("#range-error")
    shot(page, "custom-range-iso")
