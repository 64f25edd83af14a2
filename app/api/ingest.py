"""POST /api/v1/ingest: agent batches in (docs/api.md), idempotent.

The body is read here, not by FastAPI, so its size is bounded while it arrives (413 over
max_body_bytes, before and after gzip decompression: a gzip bomb is cut off at the limit),
and pydantic-core validates the JSON bytes in one strict pass. The host in the payload
must be the host the agent token was made for (403 otherwise). The write runs on the app's
writer (app/ingest/writer.py); the answer is {"accepted", "duplicates"}. The stored batch
moves this process's ingest figures on /metrics (app/metrics.py, IngestMetrics).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.deps import AgentDep, SettingsDep, WriterDep, authenticate_agent
from app.errors import (
    ApiError,
    Forbidden,
    InvalidInput,
    NotReady,
    PayloadTooLarge,
    error_responses,
    validation_details,
    validation_message,
)
from app.ingest.rows import build_rows
from app.ingest.schema import parse_payload, payload_json_schema
from app.ingest.write import BatchJob, GuestLimits
from app.ingest.writer import Writer, WriterStopped
from app.metrics import INGEST_PATH, ingest_metrics
from app.settings import Settings


class IngestRoute(APIRoute):
    """The ingest route as FastAPI declares and documents it (OpenAPI from the endpoint's
    signature and the decorator, unchanged), served without FastAPI's per-request dependency
    solving: the same dependency functions are awaited directly, in the same order (token,
    then role). Solving the dependency graph per request was the largest single share of the
    route's event-loop CPU (bench/bench_edge.py --profile). With dependency overrides set on
    the app, FastAPI's own handler serves, so an override applies as it would anywhere else."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        generic = super().get_route_handler()

        async def handler(request: Request) -> Response:
            if request.app.dependency_overrides:
                return await generic(request)
            return await serve_ingest(request)

        return handler


async def serve_ingest(request: Request) -> Response:
    """The route's answer without FastAPI's dependency solving: the token, then the batch."""
    app = request.app
    host_name = await authenticate_agent(request)
    return await ingest(request, host_name, app.state.writer, app.state.settings)


class IngestShortcut:
    """POST /api/v1/ingest served straight from the middleware stack, past GZip, Starlette's
    ExceptionMiddleware, FastAPI's AsyncExitStackMiddleware, the router's route matching and
    request_response: on the steady-state ingest path those layers were about half of the
    event loop's CPU per request (bench/bench_edge.py --profile, #13), and none of them changes
    what ingest answers:
    - the answer of a stored batch is under GZip's minimum size, which GZip sends untouched;
    - an error (ApiError, a database error, a client gone) goes through `errors`: the same
      GZip options and ExceptionMiddleware with the app's handlers, as it would from the route;
      an exception without a handler there propagates to ServerErrorMiddleware as before.
    It sits inside app/edge.py's EdgeMiddleware (headers, access log, ingest figures stay as
    they are). Any other request, a root_path, FastAPI telemetry or dependency overrides (a
    test's): the normal stack serves.
    """

    def __init__(self, app: ASGIApp, gzip_options: dict[str, Any]) -> None:
        self.app = app
        self.gzip_options = gzip_options
        self._errors: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != INGEST_PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
            or scope.get("fastapi.telemetry") is not None
            or scope["app"].dependency_overrides
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await serve_ingest(request)
        except Exception as exc:
            scope[_ERROR_KEY] = exc
            await self._error_stack(scope["app"])(scope, receive, send)
            return
        await response(scope, receive, send)

    def _error_stack(self, app: FastAPI) -> ASGIApp:
        if self._errors is None:
            # As FastAPI.build_middleware_stack splits them: 500 and Exception belong to
            # ServerErrorMiddleware, outside this one.
            handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
            self._errors = GZipMiddleware(
                ExceptionMiddleware(_raise_error, handlers=handlers, debug=app.debug), **self.gzip_options
            )
        return self._errors


_ERROR_KEY = "splitwatch.ingest_error"


async def _raise_error(scope: Scope, _receive: Receive, _send: Send) -> None:
    raise scope.pop(_ERROR_KEY)


router = APIRouter(prefix="/api/v1", tags=["ingest"], route_class=IngestRoute)


class IngestResult(BaseModel):
    accepted: int  # events stored now
    duplicates: int  # events already stored (a resend), or repeated within the batch


class Overloaded(ApiError):
    # No Retry-After: one value sent to a thousand agents brings them back in the same second.
    # Without it each agent backs off exponentially with full jitter (agent/transport.py), which
    # spreads a herd out by itself.
    status = 503
    code = "overloaded"


class InFlight:
    """The ingest requests this process works on at once: at most `most` (0: no most). One more
    waits, unread (its body stays in the socket), for a place to free up, first come first
    served, up to `wait_s`; then it is refused. Waiting costs a coroutine, not memory, and keeps
    a herd in order: what arrives first is stored first."""

    def __init__(self, most: int, wait_s: float) -> None:
        self.most = most
        self.wait_s = wait_s
        self.now = 0  # in progress
        self.waiting = 0
        # asyncio.Semaphore wakes its waiters in order, and binds to a loop on first use.
        self._places = asyncio.Semaphore(most) if most else None

    async def enter(self) -> bool:
        places = self._places
        if places is not None:
            if places.locked():
                if not self.wait_s:
                    return False
                self.waiting += 1
                try:
                    await asyncio.wait_for(places.acquire(), self.wait_s)
                except TimeoutError:
                    return False
                finally:
                    self.waiting -= 1
            else:
                await places.acquire()  # a free place: taken at once, nothing awaited
        self.now += 1
        return True

    def leave(self) -> None:
        self.now -= 1
        if self._places is not None:
            self._places.release()


