"""The agent runs on the distribution `python3` of every hypervisor: Debian 11 / Proxmox VE 7 and
RHEL 9 ship 3.9, Ubuntu 22.04 ships 3.10 (issue 17). Nothing newer may creep into agent/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The agent, and the entry point that hands `splitwatch agent` to it on a pip-installed host.
AGENT_PATHS = [REPO / "agent", REPO / "app" / "__init__.py", REPO / "app" / "cli" / "__init__.py"]
AGENT_PATHS.append(REPO / "app" / "cli" / "main.py")


def test_vermin_finds_nothing_in_the_agent_that_python_3_9_lacks() -> None:
    vermin = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    result = subprocess.run(
        [*vermin, "--target=3.9-", "--no-tips", "--violations", *map(str, AGENT_PATHS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
