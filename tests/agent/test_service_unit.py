"""deploy/splitwatch-agent.service grants the agent what it needs to read a host, and nothing more."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from agent.config import AgentConfig

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "splitwatch-agent.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's syntax: sections, repeated keys accumulate, `\\` continues a line, # and ; comment."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = (pending + " " + raw.strip()) if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].strip()
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def words(service: dict[str, list[str]], key: str) -> set[str]:
    return {w for v in service.get(key, []) for w in v.split()}


def argv(service: dict[str, list[str]]) -> list[str]:
    return shlex.split(one(service, "ExecStart"))


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_agent_runs_as_its_own_unprivileged_user_not_root(service: dict[str, list[str]]) -> None:
    if service.get("DynamicUser") == ["yes"]:
        return
    assert one(service, "User") not in ("root", "0", "")
    assert one(service, "Group") not in ("root", "0", "")


def test_capabilities_are_exactly_sys_rawio_and_syslog(service: dict[str, list[str]]) -> None:
    assert words(service, "AmbientCapabilities") == {"CAP_SYS_RAWIO", "CAP_SYSLOG"}
    assert words(service, "CapabilityBoundingSet") == {"CAP_SYS_RAWIO", "CAP_SYSLOG"}
    assert one(service, "NoNewPrivileges") == "yes"


def test_filesystem_is_read_only_except_the_spool_and_state_directories(
    service: dict[str, list[str]],
) -> None:
    assert one(service, "ProtectSystem") == "strict"
    writable = [Path(p) for p in words(service, "ReadWritePaths")]
    args = argv(service)
    for option in ("--spool", "--state-dir"):
        target = Path(flag(args, option))
        assert any(target.is_relative_to(w) for w in writable), f"{option} {target} is not writable"
    state = words(service, "StateDirectory")
    assert any(Path("/var/lib", s) in writable for s in state)
    assert one(service, "ProtectHome") == "yes" and one(service, "PrivateTmp") == "yes"


def test_devices_are_only_the_msr_nodes_and_kmsg_read_only(service: dict[str, list[str]]) -> None:
    assert one(service, "DevicePolicy") == "closed"
    allowed = dict(v.split() for v in service["DeviceAllow"])
    # The msr nodes are /dev/cpu/*/msr, device group cpu/msr (major 202) in /proc/devices.
    assert allowed == {"char-cpu/msr": "r", "/dev/kmsg": "r"}


def test_nothing_hides_what_the_agent_must_read(service: dict[str, list[str]]) -> None:
    assert service.get("ProtectKernelLogs", ["no"]) == ["no"]  # would hide /dev/kmsg
    assert service.get("PrivateDevices", ["no"]) == ["no"]  # would hide /dev/cpu
    assert service.get("ProtectProc", ["default"]) == ["default"]  # VMM processes of other users


def test_the_token_never_appears_on_the_command_line(service: dict[str, list[str]]) -> None:
    args = argv(service)
    assert "--token" not in args
    assert one(service, "EnvironmentFile").startswith("/etc/")
    assert args[0] == "/usr/local/bin/splitwatch-agent"  # the zipapp's wrapper (deploy/install-agent)


def test_stop_is_sigterm_with_time_for_the_last_flush(service: dict[str, list[str]]) -> None:
    assert one(service, "KillSignal") == "SIGTERM"
    defaults = AgentConfig(server="http://x", token="t")
    timeout = int(re.sub(r"s$", "", one(service, "TimeoutStopSec")))
    # The pass in progress may be mid-POST (timeout_s), then the bounded last flush.
    assert timeout > defaults.timeout_s + defaults.shutdown_flush_s
    assert one(service, "Restart") in ("always", "on-failure")


def test_network_is_limited_to_ip_and_unix_sockets(service: dict[str, list[str]]) -> None:
    assert words(service, "RestrictAddressFamilies") == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_every_option_on_the_command_line_is_one_the_agent_accepts() -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli

    result = CliRunner().invoke(cli, ["agent", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    service = parse_unit(UNIT.read_text())["Service"]
    for option in (a for a in argv(service) if a.startswith("--")):
        assert option in result.output, f"{option} is not an option of `splitwatch agent`"


def test_enrollment_comes_from_the_environment_file_or_a_file_path_never_the_command_line(
    service: dict[str, list[str]],
) -> None:
    args = argv(service)
    assert not any(a.startswith("sw_") for a in args)
    if "--enroll-token" in args:
        assert flag(args, "--enroll-token").startswith("/etc/")
    # The unit's header tells the admin which variable carries it (#15).
    assert "SPLITWATCH_ENROLL_TOKEN=" in UNIT.read_text()
