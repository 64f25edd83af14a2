"""The browser dashboard (#5): `/` answers frontend/index.html, `/static/...` the frontend files.

No build step: the files under frontend/ are served as they are, ES modules included, so the
content type must be `text/javascript` or the browser refuses to run a module. Plotly comes
from the installed plotly package (`package_data/plotly.min.js`) at `/static/vendor/plotly.min.js`,
never from a CDN: the hosts that run splitwatch may have no internet.

Caching: our own files have no content hash in their names, so a browser must revalidate them
(`no-cache` + ETag, answered 304 when unchanged) or it could mix an old module with a new one
after an upgrade. Plotly is 4.8 MB and changes only with the package: cached for a day.

Nothing is read at import: paths are resolved per request (cheap) so tests and `serve` agree.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response

router = APIRouter(tags=["dashboard"], include_in_schema=False)

# frontend/ sits next to app/ in the repository (and in an editable install).
FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontend"

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


def _file(request: Request, path: Path, cache_control: str) -> Response:
    stat = path.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {"Cache-Control": cache_control, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    media_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=headers)


def _not_found(what: str, remedy: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} not found: {remedy}")


@router.api_route("/", methods=["GET", "HEAD"], operation_id="dashboard_index")
def index(request: Request) -> Response:
    page = FRONTEND_DIR / "index.html"
    if not page.is_file():
        raise _not_found(
            f"dashboard page {page}",
            "this installation has no frontend/ directory; run the server from a source checkout",
        )
    return _file(request, page, REVALIDATE)


@router.api_route("/static/vendor/plotly.min.js", methods=["GET", "HEAD"], operation_id="dashboard_plotly")
def plotly_js(request: Request) -> Response:
    path = plotly_js_path()
    if path is None:
        raise _not_found(
            "plotly.min.js in the installed plotly package",
            "install the server extras: pip install 'splitwatch[server]'",
        )
    return _file(request, path, VENDOR_MAX_AGE)


@router.api_route("/static/{file_path:path}", methods=["GET", "HEAD"], operation_id="dashboard_static")
def static_file(file_path: str, request: Request) -> Response:
    root = FRONTEND_DIR.resolve()
    path = (root / file_path).resolve()
    # Resolving first, then requiring the root as a parent, refuses `..` and symlinks out.
    if root not in path.parents or not path.is_file() or path.suffix.lower() not in CONTENT_TYPES:
        raise _not_found(
            f"dashboard file /static/{file_path}",
            "check the address; the dashboard's own pages link only to existing files",
        )
    return _file(request, path, REVALIDATE)
