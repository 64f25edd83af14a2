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
    splitwatch_metrics_warming                                gauge, 1 while the kept sums of events_total
                                                              and the throttling gauge are not read yet
                                                              (those families absent meanwhile)

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
    splitwatch_ingest_overloaded_total                        counter, answered 503 overloaded, unread

Cardinality: one events_total series per (host, guest, kind, action, source) seen. Guests are
the unbounded label, so past MAX_EVENT_SERIES label sets only the TOP_GUESTS busiest guests keep
their name and the rest are summed under guest="(other)" — per host, so host totals stay exact.
Sums stay monotonic as long as a guest stays on the same side of the cut; a guest crossing it
looks like a counter reset to Prometheus, which rate() tolerates.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import hmac
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CollectorRegistry, Histogram, multiprocess
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import choose_encoder
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from app import metrics_events as events
from app.background import finish
from app.errors import Unauthorized, error_responses
from app.metrics_render import Family, render
from app.settings import Settings
from app.store.backend_break import recent_breaks
from app.store.insights import host_throttling
from app.store.status import host_status
from app.store.tables import alert, alert_rule, gap, guest, host, webhook_delivery

log = logging.getLogger("splitwatch.metrics")

MAX_EVENT_SERIES = 5000
TOP_GUESTS = 200
OTHER_GUEST = "(other)"
# events_total sums the whole of rollup_1h (1.5 M rows at 10,000 hosts over 30 days), split in
# two (app/metrics_events.py): the rows of the last hour or two, re-read after EVENTS_CACHE_S
# (a counter a few seconds old is still a counter; an HA pair of Prometheus servers shares the
# read), and the older hours' sums, kept. Those are re-read after EVENTS_CACHE_S too when that
# takes under INLINE_READ_S (a small fleet: every figure as fresh as before), else every
# EVENTS_BASE_S in a background thread, the scrapes meanwhile served the kept sums: only events
# arriving hours late (an agent's backlog) wait that long to be counted. Their first read starts
# with the process (DatabaseFigures.warm, from the app's lifespan), not at its first scrape.
EVENTS_CACHE_S = 5.0
EVENTS_BASE_S = 300.0
INLINE_READ_S = 0.25
# The throttling gauge is a fixed trailing window, not a counter: it comes from the same rule as
# GET /api/v1/insights/throttling (the state in force from host_state history decides which
# traps slept), and a late host_state row may re-classify old traps, which a counter could
# not take back. Computing it reads a week of rollups and state changes: kept for a minute
# (re-read in the background like the events' base when that is not quick).
THROTTLE_WINDOW = dt.timedelta(days=7)
THROTTLE_CACHE_S = 60.0

# A scrape waits at most this long for the kept figures a process has not read yet (they
# are read in the background from startup on). On a small fleet they are read within a few
# ms, on a middling one within a few tenths of a second: a scrape right after startup is still
# complete. At fleet size (seconds) waiting longer would gain nothing: the scrape answers
# without those families and with splitwatch_metrics_warming 1, and the rest of it (~0.8 s at
# 10,000 hosts, while the warming reads take the other core) stays under the bench's 2 s bar,
# a fifth of Prometheus' default 10 s scrape_timeout.
WARM_WAIT_S = 0.5
# The warming read retries after a failure (database down at startup), backing off to this.
WARM_RETRY_S = (0.5, 30.0)

T = TypeVar("T")


