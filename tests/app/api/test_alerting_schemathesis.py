"""schemathesis against the alerting routes with an admin token, writes included: no 500s,
answers as documented (issue 12). Same checks and caveats as test_schemathesis.py; webhooks
are created against public addresses only (the SSRF guard refuses the rest with a 422)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.conftest import Server, Tokens

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
OPERATIONS = r"^/api/v1/(alert-rules|alerts|silences|webhooks)"

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True), pytest.mark.timeout(300)]


def test_alerting_api_survives_schemathesis_with_every_check(
    server: Server, tokens: Tokens, tmp_path: Path
) -> None:
    command = [
        str(SCHEMATHESIS), "run", f"{server.url}/openapi.json",
        "--header", f"Authorization: Bearer {tokens.admin()}",
        "--include-path-regex", OPERATIONS,
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "10", "--seed", "1", "--workers", "1",
        "--generation-database", "none", "--no-color", "--request-timeout", "30",
    ]  # fmt: skip
    run = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "NO_COLOR": "1"},
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
