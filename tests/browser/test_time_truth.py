"""The dashboard tells the truth about time (#17): a past window shows that window's state, not
now's; the per-CPU chart reads at every range; killed guests lead the guest list; change marks
stay readable. Real uvicorn, FLEET ingested (tests/browser/conftest.py), real Chromium.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import FLEET, Fleet
from tests.browser.test_dashboard import open_logged_in, shot

pytestmark = pytest.mark.browser


def test_the_killed_guest_is_first_in_top_guests_though_it_has_the_fewest_events(page: Any, fleet: Fleet) -> None:
    open_logged_in(page, fleet, "#/fleet?range=24h")
    killed = "db-7"  # kvm-b runs fatal mode: its one trap was a SIGBUS
    events = {g: sum(f.count for f in FLEET if f.guest == g) for g in {f.guest for f in FLEET if f.guest}}
    assert min(events, key=lambda g: events[g]) == killed  # by events alone it would be last
    guests = page.eval_on_selector_all("#top-guests tbody tr", "rs => rs.map(r => r.dataset.guest)")
    assert guests[0] == killed
    assert "killed" in page.inner_text("#top-guests tbody tr:first-child")
    shot(page, "fleet-killed-first")