class Kept(Generic[T]):
    """A figure read from the database and kept for `max_age()` seconds. Stale, it is re-read in
    the scrape when its last read took under INLINE_READ_S; else a background thread re-reads
    it while scrapes get the kept one. Until the first read is done (`warm`, from startup) a
    scrape waits for it a bounded time, then goes without. One read at a time: concurrent
    scrapes share one."""

    def __init__(
        self, engine: Engine, read: Callable[[Connection], T], max_age: Callable[[float], float], what: str
    ) -> None:
        self._engine = engine
        self._read = read
        self._max_age = max_age  # seconds, from the last read's duration
        self._what = what
        self._reading = threading.Lock()  # held for a whole read
        self._state = threading.Lock()  # held for a glance at what is kept
        self._value: T | None = None
        self._ready = threading.Event()  # set once a value is kept
        self._at = 0.0  # time.monotonic() when the kept value was read
        self._cost = 0.0  # seconds its read took
        self._refreshing = False
        self._warming = False  # warm() is reading (or retrying) the first value
        self._stopped = threading.Event()
        self._in_read: Any = None  # the DB-API connection of the read under way (stop interrupts it)

    def get(self, wait: float) -> T | None:
        """The kept value (re-read first when stale and quick to read); None when none has
        been read yet and none arrives within `wait` seconds (a read is then under way)."""
        with self._state:
            value = self._value
            if value is not None and (self._fresh() or self._cost >= INLINE_READ_S):
                if not self._fresh():
                    self._start()
                return value
            if value is None and not self._warming:
                self._start()  # no warm() (an app without its lifespan), or it gave up
        if value is None:
            self._ready.wait(wait)
            with self._state:
                return self._value
        with self._reading:  # stale and quick to read: read it here
            with self._state:
                if self._fresh():  # read meanwhile
                    return self._value
            return self._load()  # errors reach the scrape: database_up 0

    @property
    def ready(self) -> bool:
        """A value is kept (the first read is done)."""
        return self._ready.is_set()

    def warm(self) -> None:
        """Read the first value now, retrying with back-off until it is kept or stop() is
        called. Blocking: run it in a thread (DatabaseFigures.warm)."""
        with self._state:
            self._warming = True
        delay = WARM_RETRY_S[0]
        try:
            while not self._stopped.is_set():
                try:
                    with self._reading:
                        with self._state:
                            if self._value is not None:
                                return
                        self._load()
                    return
                except Exception as exc:
                    if self._stopped.is_set():
                        return  # interrupted by stop(): not a failure
                    log.warning(
                        "metrics: reading %s failed (%s); trying again in %.1fs", self._what, exc, delay
                    )
                self._stopped.wait(delay)
                delay = min(delay * 2, WARM_RETRY_S[1])
        finally:
            with self._state:
                self._warming = False

    def stop(self) -> None:
        """No more reads; the one under way is interrupted (its connection goes back to the pool)."""
        self._stopped.set()
        with self._state:
            conn = self._in_read
            if conn is None:
                return
            try:
                if isinstance(conn, sqlite3.Connection):
                    conn.interrupt()
                else:  # psycopg: asks the server to cancel the statement running
                    conn.cancel()
            except Exception as exc:  # the read ended meanwhile
                log.debug("metrics: interrupting the %s read: %s", self._what, exc)

    def _start(self) -> None:  # with self._state held
        if not self._refreshing and not self._stopped.is_set():
            self._refreshing = True
            name = f"splitwatch-metrics-{self._what}"
            threading.Thread(target=self._refresh, name=name, daemon=True).start()

    def _fresh(self) -> bool:  # with self._state held
        return self._value is not None and time.monotonic() - self._at < self._max_age(self._cost)

    def _load(self) -> T:  # with self._reading held
        started = time.monotonic()
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for all of the read's statements (SQLite's transaction is one).
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with self._state:
                if self._stopped.is_set():
                    raise RuntimeError("metrics: stopped")
                self._in_read = conn.connection.dbapi_connection
            try:
                value = self._read(conn)
            finally:
                # Before the connection goes back to the pool: stop() never interrupts another use.
                with self._state:
                    self._in_read = None
        with self._state:
            self._value, self._at, self._cost = value, time.monotonic(), time.monotonic() - started
        self._ready.set()
        return value

    def _refresh(self) -> None:
        try:
            with self._reading:
                with self._state:
                    fresh = self._fresh()  # a scrape may have read it meanwhile
                if not fresh:
                    self._load()
        except Exception as exc:  # kept as it was; the next stale scrape tries again
            log.warning("metrics: reading %s failed (%s): the kept figures are served", self._what, exc)
        finally:
            with self._state:
                self._refreshing = False


