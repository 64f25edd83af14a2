"""The host status rule: silent, else drift, else ok (app/store/status.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from app.store.status import drifting_cpus, host_status

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def status(
    *,
    seen_s_ago: float = 10,
    mode: str | None = "warn",
    sld_supported: bool | None = True,
    streak: dict[str, object] | None = None,
    silent_after_s: float = 300,
    drift_streak: int = 3,
) -> tuple[str, tuple[int, ...]]:
    verdict = host_status(
        last_seen_at=NOW - dt.timedelta(seconds=seen_s_ago),
        mode=mode,
        sld_supported=sld_supported,
        cpu_off_streak=streak,
        now=NOW,
        silent_after_s=silent_after_s,
        drift_streak=drift_streak,
    )
    return verdict.status, verdict.drifting_cpus


def test_host_that_reported_recently_with_all_cores_on_is_ok() -> None:
    assert status(streak={"0": 0, "1": 0}) == ("ok", ())


def test_host_silent_for_longer_than_silent_after_is_silent() -> None:
    assert status(seen_s_ago=301)[0] == "silent"


def test_host_seen_exactly_silent_after_ago_is_not_yet_silent() -> None:
    assert status(seen_s_ago=300)[0] == "ok"


def test_silent_wins_over_drift_because_the_streaks_are_stale() -> None:
    assert status(seen_s_ago=3600, streak={"2": 9}) == ("silent", (2,))


def test_core_off_three_samples_in_a_row_in_warn_mode_is_drift_naming_the_core() -> None:
    assert status(streak={"0": 0, "5": 3, "2": 4}) == ("drift", (2, 5))


def test_core_off_in_two_samples_is_warn_modes_transient_off_not_drift() -> None:
    # DESIGN.md §1: warn mode clears bit 29 for ~2 ticks after each trap.
    assert status(streak={"1": 2}) == ("ok", ())


def test_drift_streak_setting_sets_the_threshold() -> None:
    assert status(streak={"1": 2}, drift_streak=2) == ("drift", (1,))


@pytest.mark.parametrize("mode", ["off", "ratelimit", None])
def test_cores_off_when_the_mode_says_detection_is_off_is_not_drift(mode: str | None) -> None:
    assert status(mode=mode, streak={"0": 50}) == ("ok", ())


def test_fatal_mode_counts_as_detection_on() -> None:
    assert status(mode="fatal", streak={"0": 3}) == ("drift", (0,))


def test_cpu_without_split_lock_support_never_drifts() -> None:
    assert status(sld_supported=False, streak={"0": 50}) == ("ok", ())
    assert status(sld_supported=None, streak={"0": 50}) == ("ok", ())


def test_malformed_streak_entries_are_skipped_not_fatal() -> None:
    assert drifting_cpus("warn", True, {"x": 9, "1": "9", "2": True, "3": 3}, 3) == (3,)
