"""Agent test options: `--update-golden` rewrites tests/golden/*.jsonl from the current output.

pytest reads options only from conftest files it loads at start-up: `pytest tests/agent
--update-golden` (or any path under tests/agent) does; a bare `pytest --update-golden` does not
see this file in time, so SPLITWATCH_UPDATE_GOLDEN=1 works from anywhere.
"""

from __future__ import annotations

import contextlib
import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    # ValueError: already registered by a conftest nearer the root.
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--update-golden",
            action="store_true",
            default=False,
            help="rewrite tests/golden/*.jsonl with the agent's current output instead of comparing",
        )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    flag = bool(request.config.getoption("--update-golden", default=False))
    return flag or os.environ.get("SPLITWATCH_UPDATE_GOLDEN") == "1"
