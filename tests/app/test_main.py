"""create_app: every resource router and /metrics are served; restarts are clean."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.main import ROUTER_MODULES, create_app
from app.settings import Settings
from tests.app.conftest import Server


def test_app_serves_every_resource_router_and_metrics(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    paths = set(app.openapi()["paths"])
    assert {"/api/v1/ingest", "/healthz", "/readyz", "/metrics"} <= paths
    # A resource is served at /api/v1/<name> or, for a group of routes, below it (/api/v1/insights/...).
    # A module name is its route with "-" spelled "_" (alert_rules serves /api/v1/alert-rules).
    for name in ROUTER_MODULES:
        route = f"/api/v1/{name.replace('_', '-')}"
        if name not in ("health", "ingest", "docs", "frontend"):
            assert any(p == route or p.startswith(f"{route}/") for p in paths), name
    app.state.engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_server_restarted_on_the_same_database_serves_again(server: Server) -> None:
    server.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz")
    server.start()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
