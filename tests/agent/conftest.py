"""Agent test fixtures: `update_golden` is true under `pytest --update-golden` (option registered in
tests/conftest.py) or SPLITWATCH_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    flag = bool(request.config.getoption("--update-golden", default=False))
    return flag or os.environ.get("SPLITWATCH_UPDATE_GOLDEN") == "1"
