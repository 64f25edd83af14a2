"""Settings come from SPLITWATCH_* or keywords; nothing is read at import."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("SPLITWATCH_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.database_url == "sqlite:///./splitwatch.db"
    assert (s.port, s.silent_after_s, s.alert_interval) == (8000, 300, 30)
    assert s.max_body_bytes == 8 * 1024 * 1024
    assert s.webhook_allow_private is False


def test_environment_variables_with_the_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITWATCH_DATABASE_URL", "postgresql://x@y/z")
    monkeypatch.setenv("SPLITWATCH_WEBHOOK_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("SPLITWATCH_ALERT_INTERVAL", "5")
    s = Settings()
    assert s.database_url == "postgresql://x@y/z"
    assert s.webhook_allow_private is True
    assert s.alert_interval == 5


def test_keywords_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITWATCH_PORT", "9000")
    assert Settings(port=1234).port == 1234


def test_out_of_range_value_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(port=70000)
    with pytest.raises(ValidationError):
        Settings(log_level="loud")  # type: ignore[arg-type]


def test_importing_the_app_builds_no_settings() -> None:
    import app.main

    assert not any(isinstance(v, Settings) for v in vars(app.main).values())


def test_retention_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("SPLITWATCH_"):
            monkeypatch.delenv(key)
    assert (Settings().retention_days, Settings().rollup_retention_days) == (30, 400)
    monkeypatch.setenv("SPLITWATCH_RETENTION_DAYS", "7")
    monkeypatch.setenv("SPLITWATCH_ROLLUP_RETENTION_DAYS", "90")
    assert (Settings().retention_days, Settings().rollup_retention_days) == (7, 90)


def test_rollups_kept_shorter_than_raw_events_is_refused_with_the_remedy() -> None:
    remedy = "SPLITWATCH_ROLLUP_RETENTION_DAYS >= SPLITWATCH_RETENTION_DAYS"
    with pytest.raises(ValidationError, match=remedy):
        Settings(retention_days=60, rollup_retention_days=30)
    with pytest.raises(ValidationError):
        Settings(retention_days=0)
