"""Who split_lock_detect=fatal kills, and what a clean window proves."""

from __future__ import annotations

import datetime as dt

import pytest

from app.insights.fatal import host_readiness, killed_under_fatal

UNTIL = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("action", ["warn", "throttle", "sigbus", "unknown"])
def test_every_split_lock_that_reached_the_host_would_be_a_sigbus(action: str) -> None:
    for guest in (True, False):
        assert killed_under_fatal("split_lock", action, guest=guest, sld_supported=True, bld_supported=True)


def test_reflected_and_kernel_split_locks_are_not_killed_by_fatal_mode() -> None:
    for action in ("reflect", "oops"):
        assert not killed_under_fatal(
            "split_lock", action, guest=True, sld_supported=True, bld_supported=True
        )


def test_bus_locks_are_killed_only_where_the_cpu_has_bus_lock_db_and_no_split_lock_ac() -> None:
    # bus_lock_init(): warn and fatal turn #DB off on CPUs with #AC split-lock detection.
    assert not killed_under_fatal("bus_lock", "warn", guest=False, sld_supported=True, bld_supported=True)
    assert killed_under_fatal("bus_lock", "warn", guest=False, sld_supported=False, bld_supported=True)
    # A guest's bus lock exits to its VMM; handle_bus_lock() never sees it.
    assert not killed_under_fatal("bus_lock", "warn", guest=True, sld_supported=False, bld_supported=True)


def test_a_host_watched_for_twelve_days_without_offender_is_ready() -> None:
    r = host_readiness(
        offenders=0,
        last_offence_at=None,
        mode_now="warn",
        watched_since=UNTIL - dt.timedelta(days=12, hours=3),
        until=UNTIL,
    )
    assert r.ready is True and r.verdict == "ready: no offender in 12 days"


def test_a_host_that_cannot_trap_proves_nothing() -> None:
    r = host_readiness(offenders=0, last_offence_at=None, mode_now="off", watched_since=None, until=UNTIL)
    assert r.ready is None and r.verdict.startswith("cannot tell")


def test_offenders_make_a_host_not_ready_with_its_last_trap() -> None:
    r = host_readiness(
        offenders=2,
        last_offence_at=UNTIL - dt.timedelta(hours=1),
        mode_now="warn",
        watched_since=UNTIL,
        until=UNTIL,
    )
    assert r.ready is False and "2 offender(s)" in r.verdict and "2026-11-24 11:00" in r.verdict
