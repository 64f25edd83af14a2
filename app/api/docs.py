"""GET /docs: the interactive API reference (Swagger UI), served by the backend itself.

FastAPI's own /docs page loads Swagger UI from a CDN: blank on a host without internet, and a
third-party script on the origin that holds a remembered viewer token (issue 14). Here the
files come from the installed `fastapi-offline` package (its `static/` holds Swagger UI's
dist bundle), and the page has no inline script, so it runs under the same
Content-Security-Policy as the dashboard (app/headers.py): the start-up code is /docs/init.js.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from app.api.frontend import VENDOR_MAX_AGE, DashboardFiles

router = APIRouter(tags=["docs"], include_in_schema=False)

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>splitwatch API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

INIT_JS = """// Swagger UI for /openapi.json (app/api/docs.py); a file, not an inline script, for the CSP.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def swagger_dir() -> Path | None:
    """fastapi-offline's static/ (swagger-ui-bundle.js, swagger-ui.css), found without importing it."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


@router.get("/docs", operation_id="docs_page")
async def docs_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-cache"})


@router.get("/docs/init.js", operation_id="docs_init")
async def docs_init() -> Response:
    return Response(INIT_JS, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.api_route("/docs/static/{file_path:path}", methods=["GET", "HEAD"], operation_id="docs_static")
async def docs_static(file_path: str, request: Request) -> Response:
    root = swagger_dir()
    if root is None:
        raise HTTPException(
            status_code=404,
            detail="Swagger UI files not found in the fastapi-offline package: "
            "install the server extras: pip install 'splitwatch[server]'",
        )
    files = DashboardFiles(root, VENDOR_MAX_AGE, "Swagger UI file", "the /docs page names the files it needs")
    return await files.serve(file_path, request)
