"""Step math for time buckets: pure, no database.

A bucket of `step_s` seconds starts at a multiple of `step_s` since the Unix epoch (UTC), so
ingest (rollup_1m: 60 s, rollup_1h: 3600 s) and the series reader agree on edges without
talking to each other. An event at exactly an edge belongs to the bucket that starts there.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

ROLLUP_STEPS = (3600, 60)  # coarsest first: rollup_1h, rollup_1m
NICE_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_epoch(epoch_s: float, step_s: int) -> int:
    """Start (epoch seconds) of the bucket holding `epoch_s`."""
    return int(epoch_s // step_s) * step_s


def bucket_start(at: datetime, step_s: int) -> datetime:
    """Start of the `step_s` bucket holding the aware datetime `at`."""
    if at.tzinfo is None:
        raise ValueError("bucket_start needs a timezone-aware datetime")
    seconds = (at - _EPOCH) // timedelta(seconds=1)
    return _EPOCH + timedelta(seconds=floor_epoch(seconds, step_s))


def bucket_starts(since: datetime, until: datetime, step_s: int) -> list[datetime]:
    """Every bucket start from the bucket holding `since` up to, not including, `until`."""
    if step_s <= 0:
        raise ValueError("step must be positive")
    first = bucket_start(since, step_s)
    out: list[datetime] = []
    at = first
    step = timedelta(seconds=step_s)
    while at < until:
        out.append(at)
        at += step
    return out


def bucket_count(since: datetime, until: datetime, step_s: int) -> int:
    """How many buckets `bucket_starts` would return, without building them."""
    if until <= since:
        return 0
    first = bucket_start(since, step_s)
    return math.ceil((until - first).total_seconds() / step_s)


def rollup_step_for(step_s: int) -> int:
    """Which rollup answers a series of `step_s`: 3600 when it divides the step, else 60."""
    for rollup_s in ROLLUP_STEPS:
        if step_s % rollup_s == 0:
            return rollup_s
    raise ValueError(f"step {step_s}s is not a multiple of 60 seconds")


def default_step(since: datetime, until: datetime, points: int = 300) -> int:
    """A nice step giving about `points` buckets over [since, until)."""
    span = max((until - since).total_seconds(), 60.0)
    want = span / points
    for step in NICE_STEPS:
        if step >= want:
            return step
    return math.ceil(want / 86400) * 86400
