"""The backend's breaks: found from when the database was last reached, kept a week
(app/store/backend_break.py)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, select

from app.alerts.evaluate import take_lease
from app.store.backend_break import BREAKS_KEPT, MAX_BREAKS, hear, recent_breaks
from app.store.status import Break
from app.store.tables import alert_lease, backend_break

T = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
TTL = 90.0  # the lease's time at the default 30 s interval
S = dt.timedelta(seconds=1)


def heard(engine: Engine, at: dt.datetime, reached: dt.datetime | None = None) -> Break | None:
    with engine.begin() as conn:
        return hear(conn, at, TTL, reached)


def kept(engine: Engine, now: dt.datetime = T + dt.timedelta(days=1)) -> list[Break]:
    with engine.connect() as conn:
        return list(recent_breaks(conn, now))


def leased(engine: Engine, at: dt.datetime = T) -> None:
    with engine.begin() as conn:
        assert take_lease(conn, "process-a", at, TTL)


def test_before_alerting_ever_ran_nothing_was_heard_so_nothing_is_a_break(engine: Engine) -> None:
    assert heard(engine, T) is None
    assert kept(engine) == []


def test_a_gap_longer_than_the_leases_time_is_a_break_and_a_shorter_one_is_not(engine: Engine) -> None:
    leased(engine)
    assert heard(engine, T + 90 * S) is None  # the lease's time exactly: no break
    assert heard(engine, T + 181 * S) == Break(T + 90 * S, T + 181 * S)
    assert kept(engine) == [Break(T + 90 * S, T + 181 * S)]


def test_a_round_slower_than_the_leases_time_is_no_break_when_its_evaluation_reached_the_database(
    engine: Engine,
) -> None:
    # One process, its evaluations taking 100 s each (a slow database, a huge fleet): the last
    # hearing is 130 s old, but the evaluation that ended 30 s ago reached the database.
    leased(engine)
    heard(engine, T)
    for k in range(1, 6):
        assert heard(engine, T + 130 * k * S, reached=T + (130 * k - 30) * S) is None
    assert kept(engine) == []
    assert heard(engine, T + 800 * S) is not None  # without it, the same gap is a break


def test_a_clock_gone_back_writes_nothing(engine: Engine) -> None:
    leased(engine)
    heard(engine, T + 60 * S)
    assert heard(engine, T + 10 * S) is None
    with engine.connect() as conn:
        assert conn.execute(select(alert_lease.c.heard_at)).scalar() == T + 60 * S


def test_breaks_are_kept_a_week_and_a_read_returns_the_newest_hundred_oldest_first(engine: Engine) -> None:
    leased(engine)
    at = T
    for _ in range(MAX_BREAKS + 5):  # a flapping database: down 10 minutes, up a moment, again
        at += dt.timedelta(minutes=10)
        heard(engine, at)
    breaks = kept(engine, at)
    assert len(breaks) == MAX_BREAKS
    assert breaks[-1].back_at == at and breaks == sorted(breaks, key=lambda b: b.down_at)
    # A week later, the next break removes those over before it began.
    later = at + BREAKS_KEPT + dt.timedelta(minutes=10)
    heard(engine, later)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(backend_break)).scalar() == 1
    assert kept(engine, later) == [Break(at, later)]
