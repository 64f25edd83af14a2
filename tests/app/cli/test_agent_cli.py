"""`splitwatch agent`: the one-shot `--once --stdout` mode and the command line's errors."""

from __future__ import annotations

import gzip
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

from typer.testing import CliRunner

from agent.fakehost import FakeHost
from app.cli.main import cli


def warn_host(root: Path) -> FakeHost:
    host = FakeHost(root, hostname="kvm-1").kernel("6.8.0").mitigate(1).cpus(2)
    host.boot_messages()
    vm = host.qemu("web-1", pid=4242, vcpus=2)
    host.split_lock(vm.vcpu_comm(0), vm.vcpu_tids[0])
    return host


def agent(*args: str, entry: str = "splitwatch") -> subprocess.CompletedProcess[str]:
    # `splitwatch agent ...` as the console script runs it, or the typer-free `python -m app.cli.agent`.
    command = ["-m", "app.cli.main", "agent"] if entry == "splitwatch" else ["-m", "app.cli.agent"]
    return subprocess.run(
        [sys.executable, *command, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_once_stdout_prints_one_json_payload_per_line_for_the_host(tmp_path: Path) -> None:
    warn_host(tmp_path / "host")
    result = agent("--root", str(tmp_path / "host"), "--once", "--stdout")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["host"]["name"] == "kvm-1"
    assert payload["state"]["mode"] == "warn"
    [event] = payload["events"]
    assert (event["comm"], event["guest"]["name"], event["action"]) == ("CPU 0/KVM", "web-1", "throttle")
    assert "Traceback" not in result.stderr


def test_once_with_a_state_dir_resumes_where_the_last_run_stopped(tmp_path: Path) -> None:
    host = warn_host(tmp_path / "host")
    runner = CliRunner()
    args = ["agent", "--root", str(host.root), "--once", "--stdout", "--state-dir", str(tmp_path / "state")]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0
    assert len(json.loads(first.stdout)["events"]) == 1
    second = runner.invoke(cli, args)
    assert json.loads(second.stdout)["events"] == []  # the cursor was committed
    vm_tid = 4244
    host.split_lock("CPU 1/KVM", vm_tid)
    third = runner.invoke(cli, args)
    assert [e["tid"] for e in json.loads(third.stdout)["events"]] == [vm_tid]


def test_once_without_a_state_dir_reads_everything_again_and_writes_nothing(tmp_path: Path) -> None:
    host = warn_host(tmp_path / "host")
    before = sorted(p for p in tmp_path.rglob("*"))
    runner = CliRunner()
    outputs = [
        runner.invoke(cli, ["agent", "--root", str(host.root), "--once", "--stdout"]) for _ in range(2)
    ]
    assert [len(json.loads(o.stdout)["events"]) for o in outputs] == [1, 1]
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_more_than_a_thousand_events_print_as_several_payloads_state_on_the_first(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host").cpus(2)
    host.process("hammer", 7000)
    for _ in range(2345):
        host.split_lock("hammer", 7000)
    result = CliRunner().invoke(cli, ["agent", "--root", str(host.root), "--once", "--stdout"])
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(p["events"]) for p in payloads] == [1000, 1000, 345]
    assert payloads[0]["state"] is not None
    assert [p["state"] for p in payloads[1:]] == [None, None]
    seqs = [e["seq"] for p in payloads for e in p["events"]]
    assert seqs == sorted(set(seqs))


def test_nonexistent_root_ends_with_a_sentence_and_no_traceback(tmp_path: Path) -> None:
    for entry in ("splitwatch", "app.cli.agent"):
        result = agent("--root", str(tmp_path / "nonexistent"), "--once", "--stdout", entry=entry)
        assert result.returncode == 2
        assert "is not a directory" in result.stderr and "--root" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_typer_free_entry_takes_the_same_options_and_prints_the_same_payload(tmp_path: Path) -> None:
    warn_host(tmp_path / "host")
    args = ("--root", str(tmp_path / "host"), "--once", "--stdout")
    outputs = [agent(*args, entry=entry).stdout for entry in ("splitwatch", "app.cli.agent")]
    payloads = [json.loads(o) for o in outputs]
    for p in payloads:
        p["state"]["observed_at"] = "normalised"
    assert payloads[0] == payloads[1]
    help_text = agent("--help", entry="app.cli.agent").stdout
    for option in ("--server", "--token", "--root", "--interval", "--spool", "--state-dir", "--no-tracefs"):
        assert option in help_text


def test_stdout_without_once_is_refused_with_the_fix(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["agent", "--root", str(tmp_path), "--stdout"])
    assert result.exit_code == 2
    assert "add --once" in result.output


def test_streaming_without_server_or_token_names_what_is_missing(tmp_path: Path) -> None:
    no_server = CliRunner().invoke(cli, ["agent", "--root", str(tmp_path)], env={"SPLITWATCH_SERVER": ""})
    assert no_server.exit_code == 2
    assert "--server" in no_server.output
    no_token = CliRunner().invoke(
        cli,
        ["agent", "--root", str(tmp_path), "--server", "http://127.0.0.1:9"],
        env={"SPLITWATCH_AGENT_TOKEN": ""},
    )
    assert no_token.exit_code == 2
    assert "splitwatch token create --role agent" in no_token.output


def test_unreadable_state_dir_is_reported_after_printing(tmp_path: Path) -> None:
    host = warn_host(tmp_path / "host")
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    result = CliRunner().invoke(
        cli, ["agent", "--root", str(host.root), "--once", "--stdout", "--state-dir", str(blocker)]
    )
    assert result.exit_code == 1
    assert "cannot save the cursor" in result.output


class _Ingest(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    auth: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        body = json.loads(raw)
        type(self).bodies.append(body)
        type(self).auth.append(self.headers.get("Authorization"))
        answer = json.dumps({"accepted": len(body["events"]), "duplicates": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_once_with_a_server_sends_the_pass_through_the_agent_loop(tmp_path: Path) -> None:
    warn_host(tmp_path / "host")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ingest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = agent(
            "--server", url, "--token", "agent-token", "--root", str(tmp_path / "host"),
            "--state-dir", str(tmp_path / "state"), "--once", "--no-tracefs",
        )  # fmt: skip
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    [body] = _Ingest.bodies
    assert body["host"]["name"] == "kvm-1"
    assert [e["comm"] for e in body["events"]] == ["CPU 0/KVM"]
    assert _Ingest.auth == ["Bearer agent-token"]
    assert (tmp_path / "state" / "state.json").exists()  # committed after spooling
    assert (tmp_path / "state" / "spool").is_dir()  # the spool defaults to STATE_DIR/spool
