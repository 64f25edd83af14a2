"""The agent ships to every host: it never loads the backend's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
