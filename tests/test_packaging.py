"""The wheel holds the whole server: an installed splitwatch serves the dashboard (issue 14).

Before issue 14 the dashboard was found next to app/ in a source checkout only: `pip install
splitwatch[server]` gave a backend whose `/` answered 404. Here a real wheel is built with pip,
installed (without its dependencies, which this environment already has) into a directory of
its own, and `splitwatch serve` from that directory serves the dashboard's files, byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import free_port, upgrade

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_installed_wheel_serves_the_dashboard_and_the_docs_page(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("splitwatch-*.whl")
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    installed = target / "app" / "frontend"
    assert (installed / "index.html").is_file() and not installed.is_symlink()

    db = f"sqlite:///{tmp_path / 'splitwatch.db'}"
    upgrade(db)
    port = free_port()
    # The installed package first on the path, ahead of this checkout's editable install.
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "SPLITWATCH_DATABASE_URL": db,
        "SPLITWATCH_PORT": str(port),
    }
    code = (
        "import app, sys; from app.cli.main import main; sys.argv[0] = 'splitwatch'; "
        "print(app.__file__, flush=True); main()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the installed server did not start"
            time.sleep(0.1)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(target / "app" / "__init__.py")
        index = httpx.get(f"{url}/")
        assert index.status_code == 200
        assert index.content == (ROOT / "frontend" / "index.html").read_bytes()
        for module in sorted((ROOT / "frontend" / "js").rglob("*.js")):
            r = httpx.get(f"{url}/static/{module.relative_to(ROOT / 'frontend').as_posix()}")
            assert r.status_code == 200 and r.content == module.read_bytes(), module
        assert httpx.get(f"{url}/docs").status_code == 200
        assert httpx.get(f"{url}/docs/static/swagger-ui-bundle.js").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
