"""Browser tests of the dashboard (#5): a real uvicorn, real data through ingest, real Chromium.

    fleet        FLEET ingested into a fresh SQLite database through POST /api/v1/ingest
                 (tests/app/fill.py), served by a real uvicorn for the whole module; `.url`,
                 `.viewer` (a viewer token), `.now` (the instant the data is relative to).
    empty_fleet  the same server shape with nothing ingested.
    browser      Debian's Chromium, headless (require_chromium(): skipped locally when absent,
                 a failure under CI=true). Never `playwright install`.
    context      one browser profile per module (its HTTP cache keeps Plotly).
    page         the module's one dashboard tab, shared (tests open their view by URL);
    fresh_page   a new tab (own sessionStorage, so logged out, nothing loaded).
                 On a failing test, the browser console and the server's log are printed.

FLEET is one table of facts; the expected numbers (per action, per host, per guest, per
window) are computed from it, never written twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.payload import Event
from app.settings import Settings
from tests.app.conftest import Server, Tokens, upgrade
from tests.app.fill import Filler, ev, lost, state
from tests.conftest import require_chromium

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@dataclass(frozen=True)
class Fact:
    """One ingested event, `minutes_ago` before the fleet's `now`."""

    host: str
    minutes_ago: int
    action: str
    count: int = 1
    guest: str | None = None
    kind: str = "split_lock"
    source: str = "kmsg"
    address: str | None = "0x401a2b"
    comm: str | None = None


# Events sit at least 10 minutes from every window edge (1h, 6h, 24h), so a test that runs a
# minute later than the fill still sees the same totals.
FLEET: tuple[Fact, ...] = (
    # kvm-a: warn mode; mitigate went 0 -> 1 two hours ago (a mode-change mark).
    *(Fact("kvm-a", 420 + i, "warn", guest="web-1") for i in range(30)),  # 7 h ago: only in 24h
    Fact("kvm-a", 240, "warn", count=2, guest="web-1"),
    Fact("kvm-a", 90, "throttle", count=3, guest="web-1", source="tracefs", address=None),
    Fact("kvm-a", 30, "throttle", count=5, guest="web-1", source="tracefs", address=None),
    Fact("kvm-a", 180, "warn", guest="batch-3", address="0xffffffff81234567"),
    # kvm-b: fatal mode; db-7 was killed by SIGBUS.
    Fact("kvm-b", 40, "sigbus", guest="db-7", address="0x7f00dead0000"),
    # kvm-c: warn mode drifting (cpu 2 reads off); a plain host process and a guest that moved.
    *(Fact("kvm-c", 1200 + i, "warn", comm="CJobMgr::m_Work") for i in range(4)),  # 20 h ago
    Fact("kvm-c", 50, "warn", guest="batch-3", address="0xffffffff81234567"),
    # kvm-d: ratelimit:100, bus locks counted by tracefs.
    Fact("kvm-d", 15, "ratelimit", count=7, kind="bus_lock", source="tracefs", address=None),
    Fact("kvm-d", 20, "ratelimit", count=7, kind="bus_lock", source="tracefs", address=None),
)
KERNELS = {"kvm-d": "5.15.0-91-generic"}  # the others: tests/app/fill.py's 6.8 default
HEALTH_A = {"batches_sent": 42, "send_errors": 0, "spool_bytes": 0, "rss_bytes": 21_000_000}
GAP_C = 12


@dataclass
class Fleet:
    url: str
    viewer: str
    now: dt.datetime
    server: Server
    log: list[str]


def within(minutes: int) -> list[Fact]:
    return [f for f in FLEET if f.minutes_ago < minutes]


def total(facts: list[Fact], **match: str | None) -> int:
    return sum(f.count for f in facts if all(getattr(f, k) == v for k, v in match.items()))


def _event(f: Fact, now: dt.datetime) -> Event:
    return ev(
        now - dt.timedelta(minutes=f.minutes_ago),
        guest=f.guest,
        action=f.action,
        kind=f.kind,
        source=f.source,
        count=f.count,
        address=f.address,
        comm=f.comm,
    )


