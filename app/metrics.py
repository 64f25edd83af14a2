"""GET /metrics: Prometheus text for the fleet, read from the database at scrape time.

uvicorn workers (and several backends behind a load balancer) share nothing but the database,
so in-process counters would each see a slice. A custom Collector on the app's own
CollectorRegistry (never the global one: two apps in one process, as in tests, must not mix)
reads the rollups and the host rows on every scrape instead, with a few aggregate queries:

    splitwatch_events_total{host,guest,action,kind,source}   counter, sum of event counts (rollup_1h)
    splitwatch_gaps_total{host,reason}                        counter, events lost (gap.count)
    splitwatch_host_last_seen_timestamp_seconds{host}         gauge
    splitwatch_host_cpus{host,state}                          gauge, state on|off|error
    splitwatch_host_status{host,status}                       gauge, 1 for the current status (one per host)
    splitwatch_host_consistency{host,verdict}                 gauge, 1 for the agent's newest verdict
    splitwatch_host_needs_action{host}                        gauge, 1 when the status needs action
    splitwatch_hosts, splitwatch_guests                       gauges
    splitwatch_alerts_firing{alertname,severity}              gauge, alerts firing now (issue 12)
    splitwatch_notifications_total{webhook,result}            counter, deliveries delivered | failed | gone
    splitwatch_outbox_depth                                   gauge, deliveries waiting to be sent
    splitwatch_outbox_oldest_age_seconds                      gauge, age of the oldest of them (0: none)
    splitwatch_throttled_vcpu_seconds_lower_bound{host}      gauge, vCPU-seconds misery mode took at
                                                              least over the last 7 days (issue 16 §2)
    splitwatch_database_up                                    gauge, 0 when the queries failed

The ingest path's own figures are the exception (issue 3): prometheus_client metrics counted
where the batches arrive (IngestMetrics). Behind one port with `serve --workers N`, a scrape
reaches whichever worker accepts it, so per-process counters would jump between the workers'
shares and look like resets to Prometheus (issue 17). `serve` therefore sets
PROMETHEUS_MULTIPROC_DIR for its workers (prometheus_client's multiprocess mode): each process
writes its counts to its own files there and every scrape sums all of them, the files of
workers that have exited included, so the totals never go back. One process (workers=1, tests)
keeps them in memory on the app's registry; they start at 0 when the server starts.

    splitwatch_ingest_requests_total{status}                  counter, POST /api/v1/ingest by HTTP status
    splitwatch_ingest_events_total{result}                    counter, accepted | duplicate events
    splitwatch_ingest_duration_seconds                        histogram, request time in the server
    splitwatch_ingest_batch_events                            histogram, events per stored batch

Cardinality: one events_total series per (host, guest, kind, action, source) seen. Guests are
the unbounded label, so past MAX_EVENT_SERIES label sets only the TOP_GUESTS busiest guests keep
their name and the rest are summed under guest="(other)" — per host, so host totals stay exact.
Sums stay monotonic as long as a guest stays on the same side of the cut; a guest crossing it
looks like a counter reset to Prometheus, which rate() tolerates.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hmac
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Histogram, multiprocess
from prometheus_client import Counter as PromCounter  # collections.Counter is used above
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from app.errors import Unauthorized, error_responses
from app.settings import Settings
from app.store.events import HOST_GUEST_KEY, NO_GUEST_ID
from app.store.insights import read_hosts, throttling
from app.store.status import host_status
from app.store.tables import alert, alert_rule, gap, guest, host, rollup_1h, webhook_delivery

log = logging.getLogger("splitwatch.metrics")

MAX_EVENT_SERIES = 5000
TOP_GUESTS = 200
OTHER_GUEST = "(other)"
# events_total sums the whole of rollup_1h (85k rows for a dense 30-day fleet, more with a
# longer retention): even from its covering index (tables.METRICS_INDEX) that is the costly
# part of a scrape, and an HA pair of Prometheus servers, or several, each pay it. Its sums
# are kept per process for this long: a counter a few seconds old is still a counter
# (rate() is unaffected), while the other families, cheap, stay live on every scrape.
EVENTS_CACHE_S = 5.0
# The throttling gauge is a fixed trailing window, not a counter: it comes from the same rule as
# GET /api/v1/insights/throttling (the state in force from host_state history decides which
# traps slept), and a late host_state row may re-classify old traps, which a counter could
# not take back. Computing it reads a week of rollups and state changes: kept for a minute.
THROTTLE_WINDOW = dt.timedelta(days=7)
THROTTLE_CACHE_S = 60.0


class DatabaseCollector(Collector):
    """Reads the figures from the database on each collect() (each scrape)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        # (time.monotonic() when read, the events_total family); one reader at a time, so
        # concurrent scrapes after expiry run the aggregate once, not once each.
        self._events_cache: tuple[float, CounterMetricFamily] | None = None
        self._events_lock = threading.Lock()
        self._throttle_cache: tuple[float, GaugeMetricFamily] | None = None
        self._throttle_lock = threading.Lock()

    def describe(self) -> Iterable[object]:
        # Names only, without touching the database at registration.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            with self._engine.connect() as conn:
                families = list(self._read(conn))
        except SQLAlchemyError as exc:
            log.warning("metrics: database query failed (%s): reporting splitwatch_database_up 0", exc)
            families = []
            up = 0.0
        else:
            up = 1.0
        yield from families
        yield GaugeMetricFamily(
            "splitwatch_database_up", "1 when the scrape could read the database, else 0.", value=up
        )

    def _read(self, conn: Connection) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        hosts = conn.execute(
            select(
                host.c.id,
                host.c.name,
                host.c.last_seen_at,
                host.c.agent_reported,
                host.c.verdict,
                host.c.cpus_on,
                host.c.cpus_off,
                host.c.cpus_error,
            ).order_by(host.c.name)
        ).all()
        host_names = {row.id: row.name for row in hosts}
        yield self._cached_events(conn, host_names)

        gaps = CounterMetricFamily(
            "splitwatch_gaps",
            "Events lost and counted by the agents (sum of gap counts).",
            labels=["host", "reason"],
        )
        for host_id, reason, total in conn.execute(
            select(gap.c.host_id, gap.c.reason, func.sum(gap.c.count)).group_by(gap.c.host_id, gap.c.reason)
        ):
            gaps.add_metric([host_names.get(host_id, f"#{host_id}"), reason], float(total or 0))
        yield gaps

        last_seen = GaugeMetricFamily(
            "splitwatch_host_last_seen_timestamp_seconds",
            "When the host's agent last reported.",
            labels=["host"],
        )
        cpus = GaugeMetricFamily(
            "splitwatch_host_cpus",
            "CPUs by split-lock detection state in the latest sample.",
            labels=["host", "state"],
        )
        # One series per host for status and verdict (the current one, value 1), not one per
        # possible word: 11 statuses x 10,000 hosts would be 110,000 series of zeros.
        status = GaugeMetricFamily(
            "splitwatch_host_status",
            "1 for the host's current status: silent, else its consistency verdict, else unknown "
            "(only the current status is exported).",
            labels=["host", "status"],
        )
        consistency = GaugeMetricFamily(
            "splitwatch_host_consistency",
            "1 for the agent's newest consistency verdict on the host (kept while it is silent; "
            "unknown when none was sent).",
            labels=["host", "verdict"],
        )
        needs_action = GaugeMetricFamily(
            "splitwatch_host_needs_action",
            "1 when the host's status needs action (drift, stuck_off, inconsistent_config, "
            "foreign_hypervisor), else 0.",
            labels=["host"],
        )
        now = dt.datetime.now(dt.UTC)
        for row in hosts:
            last_seen_at = row.last_seen_at if row.agent_reported else None
            if last_seen_at is not None:  # none: no agent ever reported (an imported host)
                last_seen.add_metric([row.name], last_seen_at.timestamp())
            for state, n in (("on", row.cpus_on), ("off", row.cpus_off), ("error", row.cpus_error)):
                cpus.add_metric([row.name, state], float(n))
            verdict = host_status(
                last_seen_at=last_seen_at,
                verdict=row.verdict,
                reason=None,
                details=None,
                since=None,
                now=now,
                silent_after_s=self._settings.silent_after_s,
            )
            status.add_metric([row.name, verdict.status], 1.0)
            consistency.add_metric([row.name, verdict.verdict], 1.0)
            needs_action.add_metric([row.name], 1.0 if verdict.needs_action else 0.0)
        yield last_seen
        yield cpus
        yield status
        yield consistency
        yield needs_action
        yield GaugeMetricFamily("splitwatch_hosts", "Hosts known.", value=float(len(hosts)))
        guests = conn.execute(select(func.count()).select_from(guest)).scalar()
        yield GaugeMetricFamily("splitwatch_guests", "Guests known.", value=float(guests or 0))
        yield self._cached_throttling(conn)
        yield from self._alerting(conn, now)

    def _alerting(
        self, conn: Connection, now: dt.datetime
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Alerts and the webhook outbox (issue 12), from the database: every worker agrees."""
        firing = GaugeMetricFamily(
            "splitwatch_alerts_firing", "Alerts firing now, by rule (alertname) and severity.",
            labels=["alertname", "severity"],
        )  # fmt: skip
        for name, severity, n in conn.execute(
            select(alert_rule.c.name, alert_rule.c.severity, func.count(alert.c.id))
            .join(alert, alert.c.rule_id == alert_rule.c.id)
            .where(alert.c.status == "firing")
            .group_by(alert_rule.c.name, alert_rule.c.severity)
        ):
            firing.add_metric([name, severity], float(n))
        yield firing
        d = webhook_delivery
        sent = CounterMetricFamily(
            "splitwatch_notifications",
            "Webhook deliveries finished, by webhook id and result: delivered (2xx), failed (refused, "
            "or retries exhausted), gone (410).",
            labels=["webhook", "result"],
        )
        for webhook_id, status, n in conn.execute(
            select(d.c.webhook_id, d.c.status, func.count())
            .where(d.c.status.in_(("delivered", "failed", "gone")))
            .group_by(d.c.webhook_id, d.c.status)
        ):
            sent.add_metric([str(webhook_id), status], float(n))
        yield sent
        depth, oldest = conn.execute(
            select(func.count(), func.min(d.c.created_at)).where(d.c.status == "pending")
        ).one()
        yield GaugeMetricFamily(
            "splitwatch_outbox_depth",
            "Webhook deliveries waiting to be sent (pending).",
            value=float(depth or 0),
        )
        if isinstance(oldest, str):  # SQLite hands an aggregate back as text, untyped
            oldest = dt.datetime.fromisoformat(oldest).replace(tzinfo=dt.UTC)
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "splitwatch_outbox_oldest_age_seconds",
            "Age of the oldest pending webhook delivery; 0 when none waits.",
            value=age,
        )

    def _cached_throttling(self, conn: Connection) -> GaugeMetricFamily:
        with self._throttle_lock:
            cached = self._throttle_cache
            if cached is not None and time.monotonic() - cached[0] < THROTTLE_CACHE_S:
                return cached[1]
            family = self._throttling(conn)
            self._throttle_cache = (time.monotonic(), family)
            return family

    def _throttling(self, conn: Connection) -> GaugeMetricFamily:
        until = dt.datetime.now(dt.UTC)
        rows, _ = read_hosts(conn, None)
        result = throttling(conn, rows, since=until - THROTTLE_WINDOW, until=until, limit=len(rows) or 1)
        family = GaugeMetricFamily(
            "splitwatch_throttled_vcpu_seconds_lower_bound",
            "vCPU-seconds split-lock misery mode took at least over the last 7 days: tracefs-counted "
            "traps while it was on x 10 ms. Absent for a host whose traps were only seen in the kernel "
            "log (no count known).",
            labels=["host"],
        )
        figures = {h.host: h.cost.vcpu_seconds for h in result.hosts}
        for row in rows:
            value = figures.get(row.name, 0.0)
            if value is not None:
                family.add_metric([row.name], value)
        return family

    def _cached_events(self, conn: Connection, host_names: dict[int, str]) -> CounterMetricFamily:
        with self._events_lock:
            cached = self._events_cache
            if cached is not None and time.monotonic() - cached[0] < EVENTS_CACHE_S:
                return cached[1]
            family = self._events(conn, host_names)
            # Only a successful read is kept: after a failure the next scrape tries again.
            self._events_cache = (time.monotonic(), family)
            return family

    def _events(self, conn: Connection, host_names: dict[int, str]) -> CounterMetricFamily:
        r = rollup_1h
        # Grouped in the column order of tables.METRICS_INDEX: SQLite reads the groups off
        # that covering index in order (no table rows, no temp B-tree); PostgreSQL scans it
        # index-only or hash-aggregates, whichever its statistics favour.
        dims = (r.c.host_id, r.c.guest_id, r.c.kind, r.c.action, r.c.source)
        rows = conn.execute(select(*dims, func.sum(r.c.count)).group_by(*dims)).all()
        guest_ids = {g for _, g, *_ in rows if g != NO_GUEST_ID}
        kept = guest_ids
        if len(rows) > MAX_EVENT_SERIES:
            per_guest: Counter[int] = Counter()
            for _, g, _, _, _, total in rows:
                per_guest[g] += int(total or 0)
            kept = {g for g, _ in per_guest.most_common(TOP_GUESTS)}
        names: dict[int, str] = (
            dict(conn.execute(select(guest.c.id, guest.c.name).where(guest.c.id.in_(sorted(kept)))).all())
            if kept
            else {}
        )
        sums: dict[tuple[str, str, str, str, str], float] = defaultdict(float)
        for host_id, guest_id, kind, action, source, total in rows:
            if guest_id == NO_GUEST_ID:
                guest_label = HOST_GUEST_KEY
            elif guest_id in kept:
                guest_label = names.get(guest_id, f"#{guest_id}")
            else:
                guest_label = OTHER_GUEST
            sums[(host_names.get(host_id, f"#{host_id}"), guest_label, action, kind, source)] += float(
                total or 0
            )
        family = CounterMetricFamily(
            "splitwatch_events",
            "Split and bus locks observed (sum of event counts), by host, guest, what the host did, kind "
            'and source. guest="(host)": plain host processes.',
            labels=["host", "guest", "action", "kind", "source"],
        )
        for labels, value in sorted(sums.items()):
            family.add_metric(list(labels), value)
        return family


INGEST_PATH = "/api/v1/ingest"
# prometheus_client's multiprocess mode: set (by `serve --workers N`) before any worker imports
# prometheus_client, which picks its value storage at import time.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class IngestMetrics:
    """What the ingest route did. `registry`: where they are read from in one process; None in
    multiprocess mode, where they are read from the files (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = PromCounter(
            "splitwatch_ingest_requests",
            "Ingest requests answered by this process, by HTTP status.",
            ["status"],
            registry=registry,
        )
        self.events = PromCounter(
            "splitwatch_ingest_events",
            "Events received by this process: accepted (stored now) or duplicate (already stored, "
            "or repeated within the batch).",
            ["result"],
            registry=registry,
        )
        self.duration = Histogram(
            "splitwatch_ingest_duration_seconds",
            "Time from an ingest request's arrival to its answer in this process (body read, "
            "validation, write).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.batch_events = Histogram(
            "splitwatch_ingest_batch_events",
            "Events per batch stored by this process (duplicates included).",
            buckets=(0, 1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000),
            registry=registry,
        )
        # Both results exist from the start: rate() sees a 0 before the first duplicate.
        self.accepted = self.events.labels(result="accepted")
        self.duplicates = self.events.labels(result="duplicate")
        self._requests_by_status: dict[int, PromCounter] = {}

    def batch(self, accepted: int, duplicates: int) -> None:
        self.accepted.inc(accepted)
        self.duplicates.inc(duplicates)
        self.batch_events.observe(accepted + duplicates)

    def request(self, status: int, seconds: float) -> None:
        """One POST /api/v1/ingest answered `status` after `seconds` (app/edge.py counts every
        one, the 401s, 413s and 503s answered before or around the route included)."""
        child = self._requests_by_status.get(status)
        if child is None:  # labels() builds its key on every call: one lookup per status
            child = self._requests_by_status[status] = self.requests.labels(status=str(status))
        child.inc()
        self.duration.observe(seconds)


def ingest_metrics(app: FastAPI) -> IngestMetrics | None:
    """The app's IngestMetrics (None when install_metrics was not called on it)."""
    metrics = getattr(app.state, "ingest_metrics", None)
    return metrics if isinstance(metrics, IngestMetrics) else None


def check_metrics_token(expected: str | None, authorization: str | None) -> None:
    """With SPLITWATCH_METRICS_TOKEN set, /metrics wants `Authorization: Bearer <it>` (issue 14:
    the metrics name every host and guest); unset, /metrics stays open. Checked before any query."""
    if expected is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized(
            "/metrics needs the metrics token: set Prometheus' `authorization: {credentials: ...}` "
            "(or `bearer_token`) to the value of SPLITWATCH_METRICS_TOKEN",
            code="invalid_metrics_token",
        )


def install_metrics(app: FastAPI, engine: Engine, settings: Settings) -> CollectorRegistry:
    """Mount GET /metrics (no token unless settings.metrics_token) on `app`, served from a
    registry of its own, and make the ingest figures counted on it (app.state.ingest_metrics;
    app/edge.py's EdgeMiddleware needs it to count the ingest requests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine, settings))
    app.state.metrics_registry = registry
    shared_dir = os.environ.get(MULTIPROC_ENV)
    if shared_dir:
        # Several workers (serve --workers N): count into the shared files, read all of them.
        multiprocess.MultiProcessCollector(registry, path=shared_dir)  # type: ignore[no-untyped-call]
        ingest = IngestMetrics(None)
        atexit.register(multiprocess.mark_process_dead, os.getpid(), shared_dir)
    else:
        ingest = IngestMetrics(registry)
    app.state.ingest_metrics = ingest  # counted by app/edge.py and app/api/ingest.py

    def metrics(request: Request) -> Response:
        # Sync: FastAPI runs it in the threadpool, so the queries never block the event loop.
        # The Accept header picks the format: OpenMetrics when asked for, else the classic
        # text format 0.0.4 that every Prometheus version reads.
        check_metrics_token(settings.metrics_token, request.headers.get("authorization"))
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"Content-Type": content_type})

    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        operation_id="metrics",
        summary="Prometheus metrics (text exposition format); the metrics token when one is set",
        tags=["health"],
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics."},
            **error_responses(401),
        },
    )
    return registry


__all__ = ["MULTIPROC_ENV", "DatabaseCollector", "IngestMetrics", "ingest_metrics", "install_metrics"]
