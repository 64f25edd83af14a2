"""`splitwatch doctor`: a report a person reads, and an exit code a script checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.fakehost import FakeHost
from app.cli.main import cli


def doctor(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "app.cli.main", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )


def test_healthy_host_exits_0_with_a_plain_text_report(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host", hostname="kvm-ok").cpus(4)
    host.boot_messages()
    result = CliRunner().invoke(cli, ["doctor", "--root", str(host.root)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("splitwatch doctor: kvm-ok\n")
    assert "\x1b[" not in result.stdout  # not a TTY: no colour codes
    assert "No problems found." in result.stdout


def test_host_with_problems_exits_1_and_lists_each_with_its_remedy(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").mode("ratelimit:5").cpus(4).no_msr_device()
    result = CliRunner().invoke(cli, ["doctor", "--root", str(host.root)])
    assert result.exit_code == 1
    assert "Problems (2)" in result.stdout
    assert "modprobe msr" in result.stdout
    assert "split-lock #AC detection is OFF" in result.stdout


def test_nonexistent_root_ends_with_a_sentence_and_no_traceback(tmp_path: Path) -> None:
    result = doctor("--root", str(tmp_path / "nonexistent"))
    assert result.returncode == 2
    assert "is not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_real_root_gives_a_report_without_traceback() -> None:
    result = doctor()
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout.startswith("splitwatch doctor: ")
    assert "Traceback" not in result.stderr


@pytest.fixture
def world_readable_host() -> Iterator[FakeHost]:
    # pytest's tmp_path is private to root; nobody must be able to reach the fake host.
    base = Path(tempfile.mkdtemp(prefix="splitwatch-doctor-"))
    try:
        base.chmod(0o755)
        yield FakeHost(base / "host").cpus(2)
    finally:
        shutil.rmtree(base)


def test_not_root_with_msrs_and_kernel_log_closed_says_run_as_root(world_readable_host: FakeHost) -> None:
    host = world_readable_host
    host.boot_messages()
    as_root = os.geteuid() == 0
    for path in [host.root / "dev/kmsg", *host.root.glob("dev/cpu/*/msr")]:
        # As /dev/kmsg and /dev/cpu/N/msr are: root only. Run by root, the test drops to nobody;
        # run by anyone else, it closes the files to its own user.
        path.chmod(0o600 if as_root else 0o000)
    for path in host.root.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    result = doctor("--root", str(host.root), user=65534 if as_root else None)
    assert result.returncode == 1, result.stderr
    assert "not running as root (uid " in result.stdout
    assert "CAP_SYSLOG" in result.stdout and "CAP_SYS_RAWIO" in result.stdout
    assert "Traceback" not in result.stderr
