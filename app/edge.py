"""What every HTTP answer gets on its way out, in one pure ASGI middleware (EdgeMiddleware).

    security headers  app/headers.py's HEADERS, each one the answer does not set itself
    access log        one `splitwatch.access` line per request (app/logging.py): method, path,
                      status, ms
    ingest figures    POST /api/v1/ingest only: splitwatch_ingest_requests_total{status} and
                      splitwatch_ingest_duration_seconds (app/metrics.py, IngestMetrics)

The status is the one sent in http.response.start; an exception escaping the app (answered 500
by the outermost ServerErrorMiddleware) counts and logs as 500. Answers the app produces
before or around a route (401 from a dependency, 413, 405, 503) get all three like any other.

One layer instead of one per concern: every ASGI layer is a coroutine call and a `send`
wrapper per message on every request, and on the ingest path (thousands of small requests a
second) those layers were a measurable share of the event loop's CPU (bench/bench_edge.py).
No BaseHTTPMiddleware: it would buffer streamed CSV answers.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.headers import RAW_HEADERS
from app.logging import access_log
from app.metrics import INGEST_PATH, IngestMetrics


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, ingest_metrics: IngestMetrics | None = None) -> None:
        self.app = app
        self.ingest_metrics = ingest_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception escaping the app becomes a 500 outside this middleware

        async def send_at_edge(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message["headers"] = list(message.get("headers", ()))
                present = {name for name, _ in headers}
                headers.extend(item for item in RAW_HEADERS if item[0] not in present)
            await send(message)

        try:
            await self.app(scope, receive, send_at_edge)
        finally:
            seconds = time.perf_counter() - start
            metrics = self.ingest_metrics
            if metrics is not None and scope["path"] == INGEST_PATH and scope["method"] == "POST":
                metrics.request(status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                method, path = scope["method"], scope["path"]
                access_log.info(
                    "%s %s %d",
                    method,
                    path,
                    status,
                    extra={"method": method, "path": path, "status": status, "ms": round(seconds * 1000, 2)},
                )


__all__ = ["EdgeMiddleware"]
