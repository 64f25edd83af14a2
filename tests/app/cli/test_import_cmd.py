"""`splitwatch import`: kernel log text to stdout or to a real backend, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from app.cli.main import cli
from app.store.tables import event
from tests.app.conftest import Server, Tokens

SAMPLES = Path(__file__).parents[2] / "samples"
JOURNAL = str(SAMPLES / "5.13-journalctl-short.txt")
DMESG = str(SAMPLES / "6.x-dmesg.txt")
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str) -> Ran:
    """The command in-process, as a user runs it: exit code, stdout and stderr apart."""
    result = CliRunner().invoke(cli, ["import", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_the_installed_command_runs_as_a_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "import", JOURNAL, "--year", "2021", "--stdout"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["events"]) == 4 and "events: 4" in done.stderr


def test_stdout_prints_schema_1_payloads_and_a_summary_on_stderr() -> None:
    result = run(
        JOURNAL, "--year", "2021", "--mode", "warn", "--mitigate", "0", "--kernel", "5.13", "--stdout"
    )

    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    body = json.loads(line)
    assert body["schema"] == 1 and body["state"] is None and body["host"]["name"] == "___"
    assert [e["tid"] for e in body["events"]] == [32423, 32402, 32423, 32423]
    assert {e["source"] for e in body["events"]} == {"import"}
    assert {e["action"] for e in body["events"]} == {"warn"}
    assert body["events"][0]["time"] == "2021-11-11T03:49:25.000000Z"
    assert "lines read: 4" in result.stderr and "events: 4" in result.stderr
    assert "undated lines: 0" in result.stderr and "unparsable split-lock lines: 0" in result.stderr


def test_dmesg_lines_without_btime_are_reported_as_undated() -> None:
    result = run(DMESG, "--host", "gamer", "--stdout")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "undated lines: 11" in result.stderr and "--btime" in result.stderr


def test_every_sample_imports_without_error() -> None:
    samples = sorted(str(p) for p in SAMPLES.glob("*.txt"))
    result = run(*samples, "--host", "h", "--btime", "1700000000", "--year", "2025", "--stdout")
    assert result.returncode == 0, result.stderr
    events = [e for line in result.stdout.splitlines() for e in json.loads(line)["events"]]
    assert len(events) > 30
    assert "unparsable split-lock lines: 0" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([JOURNAL], "--stdout, or --server", id="no-destination"),
        pytest.param([JOURNAL, "--stdout", "--server", "http://x"], "--stdout, or --server", id="both"),
        pytest.param([JOURNAL, "--server", "http://127.0.0.1:9"], "--server needs --token", id="no-token"),
        pytest.param([JOURNAL, "--stdout", "--mode", "loud"], "--mode 'loud'", id="bad-mode"),
        pytest.param([JOURNAL, "--stdout", "--mitigate", "2"], "--mitigate 2", id="bad-mitigate"),
        pytest.param([JOURNAL, "--stdout", "--tz", "Mars/Olympus"], "--tz 'Mars/Olympus'", id="bad-tz"),
    ],
)
def test_bad_command_lines_end_with_a_sentence_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["import", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["/nonexistent/kern.log", "--stdout"], "cannot read /nonexistent/kern.log", id="missing-file"
        ),
        pytest.param([DMESG, "--btime", "0", "--stdout"], "pass --host NAME", id="dmesg-without-host"),
        pytest.param([JOURNAL, "--stdout", "--kernel", "linux"], "--kernel 'linux'", id="bad-kernel"),
    ],
)
def test_failures_end_with_a_sentence_and_exit_1(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_dash_reads_standard_input() -> None:
    result = CliRunner().invoke(
        cli, ["import", "-", "--year", "2021", "--stdout"], input=Path(JOURNAL).read_bytes()
    )
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["events"]) == 4


def test_big_files_report_progress_in_lines_per_second(tmp_path: Path) -> None:
    big = tmp_path / "kern.log"
    big.write_text("[    1.000000] usb 1-1: new high-speed USB device\n" * 100_001)
    result = run(str(big), "--host", "h", "--stdout")
    assert result.returncode == 0, result.stderr
    assert "100000 lines read (" in result.stderr and "lines/s)" in result.stderr
    assert "lines read: 100001" in result.stderr


def test_help_lists_the_import_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "import" in result.output


@sqlite_only
def test_server_import_stores_events_once_even_when_run_twice(
    server: Server, tokens: Tokens, engine: Engine
) -> None:
    token = tokens.agent("___")
    args = (JOURNAL, "--year", "2021", "--server", server.url, "--token", token)

    first = run(*args)
    second = run(*args)

    assert first.returncode == 0, first.stderr
    assert "4 events accepted, 0 already there" in first.stderr
    assert second.returncode == 0, second.stderr
    assert "0 events accepted, 4 already there" in second.stderr
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(event).where(event.c.source == "import"))
        assert stored.scalar() == 4


@sqlite_only
def test_server_refusing_the_token_says_how_to_get_one(server: Server) -> None:
    result = run(JOURNAL, "--year", "2021", "--server", server.url, "--token", "not-a-token")
    assert result.returncode == 1
    assert "refused the token" in result.stderr and "splitwatch token create" in result.stderr


@sqlite_only
def test_token_of_another_host_is_named_in_the_error(server: Server, tokens: Tokens) -> None:
    result = run(JOURNAL, "--year", "2021", "--server", server.url, "--token", tokens.agent("other"))
    assert result.returncode == 1
    assert "may not write host ___" in result.stderr


def test_unreachable_server_fails_after_retries_and_says_nothing_is_stored_twice() -> None:
    result = run(JOURNAL, "--year", "2021", "--server", "http://127.0.0.1:9", "--token", "t")
    assert result.returncode == 1
    assert "not sent after" in result.stderr and "run the same import again" in result.stderr.lower()


@sqlite_only
def test_batch_the_server_cannot_read_is_reported_with_its_reason(server: Server, tokens: Tokens) -> None:
    kernel = "6.8." + "x" * 200  # longer than the ingest contract's 128 characters
    result = run(
        JOURNAL, "--year", "2021", "--kernel", kernel, "--server", server.url, "--token", tokens.agent("___")
    )
    assert result.returncode == 1
    assert "the server cannot read batch 1/1 (host ___, 4 events)" in result.stderr
    assert "422" in result.stderr and "--kernel" in result.stderr
