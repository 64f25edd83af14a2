"""`splitwatch simulate`: writes fake hosts an agent can watch, and keeps them changing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from app.cli.main import cli


def test_simulate_prints_the_host_roots_it_created_and_stops_after_its_duration(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["simulate", "--root", str(tmp_path), "--hosts", "3", "--duration", "0.2", "--tick", "0.05"]
    )
    assert result.exit_code == 0, result.output
    roots = [line.split()[0] for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert roots == [str(tmp_path / name) for name in ("kvm-fra-01", "kvm-fra-02", "kvm-fra-03")]
    assert "fatal" in result.stdout and "drift" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("stopped after ")


def test_an_agent_can_watch_a_simulated_host(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["simulate", "--root", str(tmp_path), "--hosts", "1", "--duration", "0"])
    result = runner.invoke(cli, ["agent", "--root", str(tmp_path / "kvm-fra-01"), "--once", "--stdout"])
    payload = json.loads(result.stdout)
    assert payload["host"]["name"] == "kvm-fra-01"
    assert payload["state"]["cpus"]


def test_root_that_is_a_file_or_a_foreign_directory_is_refused_with_a_sentence(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    result = CliRunner().invoke(cli, ["simulate", "--root", str(afile), "--duration", "0"])
    assert result.exit_code == 2
    assert "is not a directory" in result.output
    (tmp_path / "fleet" / "kvm-fra-01").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["simulate", "--root", str(tmp_path / "fleet"), "--duration", "0"])
    assert result.exit_code == 2
    assert "is not a fake host" in result.output


def test_forever_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli.main",
            "simulate",
            "--root",
            str(tmp_path),
            "--hosts",
            "2",
            "--forever",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("simulating"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped after" in out
    assert "Traceback" not in err
