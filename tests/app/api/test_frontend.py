"""The dashboard is served by the backend itself, without a browser (#5).

A real uvicorn serves create_app(settings): the page, every ES module with a JavaScript
content type (a browser refuses to run a module served as anything else), Plotly from the
installed package, and nothing that points outside the server (hosts may have no internet).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from app.api.frontend import FRONTEND_DIR, plotly_js_path
from tests.app.conftest import assert_error


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Serving files does not touch the database: SQLite alone is enough here."""
    return f"sqlite:///{tmp_path / 'splitwatch.db'}"


JS_FILES = sorted(FRONTEND_DIR.rglob("*.js"))
# `import ... from "./x.js"` and `import "./x.js"`: static module imports, relative.
IMPORT_RE = re.compile(r"""^(?:import|export)\s+(?:[\w*{}\s,$]+?\s+from\s+)?["']([^"']+)["']""", re.MULTILINE)
# Anything a browser would fetch from another origin: http(s)://, protocol-relative //host.
EXTERNAL_RE = re.compile(r"""(?:https?:)?//(?:[a-z0-9-]+\.)+[a-z]{2,}\b""", re.IGNORECASE)


def _url_of(path: Path) -> str:
    return "/static/" + path.relative_to(FRONTEND_DIR).as_posix()


def test_root_answers_the_dashboard_page_without_a_token(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/static/js/main.js">' in response.text
    assert response.text == (FRONTEND_DIR / "index.html").read_text()


def test_every_js_module_is_served_with_a_javascript_content_type(client: httpx.Client) -> None:
    assert len(JS_FILES) >= 8, JS_FILES  # api, charts, state, dom, main and the views
    for path in JS_FILES:
        response = client.get(_url_of(path))
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/javascript"), (path, response.headers)
        assert response.content == path.read_bytes(), path


def test_every_module_import_resolves_to_a_file_the_server_serves(client: httpx.Client) -> None:
    imports = 0
    for path in JS_FILES:
        for match in IMPORT_RE.finditer(path.read_text()):
            target = match.group(1)
            assert target.startswith("."), f"{path}: bare or absolute import {target!r} needs a bundler"
            resolved = (path.parent / target).resolve()
            response = client.get(_url_of(resolved))
            assert response.status_code == 200, f"{path} imports {target}: {response.status_code}"
            imports += 1
    assert imports >= 10


def test_index_page_loads_only_files_the_server_serves(client: httpx.Client) -> None:
    page = (FRONTEND_DIR / "index.html").read_text()
    refs = [r for r in re.findall(r"""(?:src|href)="([^"#][^"]*)\"""", page) if not r.startswith("data:")]
    assert "/static/vendor/plotly.min.js" in refs and "/static/css/app.css" in refs, refs
    for ref in refs:
        assert client.get(ref).status_code == 200, ref


def test_plotly_is_served_from_the_installed_plotly_package_and_cached(client: httpx.Client) -> None:
    bundle = plotly_js_path()
    assert bundle is not None and bundle.parts[-3:] == ("plotly", "package_data", "plotly.min.js")
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "max-age=" in response.headers["cache-control"]
    assert response.content == bundle.read_bytes()


def test_an_unchanged_file_is_answered_304_to_its_etag(client: httpx.Client) -> None:
    first = client.get("/static/js/api.js")
    etag = first.headers["etag"]
    again = client.get("/static/js/api.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_head_requests_are_answered_like_get(client: httpx.Client) -> None:
    response = client.head("/static/js/main.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize(
    "path",
    [
        "/static/%2e%2e/pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/js/%2e%2e/%2e%2e/app/main.py",
        "/static/js/no-such-module.js",
        "/static/",
        "/static/js/%00.js",  # issue 14: NUL in a path was a 500
        "/static/" + "a" * 300 + ".js",  # a name longer than the filesystem allows
        "/static/" + "a/" * 3000 + "x.js",  # a path longer than PATH_MAX
    ],
)
def test_a_path_outside_the_frontend_or_missing_is_404_in_the_error_shape(
    client: httpx.Client, path: str
) -> None:
    body = assert_error(client.get(path), 404)
    assert "not found" in body["message"]


def test_no_file_in_frontend_references_an_external_url() -> None:
    files = [p for p in FRONTEND_DIR.rglob("*") if p.is_file()]
    assert len(files) >= 10
    for path in files:
        found = EXTERNAL_RE.findall(path.read_text())
        assert not found, f"{path} references {found}: serve it from the backend instead"


def test_the_dashboard_routes_stay_out_of_the_api_schema(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/static")], list(paths)


def test_every_answer_carries_the_security_headers(client: httpx.Client) -> None:
    # issue 14: no CSP, no frame-ancestors on the dashboard
    for path in ("/", "/static/js/main.js", "/docs", "/api/v1/hosts", "/healthz"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "object-src 'none'" in csp and "base-uri 'none'" in csp, path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["x-frame-options"] == "DENY", path


def test_text_files_are_gzipped_for_a_client_that_accepts_it(client: httpx.Client) -> None:
    page = client.get("/static/js/charts.js", headers={"Accept-Encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip"
    assert page.content == (FRONTEND_DIR / "js" / "charts.js").read_bytes()  # httpx inflates it
    plain = client.get("/static/js/charts.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


def test_docs_load_swagger_ui_from_this_server_not_a_cdn(client: httpx.Client) -> None:
    page = client.get("/docs").text
    refs = re.findall(r"""(?:src|href)="([^"]+)\"""", page)
    assert refs and all(r.startswith(("/docs/", "data:")) for r in refs), refs
    assert "<script>" not in page  # no inline script: the CSP allows none
    for ref in refs:
        if ref.startswith("/"):
            assert client.get(ref).status_code == 200, ref
    assert not client.get("/redoc").is_success  # FastAPI's CDN-loaded page is gone
