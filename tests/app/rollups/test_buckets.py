"""Bucket edges are multiples of the step since the epoch, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.rollups.buckets import bucket_count, bucket_start, bucket_starts, default_step, rollup_step_for

T = datetime(2026, 11, 25, 10, 17, 42, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("step", "start"),
    [
        (60, datetime(2026, 11, 25, 10, 17, tzinfo=UTC)),
        (300, datetime(2026, 11, 25, 10, 15, tzinfo=UTC)),
        (3600, datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
        (86400, datetime(2026, 11, 25, tzinfo=UTC)),
    ],
)
def test_bucket_start_is_the_multiple_of_step_at_or_before_the_time(step: int, start: datetime) -> None:
    assert bucket_start(T, step) == start


def test_time_exactly_on_an_edge_starts_its_own_bucket() -> None:
    edge = datetime(2026, 11, 25, 10, 17, tzinfo=UTC)
    assert bucket_start(edge, 60) == edge


def test_times_in_another_zone_are_bucketed_in_utc() -> None:
    from datetime import timezone

    local = T.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert bucket_start(local, 3600) == datetime(2026, 11, 25, 10, tzinfo=UTC)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        bucket_start(datetime(2026, 1, 1), 60)


def test_bucket_starts_cover_since_to_until_without_the_until_bucket() -> None:
    since = datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC)
    until = datetime(2026, 11, 25, 10, 3, tzinfo=UTC)
    starts = bucket_starts(since, until, 60)
    assert starts == [datetime(2026, 11, 25, 10, m, tzinfo=UTC) for m in range(3)]
    assert bucket_count(since, until, 60) == 3


def test_rollup_for_a_step_is_hours_when_3600_divides_it_else_minutes() -> None:
    assert rollup_step_for(7200) == 3600
    assert rollup_step_for(300) == 60
    with pytest.raises(ValueError, match="multiple of 60"):
        rollup_step_for(90)


def test_default_step_gives_a_few_hundred_buckets_at_most() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    for span in (timedelta(hours=1), timedelta(days=1), timedelta(days=30), timedelta(days=400)):
        step = default_step(since, since + span)
        assert step % 60 == 0
        assert bucket_count(since, since + span, step) <= 301