def _in_thread(fn: Callable[[], None], what: str) -> asyncio.Future[None]:
    """Run `fn` in a daemon thread of its own; the future is done when it returns. Not the
    loop's executor: the loop's end waits for its threads, and a read that shutdown could not
    interrupt (stop()) must not hold the process up."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            fn()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(finished)

    threading.Thread(target=run, name=f"splitwatch-metrics-warm-{what}", daemon=True).start()
    return done


def _base_age(cost: float) -> float:
    return EVENTS_CACHE_S if cost < INLINE_READ_S else EVENTS_BASE_S


class DatabaseFigures:
    """The database's families for each scrape (app/metrics_render.py writes them out)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._base: Kept[events.Base] = Kept(
            engine,
            lambda conn: events.read_base(conn, dt.datetime.now(dt.UTC), MAX_EVENT_SERIES, TOP_GUESTS),
            _base_age,
            "event sums",
        )
        # The rows after the base's hours: (the base they extend, sums, guest names they add).
        self._live: tuple[float, events.Base, dict[events.Key, int], dict[int, str]] | None = None
        self._live_lock = threading.Lock()
        self._throttle: Kept[dict[int, float | None]] = Kept(
            engine, self._throttling, lambda _cost: THROTTLE_CACHE_S, "throttling"
        )

        self._warming: asyncio.Task[None] | None = None

    def warm(self) -> None:
        """From startup (the app's lifespan): read the kept figures in the background, side by
        side, so that a process's first scrape does not wait for them (each retries until read)."""

        async def both() -> None:
            await asyncio.gather(
                _in_thread(self._base.warm, "base"), _in_thread(self._throttle.warm, "throttle")
            )

        self._warming = asyncio.create_task(both(), name="splitwatch-metrics-warming")

    async def stop(self) -> None:
        """At shutdown: the reads under way are interrupted, the warming ends."""
        self._base.stop()
        self._throttle.stop()
        await finish(self._warming, timeout=5)
        self._warming = None

    def read(self) -> list[Family]:
        """Every database family, read now; splitwatch_database_up 0 alone when that failed.
        The kept families are absent until first read (splitwatch_metrics_warming 1)."""
        try:
            with self._engine.connect() as conn:
                families = self._read(conn)
        except SQLAlchemyError as exc:
            log.warning("metrics: database query failed (%s): reporting splitwatch_database_up 0", exc)
            families, up = [], 0.0
        else:
            up = 1.0
        families.append(
            Family(
                "splitwatch_database_up",
                "gauge",
                "1 when the scrape could read the database, else 0.",
                (),
                [((), up)],
            )
        )
        families.append(
            Family(
                "splitwatch_metrics_warming",
                "gauge",
                "1 while this process has not yet read the sums some families need (since it started): "
                "they are absent from the scrape meanwhile; 0 once every family is served.",
                (),
                [((), 0.0 if self._base.ready and self._throttle.ready else 1.0)],
            )
        )
        return families

    def _read(self, conn: Connection) -> list[Family]:
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
        # Each kept figure waits for its first read at most until the same deadline.
        deadline = time.monotonic() + WARM_WAIT_S
        base = self._base.get(WARM_WAIT_S)
        out = []
        if base is not None:  # else absent: a partial sum would look like a counter reset
            live, live_names = self._live_sums(conn, base)
            out.append(
                Family(
                    "splitwatch_events",
                    "counter",
                    "Split and bus locks observed (sum of event counts), by host, guest, what the host did, "
                    'kind and source. guest="(host)": plain host processes.',
                    ("host", "guest", "action", "kind", "source"),
                    events.samples(base, live, live_names, host_names),
                )
            )
        gaps = conn.execute(
            select(gap.c.host_id, gap.c.reason, func.sum(gap.c.count)).group_by(gap.c.host_id, gap.c.reason)
        ).all()
        out.append(
            Family(
                "splitwatch_gaps",
                "counter",
                "Events lost and counted by the agents (sum of gap counts).",
                ("host", "reason"),
                [((host_names.get(h, f"#{h}"), reason), float(total or 0)) for h, reason, total in gaps],
            )
        )
        now = dt.datetime.now(dt.UTC)
        breaks = recent_breaks(conn, now)  # the backend's own outages are no host's silence
        last_seen: list[tuple[tuple[str, ...], float]] = []
        cpus: list[tuple[tuple[str, ...], float]] = []
        status: list[tuple[tuple[str, ...], float]] = []
        consistency: list[tuple[tuple[str, ...], float]] = []
        needs_action: list[tuple[tuple[str, ...], float]] = []
        for row in hosts:
            last_seen_at = row.last_seen_at if row.agent_reported else None
            if last_seen_at is not None:  # none: no agent ever reported (an imported host)
                last_seen.append(((row.name,), last_seen_at.timestamp()))
            for state, n in (("on", row.cpus_on), ("off", row.cpus_off), ("error", row.cpus_error)):
                cpus.append(((row.name, state), float(n)))
            verdict = host_status(
                last_seen_at=last_seen_at,
                verdict=row.verdict,
                reason=None,
                details=None,
                since=None,
                now=now,
                silent_after_s=self._settings.silent_after_s,
                breaks=breaks,
            )
            status.append(((row.name, verdict.status), 1.0))
            consistency.append(((row.name, verdict.verdict), 1.0))
            needs_action.append(((row.name,), 1.0 if verdict.needs_action else 0.0))
        # One series per host for status and verdict (the current one, value 1), not one per
        # possible word: 11 statuses x 10,000 hosts would be 110,000 series of zeros.
        out += [
            Family(
                "splitwatch_host_last_seen_timestamp_seconds", "gauge",
                "When the host's agent last reported.", ("host",), last_seen,
            ),
            Family(
                "splitwatch_host_cpus", "gauge", "CPUs by split-lock detection state in the latest sample.",
                ("host", "state"), cpus,
            ),
            Family(
                "splitwatch_host_status", "gauge",
                "1 for the host's current status: silent, else its consistency verdict, else unknown "
                "(only the current status is exported).",
                ("host", "status"), status,
            ),
            Family(
                "splitwatch_host_consistency", "gauge",
                "1 for the agent's newest consistency verdict on the host (kept while it is silent; "
                "unknown when none was sent).",
                ("host", "verdict"), consistency,
            ),
            Family(
                "splitwatch_host_needs_action", "gauge",
                "1 when the host's status needs action (drift, stuck_off, inconsistent_config, "
                "foreign_hypervisor), else 0.",
                ("host",), needs_action,
            ),
            Family("splitwatch_hosts", "gauge", "Hosts known.", (), [((), float(len(hosts)))]),
        ]  # fmt: skip
        guests = conn.execute(select(func.count()).select_from(guest)).scalar()
        out.append(Family("splitwatch_guests", "gauge", "Guests known.", (), [((), float(guests or 0))]))
        throttled = self._throttle.get(max(0.0, deadline - time.monotonic()))
        if throttled is not None:
            out.append(
                Family(
                    "splitwatch_throttled_vcpu_seconds_lower_bound",
                    "gauge",
                    "vCPU-seconds split-lock misery mode took at least over the last 7 days: tracefs-counted "
                    "traps while it was on x 10 ms. Absent for a host whose traps were only seen in the "
                    "kernel log (no count known).",
                    ("host",),
                    [((row.name,), v) for row in hosts if (v := throttled.get(row.id, 0.0)) is not None],
                )
            )
        out += self._alerting(conn, now)
        return out

    def _live_sums(self, conn: Connection, base: events.Base) -> tuple[dict[events.Key, int], dict[int, str]]:
        with self._live_lock:
            cached = self._live
            if cached is not None and cached[1] is base and time.monotonic() - cached[0] < EVENTS_CACHE_S:
                return cached[2], cached[3]
            live, names = events.live_sums(conn, base)
            # Only a successful read is kept: after a failure the next scrape tries again.
            self._live = (time.monotonic(), base, live, names)
            return live, names

    def _throttling(self, conn: Connection) -> dict[int, float | None]:
        until = dt.datetime.now(dt.UTC)
        host_ids = list(conn.execute(select(host.c.id)).scalars())
        return host_throttling(conn, host_ids, since=until - THROTTLE_WINDOW, until=until)

    def _alerting(self, conn: Connection, now: dt.datetime) -> list[Family]:
        """Alerts and the webhook outbox (issue 12), from the database: every worker agrees."""
        firing = conn.execute(
            select(alert_rule.c.name, alert_rule.c.severity, func.count(alert.c.id))
            .join(alert, alert.c.rule_id == alert_rule.c.id)
            .where(alert.c.status == "firing")
            .group_by(alert_rule.c.name, alert_rule.c.severity)
        ).all()
        d = webhook_delivery
        sent = conn.execute(
            select(d.c.webhook_id, d.c.status, func.count())
            .where(d.c.status.in_(("delivered", "failed", "gone")))
            .group_by(d.c.webhook_id, d.c.status)
        ).all()
        depth, oldest = conn.execute(
            select(func.count(), func.min(d.c.created_at)).where(d.c.status == "pending")
        ).one()
        if isinstance(oldest, str):  # SQLite hands an aggregate back as text, untyped
            oldest = dt.datetime.fromisoformat(oldest).replace(tzinfo=dt.UTC)
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        return [
            Family(
                "splitwatch_alerts_firing", "gauge", "Alerts firing now, by rule (alertname) and severity.",
                ("alertname", "severity"), [((name, severity), float(n)) for name, severity, n in firing],
            ),
            Family(
                "splitwatch_notifications", "counter",
                "Webhook deliveries finished, by webhook id and result: delivered (2xx), failed (refused, "
                "or retries exhausted), gone (410).",
                ("webhook", "result"), [((str(w), status), float(n)) for w, status, n in sent],
            ),
            Family(
                "splitwatch_outbox_depth", "gauge", "Webhook deliveries waiting to be sent (pending).",
                (), [((), float(depth or 0))],
            ),
            Family(
                "splitwatch_outbox_oldest_age_seconds", "gauge",
                "Age of the oldest pending webhook delivery; 0 when none waits.", (), [((), age)],
            ),
        ]  # fmt: skip


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
        self.overloaded = PromCounter(
            "splitwatch_ingest_overloaded",
            "Ingest requests this process answered 503 overloaded, unread: it was already working "
            "on SPLITWATCH_INGEST_MAX_IN_FLIGHT of them.",
            registry=registry,
        )
        # Both results exist from the start: rate() sees a 0 before the first duplicate.
        self.accepted = self.events.labels(result="accepted")
        self.duplicates = self.events.labels(result="duplicate")
        self._requests_by_status: dict[int, PromCounter] = {}

    def batch(self, accepted: int, duplicates: int) -> None:
        # A count of 0 adds nothing: skipped, as a steady agent's batch has no duplicates (#13:
        # every inc() takes the value's lock).
        if accepted:
            self.accepted.inc(accepted)
        if duplicates:
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
    registry = CollectorRegistry(auto_describe=False)  # the ingest figures
    database = DatabaseFigures(engine, settings)
    app.state.metrics_registry = registry
    app.state.metrics_database = database  # warmed and stopped by the app's lifespan (app/main.py)
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
        families = database.read()  # every query now, before the first byte goes out

        def body() -> Iterator[bytes]:
            # Written out piece by piece (a fleet's text is tens of MB); then the ingest
            # figures, whose encoder ends OpenMetrics with its EOF line.
            yield from render(families, encoder)
            yield encoder(registry)

        return StreamingResponse(body(), headers={"Content-Type": content_type})

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


__all__ = ["MULTIPROC_ENV", "DatabaseFigures", "IngestMetrics", "ingest_metrics", "install_metrics"]
