"""The one-file agent for tests: built by the repository's own scripts/build-agent, and the older
Pythons it must run on (issue 17)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv"))


def build_pyz(out: Path) -> Path:
    build = [str(REPO / "scripts" / "build-agent"), str(out)]
    subprocess.run(build, check=True, capture_output=True, timeout=120)
    return out


def interpreter(version: str) -> str | None:
    """A Python `version` (e.g. "3.9"): this machine image's pyenv build, else python3.9 on PATH."""
    found = sorted(glob.glob(str(PYENV_ROOT / "versions" / f"{version}.*" / "bin" / "python")))
    return found[-1] if found else shutil.which(f"python{version}")
