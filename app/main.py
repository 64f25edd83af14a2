"""The FastAPI application: `create_app(settings)` builds it; nothing is built at import.

Routers come from app/api/<name>.py for each name in ROUTER_MODULES (each module exposes
`router`); app/metrics.py mounts /metrics through `install_metrics(app, engine, settings)`.

app.state holds `settings`, `engine`, `writer` (app/ingest/writer.py) and `auth`
(app/auth.py), and from startup on `alerting` and `retention`. Startup (lifespan) checks that
the database is at the migration head and refuses to start otherwise; it then starts the
writer, the token revocation poller (app/auth.py), alerting (app/alerts/evaluate.py: the rule
evaluator and the webhook sender), retention (app/retention/run.py) and the warming of
/metrics' kept sums (app/metrics.py). Shutdown stops the warming,
retention, alerting and the poller, then the writer
(queued batches are finished first), and disposes of the engine.
"""

from __future__ import annotations

import gc
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware

from app.alerts.evaluate import Alerting
from app.api.ingest import InFlight, IngestShortcut
from app.auth import Authenticator
from app.background import stop_side_by_side
from app.edge import EdgeMiddleware
from app.errors import NotReady, install_error_handlers
from app.ingest.writer import Writer, WriterStopped, make_writer
from app.metrics import DatabaseFigures, install_metrics
from app.retention.run import Retention
from app.settings import Settings
from app.store.engine import make_engine, pool_options
from app.store.schema_check import schema_status

log = logging.getLogger("splitwatch")

ROUTER_MODULES = (
    "health",
    "ingest",
    "hosts",
    "guests",
    "events",
    "series",
    "gaps",
    "summary",
    "insights",
    "tokens",
    "enroll",
    "alert_rules",
    "alerts",
    "silences",
    "webhooks",
    "docs",
    "frontend",
)


GZIP_OPTIONS: dict[str, Any] = {"minimum_size": 1024, "compresslevel": 6}


class SchemaNotAtHead(RuntimeError):
    """The database is empty or behind: `splitwatch db upgrade`."""


def create_app(settings: Settings) -> FastAPI:
    engine = make_engine(
        settings.database_url,
        **pool_options(
            settings.database_url, settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout_s
        ),
    )
    writer = make_writer(engine, settings.db_pool_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        status = await run_in_threadpool(schema_status, engine)
        if not status.ok:
            log.error(status.message)
            raise SchemaNotAtHead(status.message)
        # The threadpool is anyio's default limiter of this event loop (40 threads unless told).
        to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        app.state.read_slots = CapacityLimiter(settings.threadpool_size)  # app/deps.get_conn
        writer.start()
        auth: Authenticator = app.state.auth
        auth.start()  # the token revocation poller (app/auth.py)
        # The rule evaluator and the webhook sender (issue 12); with several workers every
        # process runs them, and the alerting lease lets exactly one of them act.
        alerting = Alerting(engine, writer, settings)
        alerting.start()
        app.state.alerting = alerting
        # Raw events expire, old partitions go (app/retention/run.py, #13); one process acts.
        retention = Retention(writer, settings)
        retention.start()
        app.state.retention = retention
        # /metrics' costly sums (seconds at fleet size) are read from now on, not at the first
        # scrape, which would otherwise outlast Prometheus' scrape timeout (app/metrics.py).
        metrics_database: DatabaseFigures = app.state.metrics_database
        metrics_database.warm()
        # Everything built so far (modules, app, routes) lives as long as the process: move it
        # out of the collector's sight, so the full collections that a request's garbage
        # triggers scan only request-sized heaps (a full scan of the startup heap was the
        # p99 tail of the chart and ingest benches).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await stop_side_by_side(
                {
                    "metrics": metrics_database.stop(),
                    "retention": retention.stop(),
                    "alerting": alerting.stop(),
                    "token revocation poll": auth.stop(),
                }
            )
            writer.stop()  # last: the loops above write through it
            engine.dispose()

    app = FastAPI(
        title="splitwatch",
        version="0.1.0",
        summary="Fleet-wide split-lock telemetry for KVM hosts",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN: /docs is app/api/docs.py.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.writer = writer
    app.state.ingest_in_flight = InFlight(settings.ingest_max_in_flight, settings.ingest_max_wait_s)
    app.state.auth = Authenticator(
        engine,
        settings.token_touch_interval_s,
        touch=lambda fn: _fire_and_forget(writer, fn),
        cache_ttl_s=settings.token_cache_ttl_s,
        negative_ttl_s=settings.token_negative_ttl_s,
        revocation_poll_s=settings.token_revocation_poll_s,
    )
    install_error_handlers(app)
    # Text answers of 1 KiB or more are gzipped when the client accepts it (dashboard files,
    # Plotly, JSON, CSV); level 6 is most of level 9's gain for a fraction of its CPU.
    app.add_middleware(GZipMiddleware, **GZIP_OPTIONS)

    for name in ROUTER_MODULES:
        app.include_router(importlib.import_module(f"app.api.{name}").router)
    install_metrics(app, engine, settings)
    # POST /api/v1/ingest past the layers below it (app/api/ingest.py), inside the edge.
    app.add_middleware(IngestShortcut, gzip_options=GZIP_OPTIONS)
    # Security headers, the access log and the ingest request figures, outside gzip
    # (app/edge.py): one layer for all three.
    app.add_middleware(EdgeMiddleware, ingest_metrics=app.state.ingest_metrics)
    return app


def _fire_and_forget(writer: Writer, fn: Callable[[Connection], None]) -> None:
    future = writer.submit(fn)

    def _done(_f: Future[None]) -> None:
        exc = future.exception()
        if exc is not None and not isinstance(exc, WriterStopped):
            log.warning("could not record token use: %s", exc)

    future.add_done_callback(_done)


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (several workers): settings from SPLITWATCH_* only.

    Each worker is a fresh process, so it sets up the JSON logs itself.
    """
    from app.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


__all__ = ["ROUTER_MODULES", "NotReady", "SchemaNotAtHead", "create_app", "create_app_from_env"]
