"""create_app: routers of the modules that exist, a broken one is an error, restarts are clean."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from app.main import ROUTER_MODULES, _optional_module, create_app
from app.settings import Settings
from tests.app.conftest import Server


def test_a_router_module_not_written_yet_is_skipped() -> None:
    assert _optional_module("app.api.not_written_yet") is None


def test_a_router_module_whose_own_import_fails_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sw_broken_router.py").write_text("import sw_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="sw_dependency_that_is_missing"):
        _optional_module("sw_broken_router")
    sys.modules.pop("sw_broken_router", None)


def test_app_routes_include_ingest_and_health(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    paths = set(app.openapi()["paths"])
    assert {"/api/v1/ingest", "/healthz", "/readyz"} <= paths
    assert "health" in ROUTER_MODULES and "ingest" in ROUTER_MODULES
    app.state.engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_server_restarted_on_the_same_database_serves_again(server: Server) -> None:
    server.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz")
    server.start()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
