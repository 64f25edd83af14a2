"""deploy/install-agent against a temporary --destdir: what lands where, with which modes, and the
token only ever in the 0600 settings file (issue 17). No systemctl, no user created: --destdir
installs files only, as packaging does."""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.fakehost import FakeHost
from tests.agent.test_service_unit import parse_unit
from tests.zipapp import build_pyz

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "deploy" / "install-agent"
TOKEN = "sw_agent_5Qm2cXv0Jd8TqzW1"


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("dist") / "splitwatch-agent.pyz")


def install(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(INSTALL), *args], capture_output=True, text=True, input=stdin, timeout=60
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "agent-token"
    path.write_text(text)
    return path


def test_installs_the_zipapp_wrapper_unit_user_rule_and_a_0600_settings_file(
    tmp_path: Path, pyz: Path
) -> None:
    root = tmp_path / "root"
    result = install(
        "--destdir", str(root), "--pyz", str(pyz), "--server", "https://splitwatch.example:8000",
        "--token-file", str(token_file(tmp_path)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    installed = root / "usr/local/lib/splitwatch/splitwatch-agent.pyz"
    assert installed.read_bytes() == pyz.read_bytes()
    wrapper = root / "usr/local/bin/splitwatch-agent"
    assert mode(wrapper) == 0o755
    exec_line = wrapper.read_text().splitlines()[-1]
    assert shlex.split(exec_line) == [
        "exec",
        "/usr/bin/python3",
        "/usr/local/lib/splitwatch/splitwatch-agent.pyz",
        "$@",
    ]

    unit = root / "etc/systemd/system/splitwatch-agent.service"
    service = parse_unit(unit.read_text())["Service"]
    assert shlex.split(service["ExecStart"][0])[0] == "/usr/local/bin/splitwatch-agent"
    assert service["EnvironmentFile"] == ["/etc/splitwatch/agent.env"]
    assert set(service["AmbientCapabilities"][0].split()) == {"CAP_SYS_RAWIO", "CAP_SYSLOG"}
    assert service["User"] == ["splitwatch"]

    sysusers = (root / "usr/lib/sysusers.d/splitwatch-agent.conf").read_text()
    assert 'u splitwatch - "splitwatch agent" /var/lib/splitwatch-agent' in sysusers
    rule = (root / "etc/udev/rules.d/60-splitwatch-msr.rules").read_text()
    assert 'GROUP="splitwatch", MODE="0640"' in rule
    assert (root / "etc/modules-load.d/splitwatch-msr.conf").read_text().splitlines()[-1] == "msr"
    assert mode(root / "var/lib/splitwatch-agent") == 0o700

    env = root / "etc/splitwatch/agent.env"
    assert mode(env) == 0o600 and mode(env.parent) == 0o700
    lines = [x for x in env.read_text().splitlines() if not x.startswith("#")]
    assert lines == ["SPLITWATCH_SERVER=https://splitwatch.example:8000", f"SPLITWATCH_AGENT_TOKEN={TOKEN}"]
    holding_token = [p for p in root.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert holding_token == [env]


def test_the_installed_zipapp_runs(tmp_path: Path, pyz: Path) -> None:
    root = tmp_path / "root"
    args = ["--destdir", str(root), "--pyz", str(pyz), "--server", "http://127.0.0.1:8000"]
    assert install(*args, "--token-file", str(token_file(tmp_path))).returncode == 0
    host = FakeHost(tmp_path / "host").cpus(2).boot_messages()
    host.split_lock("java", 100)
    installed = root / "usr/local/lib/splitwatch/splitwatch-agent.pyz"
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(installed), "--root", str(host.root), "--once", "--stdout"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"comm":"java"' in result.stdout


def test_an_enrollment_token_a_private_ca_and_a_prefix(tmp_path: Path, pyz: Path) -> None:
    root = tmp_path / "root"
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    result = install(
        "--destdir", str(root), "--pyz", str(pyz),
        "--prefix", "/opt/splitwatch", "--python", "/usr/bin/python3.9",
        "--server", "https://splitwatch.example:8000", "--enroll-token-file", "-", "--ca-file", str(ca),
        stdin="sw_enroll_abc123\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    env = (root / "etc/splitwatch/agent.env").read_text().splitlines()
    assert "SPLITWATCH_ENROLL_TOKEN=sw_enroll_abc123" in env
    assert "SPLITWATCH_CA_FILE=/etc/splitwatch/ca.pem" in env
    assert (root / "etc/splitwatch/ca.pem").read_text() == ca.read_text()
    wrapper = (root / "opt/splitwatch/bin/splitwatch-agent").read_text()
    assert "exec /usr/bin/python3.9 /opt/splitwatch/lib/splitwatch/splitwatch-agent.pyz" in wrapper
    unit = parse_unit((root / "etc/systemd/system/splitwatch-agent.service").read_text())["Service"]
    assert shlex.split(unit["ExecStart"][0])[0] == "/opt/splitwatch/bin/splitwatch-agent"


def test_a_prepared_environment_file_is_installed_as_is_0600(tmp_path: Path, pyz: Path) -> None:
    prepared = tmp_path / "agent.env"
    prepared.write_text(f"SPLITWATCH_SERVER=https://sw.example\nSPLITWATCH_AGENT_TOKEN={TOKEN}\n")
    root = tmp_path / "root"
    result = install("--destdir", str(root), "--pyz", str(pyz), "--env-file", str(prepared))
    assert result.returncode == 0, result.stderr
    env = root / "etc/splitwatch/agent.env"
    assert env.read_text() == prepared.read_text() and mode(env) == 0o600


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--server", "https://x", "--token", TOKEN], "visible to every user in ps"),
        (["--server", "https://x", f"--token={TOKEN}"], "visible to every user in ps"),
        (["--server", "https://x"], "no token: pass --token-file FILE"),
        (["--token-file", "TOKENFILE"], "no backend: pass --server URL"),
        (["--server", "splitwatch:8000", "--token-file", "TOKENFILE"], "is not an http(s) URL"),
        (["--server", "https://x", "--token-file", "/nonexistent"], "cannot read /nonexistent"),
        (["--env-file", "TOKENFILE"], "has no SPLITWATCH_SERVER=URL line"),
    ],
)
def test_refusals_say_what_to_do_and_install_nothing(
    tmp_path: Path, pyz: Path, args: list[str], says: str
) -> None:
    root = tmp_path / "root"
    args = [str(token_file(tmp_path)) if a == "TOKENFILE" else a for a in args]
    result = install("--destdir", str(root), "--pyz", str(pyz), *args)
    assert result.returncode == 2
    assert says in result.stderr
    assert not root.exists()


def test_a_token_file_with_more_than_the_token_is_refused(tmp_path: Path, pyz: Path) -> None:
    bad = token_file(tmp_path, f"token: {TOKEN}\n")
    result = install(
        "--destdir",
        str(tmp_path / "root"),
        "--pyz",
        str(pyz),
        "--server",
        "https://x",
        "--token-file",
        str(bad),
    )
    assert result.returncode == 2 and "must be the token alone" in result.stderr
    assert not (tmp_path / "root/etc/splitwatch/agent.env").exists()
