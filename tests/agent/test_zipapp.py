"""dist/splitwatch-agent.pyz (scripts/build-agent): the agent as one file for the distribution
`python3` of every hypervisor (issue 17). Debian 11 / Proxmox VE 7 and RHEL 9 ship 3.9, Ubuntu
22.04 ships 3.10: under each, the zipapp's `--once --stdout` must print what the source tree
prints under 3.11 (the golden files, held by tests/agent/test_golden.py). The only field that
may differ is `observed_at`, the wall-clock time of the pass; everything else comes from the
host's files, so a difference is a Python-version bug in the agent.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.fakehost import FakeHost
from tests.agent.test_golden import GOLDEN, SCENARIOS, normalise
from tests.conftest import require
from tests.zipapp import REPO, build_pyz, interpreter


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("dist") / "splitwatch-agent.pyz")


def test_the_zipapp_holds_the_agent_package_and_a_main_and_nothing_else(pyz: Path) -> None:
    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "agent").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == shipped | {"__main__.py"}
    assert not [n for n in names if n.startswith("app/") or "__pycache__" in n]
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_the_zipapp_says_its_own_name_in_help(pyz: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(pyz), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: splitwatch-agent ")
    assert "--ca-file" in result.stdout


@pytest.mark.parametrize("version", ["3.9", "3.10", "3.11"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_zipapp_once_stdout_under_each_python_equals_the_golden_output(
    pyz: Path, tmp_path: Path, name: str, version: str
) -> None:
    python = sys.executable if version == "3.11" else interpreter(version)
    require(
        python is not None,
        f"no Python {version}: install it (pyenv install {version}, or the distribution's python{version})",
    )
    assert python is not None
    if version == "3.11":
        assert sys.version_info[:2] == (3, 11), "the reference run is the suite's own Python 3.11"

    host = FakeHost(tmp_path / "host", hostname=name.replace("_", "-")[:40], seed=1)
    state_dir = tmp_path / "state"

    def once() -> str:
        # -I -S: no site-packages, no environment: the zipapp and the standard library alone.
        argv = ["--root", str(host.root), "--once", "--stdout", "--state-dir", str(state_dir)]
        result = subprocess.run(
            [python, "-I", "-S", str(pyz), *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    SCENARIOS[name](host, once)
    assert normalise(once()) == (GOLDEN / f"{name}.jsonl").read_text()
