"""app/retention/plan.py: horizons and day partitions, as date arithmetic."""

from __future__ import annotations

import datetime as dt

import pytest

from app.retention.plan import (
    day_start,
    days_to_make,
    horizons,
    is_event_partition,
    partition_day,
    partition_name,
    partitions_to_drop,
)

NOW = dt.datetime(2026, 11, 30, 15, 42, 7, tzinfo=dt.UTC)


def test_horizons_start_at_midnight_utc_so_days_go_whole() -> None:
    h = horizons(NOW, retention_days=30, rollup_retention_days=400)
    assert h.event == dt.datetime(2026, 10, 31, tzinfo=dt.UTC)
    assert h.rollup_1m == h.event  # minute rollups live as long as raw events
    assert h.rollup_1h == dt.datetime(2025, 10, 26, tzinfo=dt.UTC)
    assert h.gap == h.rollup_1h


def test_day_start_of_a_time_in_another_zone_is_the_utc_day() -> None:
    at = dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))  # 22:00 UTC the 30th
    assert day_start(at) == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        day_start(dt.datetime(2026, 11, 30))


@pytest.mark.parametrize(
    ("name", "day"),
    [
        ("event_p20261130", dt.datetime(2026, 11, 30, tzinfo=dt.UTC)),
        ("event_p20240229", dt.datetime(2024, 2, 29, tzinfo=dt.UTC)),
        ("event_p20261331", None),  # no such date
        ("event_default", None),
        ("event", None),
        ("event_p2026113", None),
        ("rollup_1h", None),
    ],
)
def test_partition_names_read_back_as_their_day(name: str, day: dt.datetime | None) -> None:
    assert partition_day(name) == day


def test_partition_name_round_trips() -> None:
    assert partition_name(NOW) == "event_p20261130"
    assert partition_day(partition_name(NOW)) == day_start(NOW)
    assert is_event_partition("event_default") and is_event_partition("event_p20261130")
    assert not is_event_partition("event") and not is_event_partition("gap")


def test_days_to_make_run_from_today_to_seven_days_ahead() -> None:
    days = days_to_make(NOW)
    assert days[0] == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    assert days[-1] == dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    assert len(days) == 8


def test_days_to_make_start_at_an_older_first_day() -> None:
    days = days_to_make(NOW, first=dt.datetime(2026, 11, 28, 23, 59, tzinfo=dt.UTC), ahead=1)
    assert [d.day for d in days] == [28, 29, 30, 1]


def test_only_partitions_whose_whole_day_is_past_the_horizon_are_dropped() -> None:
    horizon = dt.datetime(2026, 10, 31, tzinfo=dt.UTC)
    names = ["event_p20261031", "event_default", "event_p20261030", "event_p20261029", "event_p20261101"]
    # 2026-10-30 ends exactly at the horizon: every row of it is older. 2026-10-31 is kept.
    assert partitions_to_drop(names, horizon) == ["event_p20261029", "event_p20261030"]