def fill_fleet(url: str, tokens: Tokens, now: dt.datetime) -> None:
    # kvm-d runs 5.15 (ratelimit:N is 5.14+): the kernel-era panel has two eras to show.
    fill = Filler(url, tokens, kernels=KERNELS)
    ago = lambda minutes: now - dt.timedelta(minutes=minutes)  # noqa: E731
    events = {h: [_event(f, now) for f in FLEET if f.host == h] for h in ("kvm-a", "kvm-b", "kvm-c", "kvm-d")}
    try:
        fill.send("kvm-a", state=state(ago(300), mode="warn", mitigate=0), events=events["kvm-a"][:31])
        fill.send(
            "kvm-a",
            state=state(ago(120), mode="warn", mitigate=1),
            events=events["kvm-a"][31:],
            health=HEALTH_A,
        )
        fill.send("kvm-b", state=state(ago(600), mode="fatal", cpus=8), events=events["kvm-b"])
        fill.send("kvm-c", state=state(ago(200), mode="warn"), events=events["kvm-c"])
        for minutes in (180, 170, 160):  # three samples in a row: drift, not warn's brief off
            fill.send("kvm-c", state=state(ago(minutes), mode="warn", off=[2]))
        fill.send("kvm-c", gaps=[lost(GAP_C)])
        fill.send(
            "kvm-d",
            state=state(ago(600), mode="ratelimit", ratelimit=100, mitigate=None),
            events=events["kvm-d"],
        )
    finally:
        fill.close()


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def _serve(tmp: Path, log: list[str]) -> tuple[Server, Tokens]:
    url = f"sqlite:///{tmp / 'splitwatch.db'}"
    upgrade(url)
    server = Server(Settings(database_url=url, log_level="info"))
    server.start()
    return server, Tokens(url)


@pytest.fixture(scope="module")
def server_log() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = _ListHandler(lines)
    logger = logging.getLogger("splitwatch")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, server_log: list[str]) -> Iterator[Fleet]:
    server, tokens = _serve(tmp_path_factory.mktemp("fleet"), server_log)
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    try:
        fill_fleet(server.url, tokens, now)
        yield Fleet(server.url, tokens.viewer(), now, server, server_log)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def empty_fleet(tmp_path_factory: pytest.TempPathFactory, server_log: list[str]) -> Iterator[Fleet]:
    server, tokens = _serve(tmp_path_factory.mktemp("empty"), server_log)
    try:
        yield Fleet(server.url, tokens.viewer(), dt.datetime.now(dt.UTC), server, server_log)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def context(browser: Any) -> Iterator[Any]:
    """One browser profile per module: its HTTP cache keeps Plotly (4.8 MB) after the first
    page. Each test still gets its own tab, and a tab's sessionStorage (the token) is its own."""
    # bypass_csp: these tests poll with page.wait_for_function, which evaluates its predicate
    # with eval inside the page; the server's CSP forbids that (as it should). The CSP itself
    # is checked, without the bypass, in tests/browser/test_hardening.py.
    ctx = browser.new_context(
        viewport={"width": 1400, "height": 1000}, accept_downloads=True, bypass_csp=True
    )
    yield ctx
    ctx.close()


class _Tab:
    """A tab and everything its console said, for the failure report."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.set_default_timeout(15_000)


def _report_on_failure(
    request: pytest.FixtureRequest, tab: _Tab, console_start: int, log: list[str], log_start: int
) -> None:
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("---- browser console ----", *tab.console[console_start:], sep="\n")
        print("---- server log ----", *log[log_start:], sep="\n")


@pytest.fixture(scope="module")
def _shared_tab(context: Any) -> Iterator[_Tab]:
    tab = _Tab(context)
    yield tab
    tab.page.close()


@pytest.fixture
def page(_shared_tab: _Tab, request: pytest.FixtureRequest, server_log: list[str]) -> Iterator[Any]:
    """The module's one dashboard tab. The URL is the whole view state, so a test that opens
    its URL gets its view whatever the test before did; sharing the tab runs Plotly's 4.8 MB
    once per module instead of once per test."""
    console_start, log_start = len(_shared_tab.console), len(server_log)
    yield _shared_tab.page
    _report_on_failure(request, _shared_tab, console_start, server_log, log_start)


@pytest.fixture
def fresh_page(context: Any, request: pytest.FixtureRequest, server_log: list[str]) -> Iterator[Any]:
    """A new tab: logged out (sessionStorage is per tab), nothing loaded yet."""
    tab = _Tab(context)
    log_start = len(server_log)
    yield tab.page
    _report_on_failure(request, tab, 0, server_log, log_start)
    tab.page.close()
