"""What the sender does with each answer of a receiver, as a pure decision (app/alerts/outbox.py)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from app.alerts.outbox import Attempt, backoff_s, decide, parse_retry_after
from app.settings import Settings

NOW = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.UTC)
SETTINGS = Settings(webhook_backoff_cap_s=300, webhook_max_attempts=5, webhook_retry_after_max_s=3600)


def test_2xx_is_delivered() -> None:
    assert decide(Attempt(204, None, 5, ""), 1, NOW, SETTINGS).status == "delivered"


def test_429_waits_for_retry_after_in_seconds_or_as_an_http_date() -> None:
    d = decide(Attempt(429, None, 5, "", retry_after="120"), 1, NOW, SETTINGS)
    assert (d.status, d.next_attempt_at) == ("pending", NOW + dt.timedelta(seconds=120))
    date = "Mon, 30 Nov 2026 12:05:00 GMT"
    assert parse_retry_after(date, NOW) == 300.0
    assert decide(
        Attempt(429, None, 5, "", retry_after=date), 1, NOW, SETTINGS
    ).next_attempt_at == NOW + dt.timedelta(minutes=5)


def test_retry_after_beyond_the_cap_is_capped() -> None:
    d = decide(Attempt(429, None, 5, "", retry_after="999999"), 1, NOW, SETTINGS)
    assert d.next_attempt_at == NOW + dt.timedelta(seconds=3600)


def test_410_is_gone_and_turns_the_webhook_off() -> None:
    d = decide(Attempt(410, None, 5, ""), 1, NOW, SETTINGS)
    assert (d.status, d.gone) == ("gone", True)


@pytest.mark.parametrize("code", [301, 302, 307, 308, 400, 401, 403, 404, 413, 422])
def test_redirects_and_other_4xx_are_final(code: int) -> None:
    d = decide(Attempt(code, None, 5, "", location="https://elsewhere.example.com/"), 1, NOW, SETTINGS)
    assert d.status == "failed"
    assert str(code) in (d.error or "")


@pytest.mark.parametrize("code", [500, 502, 503, 408, None])
def test_5xx_timeouts_and_no_connection_retry_until_the_last_attempt(code: int | None) -> None:
    attempt = Attempt(code, None if code else "cannot reach the receiver", None, None)
    assert decide(attempt, 4, NOW, SETTINGS).status == "pending"
    last = decide(attempt, 5, NOW, SETTINGS)
    assert last.status == "failed" and "gave up after 5 attempts" in (last.error or "")


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempts, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (20, 300.0)):
        waits = [backoff_s(attempts, 300.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (attempts, min(waits), max(waits))
        assert max(waits) - min(waits) > ceiling / 10  # jittered, not fixed
