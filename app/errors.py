"""One error shape for every API answer that is not a success.

    {"error": "<short_code>", "message": "<the thing, the cause, the remedy>", "details": [...] | null}

Exception tree (raise these from routes, dependencies and store modules; the handlers
installed by `install_error_handlers` turn each into its status and the shape above):

    ApiError                      status + code + message (+ details)
    ├── Unauthorized       401    missing, unknown or revoked token (WWW-Authenticate: Bearer)
    ├── Forbidden          403    a token of the wrong role, or an agent token of another host
    ├── NotFound           404    a named host, guest, rule ... that does not exist
    ├── Conflict           409    a unique name already taken
    ├── PayloadTooLarge    413    a body (or its gzip-decompressed form) over max_body_bytes
    ├── InvalidInput       422    a body or parameter the schema accepts but the meaning rejects
    ├── ClientClosedRequest 499   the client hung up before its request was read (nginx's 499)
    └── NotReady           503    database unreachable or behind the migration head

Database outages (issue 14) are not bugs: SQLAlchemy's OperationalError and InterfaceError (the
server went away, a connection was terminated, SQLite is locked past busy_timeout), any DBAPI
error that invalidated its connection, and a pool timeout (every connection busy for
db_pool_timeout_s) answer 503 `database_unavailable` with `Retry-After`, from every route.
A client that hangs up mid-request (starlette's ClientDisconnect) is answered 499 — nobody
reads it, but the access log and splitwatch_ingest_requests_total count it as the client's.

Also mapped: starlette's HTTPException (routing 404/405, ...) keeps its status with a code from
its name; RequestValidationError becomes 422 `invalid_request` with one detail per problem
naming its field path (`body.events[3].seq`). Anything else is a bug: it is logged with its
traceback and answered 500 `internal_error` in the same shape — no endpoint should ever get
there (tests/app and schemathesis look for 500s).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("splitwatch.errors")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str
    message: str
    details: list[Any] | None = None


class ApiError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = headers


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class InvalidInput(ApiError):
    status = 422
    code = "invalid_input"


class NotReady(ApiError):
    status = 503
    code = "not_ready"


class ClientClosedRequest(ApiError):
    status = 499
    code = "client_closed_request"


# Seconds a client is asked to wait after a 503 for a database that did not answer.
RETRY_AFTER_S = 5


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, unknown or revoked token",
    403: "Token not allowed to do this",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported content encoding",
    422: "Invalid request: details name each field",
    503: "Database not ready",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring each status with the ErrorBody schema.

    Declaring 422 here also replaces FastAPI's default HTTPValidationError schema, which
    this app never answers with.
    """
    return {
        code: {"model": ErrorBody, "description": _DESCRIPTIONS.get(code, HTTPStatus(code).phrase)}
        for code in codes
    }


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": code, "message": message, "details": details}
    return JSONResponse(body, status_code=status, headers=headers)


def _field_path(loc: Sequence[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "request"


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic errors as [{"field", "problem", "type"}], inputs left out (they can be huge)."""
    out = []
    for err in errors:
        out.append(
            {
                "field": _field_path(err.get("loc", ())),
                "problem": str(err.get("msg", "invalid")),
                "type": str(err.get("type", "invalid")),
            }
        )
    return out


def validation_message(details: list[dict[str, Any]], what: str = "request") -> str:
    shown = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    return f"invalid {what}: {shown}{more}: fix these fields and resend"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such route: see /docs or /openapi.json for the API"
    headers = getattr(exc, "headers", None)
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        # FastAPI's words for a JSON body that is not JSON (or not UTF-8).
        detail = "request body is not valid JSON: send a JSON object (Content-Type: application/json)"
    if exc.status_code == 405:
        detail = "method not allowed on this route: see /openapi.json for the allowed methods"
        headers = {**(headers or {}), "Allow": _allowed_methods(request, headers)}
    return error_response(exc.status_code, code, detail, None, headers)


def _allowed_methods(request: Request, headers: dict[str, str] | None) -> str:
    """Every documented method on this path. Starlette's 405 names only the first matching
    route's methods, so a path served by two routes (POST and DELETE /hosts/{name}/token, #15)
    would advertise half of them; the OpenAPI document knows them all."""
    table = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = [
            (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"), ops)
            for path, ops in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allowed_methods = table
    path = request.url.path
    for pattern, ops in table:
        if pattern.match(path):
            return ", ".join(sorted(m.upper() for m in ops))
    return (headers or {}).get("Allow", "")


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    return error_response(422, "invalid_request", validation_message(details), details)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, PoolTimeout):
        reason = "every database connection is busy"
    else:
        orig = getattr(exc, "orig", None) or exc
        reason = (str(orig).strip().splitlines() or ["no detail"])[0][:200]
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, reason)
    return error_response(
        503,
        "database_unavailable",
        f"the database did not answer ({reason}): nothing was changed, try again in a few seconds",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated:  # the connection died under the statement: an outage
        return await _database_unavailable(request, exc)
    return await _unexpected(request, exc)


async def _client_closed(_request: Request, _exc: Exception) -> JSONResponse:
    return error_response(
        499, "client_closed_request", "the client closed the connection before its request was read"
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(
        500, "internal_error", "the server failed on this request (a bug): the log has the traceback"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(DBAPIError, _dbapi_error)
    app.add_exception_handler(ClientDisconnect, _client_closed)
    app.add_exception_handler(Exception, _unexpected)
