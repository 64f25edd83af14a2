"""The browser dashboard (#5): `/` answers index.html, `/static/...` the frontend files.

No build step: the files under frontend/ are served as they are, ES modules included, so the
content type must be `text/javascript` or the browser refuses to run a module. Plotly comes
from the installed plotly package (`package_data/plotly.min.js`) at `/static/vendor/plotly.min.js`,
never from a CDN: the hosts that run splitwatch may have no internet.

Where the files are: `frontend/` at the top of the repository, reached as `app/frontend` (a
symlink in the repository, a real directory in the wheel, where setuptools copies the files as
package data of `app`: pyproject.toml). So a source checkout, an editable install and
`pip install splitwatch[server]` all serve the same dashboard (issue 14).

Serving is Starlette's StaticFiles (issue 14): ETag and Last-Modified, 304 to If-None-Match,
HEAD, and no 500 for a hostile path (a NUL byte or an over-long name is a 404; `..` and symlinks
cannot leave the directory). Our own files have no content hash in their names, so a browser
must revalidate them (`no-cache`) or it could mix an old module with a new one after an
upgrade; Plotly is 4.8 MB and changes only with the package: cached for a day. Compression
(GZipMiddleware) and the security headers (app/headers.py) are app-wide.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

router = APIRouter(tags=["dashboard"], include_in_schema=False)

FRONTEND_DIR = (Path(__file__).resolve().parents[1] / "frontend").resolve()

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
REVALIDATE = "no-cache"
VENDOR_MAX_AGE = "public, max-age=86400"


def plotly_js_path() -> Path | None:
    """The installed plotly package's own bundle, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


class DashboardFiles(StaticFiles):
    """StaticFiles with our content types, cache policy and 404 sentences."""

    def __init__(self, directory: Path, cache_control: str, what: str, remedy: str) -> None:
        super().__init__(directory=directory, check_dir=False)
        self.cache_control = cache_control
        self.what = what
        self.remedy = remedy

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        suffix = Path(full_path).suffix.lower()
        if response.status_code == 200:
            response.headers["content-type"] = CONTENT_TYPES.get(suffix, "application/octet-stream")
        response.headers["cache-control"] = self.cache_control
        return response

    async def serve(self, path: str, request: Request) -> Response:
        # StaticFiles.get_path's normalisation, for a path that came through our route.
        relative = os.path.normpath(os.path.join(*path.split("/"))) if path.strip("/") else ""
        try:
            if not relative or Path(relative).suffix.lower() not in CONTENT_TYPES:
                raise HTTPException(status_code=404)
            return await self.get_response(relative, request.scope)
        except StarletteHTTPException as exc:  # StaticFiles raises Starlette's, not FastAPI's
            if exc.status_code != 404:
                raise
            raise HTTPException(
                status_code=404, detail=f"{self.what} {path[:200]!r} not found: {self.remedy}"
            ) from None


def _frontend() -> DashboardFiles:
    return DashboardFiles(
        FRONTEND_DIR,
        REVALIDATE,
        "dashboard file",
        "check the address; the dashboard's own pages link only to existing files",
    )


@router.api_route("/", methods=["GET", "HEAD"], operation_id="dashboard_index")
async def index(request: Request) -> Response:
    if not (FRONTEND_DIR / "index.html").is_file():
        raise HTTPException(
            status_code=404,
            detail=f"dashboard page {FRONTEND_DIR / 'index.html'} not found: this installation has no "
            "dashboard files; reinstall splitwatch[server] or run from a source checkout",
        )
    return await _frontend().serve("index.html", request)


@router.api_route("/static/vendor/plotly.min.js", methods=["GET", "HEAD"], operation_id="dashboard_plotly")
async def plotly_js(request: Request) -> Response:
    path = plotly_js_path()
    if path is None:
        raise HTTPException(
            status_code=404,
            detail="plotly.min.js in the installed plotly package not found: "
            "install the server extras: pip install 'splitwatch[server]'",
        )
    files = DashboardFiles(path.parent, VENDOR_MAX_AGE, "plotly bundle", "reinstall plotly")
    return await files.serve(path.name, request)


@router.api_route("/static/{file_path:path}", methods=["GET", "HEAD"], operation_id="dashboard_static")
async def static_file(file_path: str, request: Request) -> Response:
    return await _frontend().serve(file_path, request)
