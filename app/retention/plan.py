"""What retention keeps, as pure date arithmetic: no database, no clock.

Horizons (all at 00:00 UTC, so a day is kept whole or dropped whole and a PostgreSQL day
partition is dropped exactly when SQLite would have deleted all of its rows):
- `event`: SPLITWATCH_RETENTION_DAYS (default 30).
- `rollup_1m`: as long as `event`. The series reader (app/store/series.py) reads it only for a
  step under an hour: a default chart gets that step below ~12 days of span, an explicit
  step=60 reaches at most MAX_BUCKETS minutes (~7 days), and `range_totals` reads it only for
  the minute edges around whole hours — whose sub-minute edges come from `event` anyway, so past
  the raw horizon nothing exact can be had from minutes. It is also ~60x the rows of
  rollup_1h: at 10,000 hosts, 400 days of it would be billions of rows (docs/scaling.md).
- `rollup_1h` and `gap`: SPLITWATCH_ROLLUP_RETENTION_DAYS (default 400). Every chart with a
  step of an hour or more, and the totals over whole hours, read rollup_1h alone; gaps are the
  counted losses that qualify those totals, and they are few rows.

PostgreSQL partitions (`event_pYYYYMMDD`, one per UTC day, [day, day + 1)) are made
PARTITIONS_AHEAD days ahead; `event_default` takes any time outside them (a far-future clock,
an event older than the oldest partition), so ingest never fails for a time it did not plan.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

PARTITIONS_AHEAD = 7
DEFAULT_PARTITION = "event_default"
_PARTITION = re.compile(r"^event_p(\d{8})$")


@dataclass(frozen=True, slots=True)
class Horizons:
    """Rows strictly older than these instants are removed."""

    event: dt.datetime
    rollup_1m: dt.datetime
    rollup_1h: dt.datetime
    gap: dt.datetime


def day_start(at: dt.datetime) -> dt.datetime:
    """00:00 UTC of the day holding the aware datetime `at`."""
    if at.tzinfo is None:
        raise ValueError("day_start needs a timezone-aware datetime")
    at = at.astimezone(dt.UTC)
    return dt.datetime(at.year, at.month, at.day, tzinfo=dt.UTC)


def horizons(now: dt.datetime, *, retention_days: int, rollup_retention_days: int) -> Horizons:
    today = day_start(now)
    raw = today - dt.timedelta(days=retention_days)
    long = today - dt.timedelta(days=rollup_retention_days)
    return Horizons(event=raw, rollup_1m=raw, rollup_1h=long, gap=long)


def partition_name(day: dt.datetime) -> str:
    return f"event_p{day_start(day):%Y%m%d}"


def partition_day(name: str) -> dt.datetime | None:
    """The day a partition named by `partition_name` holds; None for any other name."""
    m = _PARTITION.match(name)
    if m is None:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def is_event_partition(name: str) -> bool:
    return name == DEFAULT_PARTITION or partition_day(name) is not None


def days_to_make(
    now: dt.datetime, *, first: dt.datetime | None = None, ahead: int = PARTITIONS_AHEAD
) -> list[dt.datetime]:
    """Every day from `first` (default: today) to today + `ahead`, inclusive."""
    today = day_start(now)
    day = day_start(first) if first is not None and first < today else today
    out = []
    while day <= today + dt.timedelta(days=ahead):
        out.append(day)
        day += dt.timedelta(days=1)
    return out


def partitions_to_drop(names: Iterable[str], event_horizon: dt.datetime) -> list[str]:
    """Day partitions whose whole day is older than the horizon, oldest first."""
    old = []
    for name in names:
        day = partition_day(name)
        if day is not None and day + dt.timedelta(days=1) <= event_horizon:
            old.append((day, name))
    return [name for _, name in sorted(old)]
