"""The agent ships to every host: the standard library alone, never the backend's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.fakehost import FakeHost

HEAVY = ("fastapi", "sqlalchemy", "plotly", "pydantic", "starlette")

# Runs the CLI in-process, then reports which heavy modules it loaded (sys.modules at exit).
SCRIPT = """
import sys
heavy = {heavy!r}
entry = {entry!r}

def report():
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    sys.stderr.write("LOADED:" + ",".join(loaded) + "\\n")

import atexit
atexit.register(report)
sys.argv = ["splitwatch", *{argv!r}]
if entry == "splitwatch":
    from app.cli.main import main
    main()
else:
    from app.cli.agent import main as agent_main
    sys.exit(agent_main(sys.argv[2:]))
"""


def loaded_heavy_modules(
    argv: list[str], entry: str = "splitwatch"
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(heavy=HEAVY, argv=argv, entry=entry)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("LOADED:"))
    return [m for m in line.removeprefix("LOADED:").split(",") if m], result


def fake_host(tmp_path: Path) -> Path:
    host = FakeHost(tmp_path / "host").cpus(2)
    host.boot_messages()
    host.split_lock("java", 100)
    return host.root


def test_agent_entry_once_stdout_loads_no_backend_module(tmp_path: Path) -> None:
    argv = ["agent", "--root", str(fake_host(tmp_path)), "--once", "--stdout"]
    loaded, result = loaded_heavy_modules(argv, entry="app.cli.agent")
    assert result.returncode == 0, result.stderr
    assert '"schema":1' in result.stdout  # it really ran
    assert loaded == []


def test_splitwatch_agent_once_stdout_loads_no_backend_module(tmp_path: Path) -> None:
    argv = ["agent", "--root", str(fake_host(tmp_path)), "--once", "--stdout"]
    loaded, result = loaded_heavy_modules(argv)
    assert result.returncode == 0, result.stderr
    assert '"schema":1' in result.stdout  # it really ran
    assert loaded == [], (
        "typer coerces every parameter through pydantic: app/cli/main.py main() must hand "
        "`agent` to app.cli.agent.main(sys.argv[2:]) before typer parses anything"
    )


def test_importing_every_agent_module_and_the_cli_loads_no_backend_module() -> None:
    agent_dir = Path(__file__).resolve().parents[2] / "agent"
    modules = sorted(
        "agent." + ".".join(p.relative_to(agent_dir).with_suffix("").parts)
        for p in agent_dir.rglob("*.py")
        if p.name != "__init__.py"
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r} + ['app.cli.main']:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


REPO = Path(__file__).resolve().parents[2]
# `python -S`: no site-packages at all, only the standard library and the source tree: what a
# host with the agent and nothing else has (issue 17).
BARE = [sys.executable, "-S", "-c"]
ENTRY = "import sys; sys.path.insert(0, {repo!r}); sys.argv = ['splitwatch', *{argv!r}]\n"


def run_bare(argv: list[str]) -> subprocess.CompletedProcess[str]:
    script = ENTRY.format(repo=str(REPO), argv=argv) + "from app.cli.main import main; main()"
    return subprocess.run([*BARE, script], capture_output=True, text=True, timeout=60)


def test_the_agent_runs_with_the_standard_library_alone(tmp_path: Path) -> None:
    result = run_bare(["agent", "--root", str(fake_host(tmp_path)), "--once", "--stdout"])
    assert result.returncode == 0, result.stderr
    assert '"schema":1' in result.stdout


def test_every_agent_module_loads_only_the_standard_library() -> None:
    agent_dir = REPO / "agent"
    modules = sorted(
        "agent." + ".".join(p.relative_to(agent_dir).with_suffix("").parts)
        for p in agent_dir.rglob("*.py")
        if p.name != "__init__.py"
    )
    script = (
        "import importlib, sys\n"
        "before = set(sys.modules)\n"
        f"for name in {modules!r} + ['app.cli.main']:\n"
        "    importlib.import_module(name)\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'agent', 'app'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["serve", "db", "token"])
def test_a_server_command_on_an_agent_only_install_says_to_install_the_server_extra(command: str) -> None:
    result = run_bare([command, "--help"] if command != "serve" else [command])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"`splitwatch {command}` needs the server extra" in result.stderr
    assert "pip install 'splitwatch[server]'" in result.stderr


def test_agent_help_on_an_agent_only_install_is_the_agents_own() -> None:
    result = run_bare(["agent", "--help"])
    assert result.returncode == 0, result.stderr
    assert "--ca-file" in result.stdout and "--once" in result.stdout