class UnsupportedEncoding(ApiError):
    status = 415
    code = "unsupported_encoding"


def _too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"ingest body {what} is over the limit of {limit} bytes: send smaller batches "
        "(or raise SPLITWATCH_MAX_BODY_BYTES on the server)"
    )


def _headers(scope: Scope) -> tuple[str | None, str]:
    """Content-Length (None when absent) and Content-Encoding ("identity" when absent), each
    the first of its name, as `request.headers.get` gives them: one pass over the raw headers
    instead of a Headers mapping and a search per name (#13)."""
    length: str | None = None
    encoding: str | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            if length is None:
                length = value.decode("latin-1")
        elif name == b"content-encoding" and encoding is None:
            encoding = value.decode("latin-1")
    return length, "identity" if encoding is None else encoding


async def read_body(request: Request, limit: int) -> bytes:
    declared, encoding = _headers(request.scope)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, "as sent")
    encoding = encoding.strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", ""):
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding!r} is not supported: send the body plain or with gzip"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, "as sent")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(raw, limit)
    return raw


def _gunzip(raw: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # max_length caps the output: a bomb stops at limit + 1 bytes, never expands fully.
        out = inflater.decompress(raw, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_large(limit, "after gzip decompression")
        out += inflater.flush()
    except zlib.error as exc:
        raise InvalidInput(
            f"ingest body is not valid gzip ({exc}): compress it with gzip or drop Content-Encoding",
            code="invalid_gzip",
        ) from None
    if len(out) > limit:
        raise _too_large(limit, "after gzip decompression")
    if not inflater.eof:
        raise InvalidInput("ingest body is truncated gzip: resend the whole body", code="invalid_gzip")
    if inflater.unused_data:
        # A second gzip member (or trailing bytes) would be silently dropped by a one-member
        # inflater: refuse rather than store a part of what was sent (issue 14).
        raise InvalidInput(
            "ingest body has data after its gzip stream (a second gzip member?): "
            "send one gzip stream holding the whole JSON body",
            code="invalid_gzip",
        )
    return out


@router.post(
    "/ingest",
    operation_id="ingest",
    response_model=IngestResult,
    summary="Store a batch from an agent (schema 1)",
    responses=error_responses(401, 403, 413, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": payload_json_schema()}},
        }
    },
)
async def ingest(request: Request, host_name: AgentDep, writer: WriterDep, settings: SettingsDep) -> Response:
    in_flight: InFlight = request.app.state.ingest_in_flight
    if not await in_flight.enter():
        metrics = ingest_metrics(request.app)
        if metrics is not None:
            metrics.overloaded.inc()
        raise Overloaded(
            f"server is busy with {in_flight.most} other batches and none finished within "
            f"{in_flight.wait_s:g} s: nothing was stored; send it again after a backoff with jitter "
            "(SPLITWATCH_INGEST_MAX_IN_FLIGHT, SPLITWATCH_INGEST_MAX_WAIT_S)"
        )
    try:
        return await _store(request, host_name, writer, settings)
    finally:
        in_flight.leave()


async def _store(request: Request, host_name: str, writer: Writer, settings: Settings) -> Response:
    body = await read_body(request, settings.max_body_bytes)
    try:
        payload = parse_payload(body)
    except ValidationError as exc:
        details = validation_details(exc.errors(include_input=False))
        for d in details:
            if d["field"] != "request":
                d["field"] = "body." + d["field"]
            else:
                d["field"] = "body"
        raise InvalidInput(
            validation_message(details, "ingest payload"), code="invalid_payload", details=details
        ) from None
    if payload.host.name != host_name:
        raise Forbidden(
            f"this agent token may write host {host_name!r}, not {payload.host.name!r}: "
            f"create a token with `splitwatch token create --role agent --host {payload.host.name}`",
            code="wrong_host",
        )
    rows = build_rows(payload, datetime.now(UTC))
    try:
        limits = GuestLimits(settings.max_guests_per_host, settings.max_new_guests_per_batch)
        result = await writer.run(BatchJob(rows, limits))
    except OperationalError as exc:
        reason = (str(exc.orig).strip().splitlines() or ["no detail"])[0]
        raise NotReady(
            f"database could not store the batch ({reason}): nothing was stored, send it again later",
            code="database_busy",
            headers={"Retry-After": "5"},
        ) from None
    except WriterStopped:
        raise NotReady(
            "server is shutting down: nothing was stored, send the batch again in a moment",
            code="shutting_down",
            headers={"Retry-After": "5"},
        ) from None
    metrics = ingest_metrics(request.app)
    if metrics is not None:
        metrics.batch(result.accepted, result.duplicates)
    return StoredAnswer(result.accepted, result.duplicates)


class StoredAnswer(Response):
    """The answer to a stored batch: what `Response(body, media_type="application/json")`
    sends, status, headers and body byte for byte, built without Response's header
    machinery (#13). IngestResult's JSON is written directly: response_model validation and
    serialization of two ints cost more than the rest of the answer (response_model stays
    for the OpenAPI schema)."""

    media_type = "application/json"

    def __init__(self, accepted: int, duplicates: int) -> None:
        body = f'{{"accepted":{accepted:d},"duplicates":{duplicates:d}}}'.encode()
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", str(len(body)).encode("latin-1")), _JSON_TYPE]


_JSON_TYPE = (b"content-type", b"application/json")
