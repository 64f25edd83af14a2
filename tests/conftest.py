"""Suite-wide helpers: what a test needs from the machine, and how its absence is reported."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL = os.environ.get("SPLITWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CHROMIUM = os.environ.get("SPLITWATCH_CHROMIUM", "/usr/bin/chromium")


def require(available: bool, reason: str) -> None:
    """Skip with the reason printed, except under CI=true where the absence is a failure."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def require_chromium() -> str:
    require(
        os.access(CHROMIUM, os.X_OK),
        f"no Chromium at {CHROMIUM}: apt-get install chromium (or set SPLITWATCH_CHROMIUM)",
    )
    return CHROMIUM


def require_promtool() -> str:
    path = shutil.which("promtool")
    require(path is not None, "no promtool: apt-get install --no-install-recommends prometheus")
    assert path is not None
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    # Options live here, in the root conftest: pytest reads options only from conftests it
    # loads at start-up, so a bare `pytest --update-golden` works from the repo root.
    parser.addoption(
        "--update-docs", action="store_true", default=False, help="rewrite docs/cli.md from the real --help"
    )
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.jsonl with the agent's current output instead of comparing",
    )
