"""The durable outbox and its sender: every notice a row of `webhook_delivery`, written in
the same transaction as the alert state change (app/alerts/evaluate.py), sent by the process
holding the alerting lease, and kept as the delivery log.

A delivery row: msg_id (the `webhook-id` header, the same on every retry, so receivers
dedupe), the body as rendered when the alert changed, status pending -> delivered | failed |
gone (a test notice: sending -> delivered | failed), attempts, next_attempt_at, and the
latest attempt's status code, error, latency and the first bytes of the answer.

Sending (issue 12):
- per webhook one delivery at a time, oldest first: a receiver sees firing before resolved,
  and a rate-limited receiver is not hammered;
- 2xx delivered; 429 waits for Retry-After (seconds or an HTTP date, capped); 410 Gone
  marks the delivery gone and turns the webhook off (enabled false, gone_at, a reason the
  API shows); 3xx is final (redirects are not followed: a webhook URL that moved is fixed by
  the admin, not by us following it somewhere else); other 4xx final; 5xx, timeouts and
  connection errors retry with exponential backoff and jitter up to webhook_backoff_cap_s,
  until webhook_max_attempts;
- connect and read timeouts of webhook_timeout_s;
- the URL is checked again before each send (app/alerts/urls.py), and the connection goes to
  the address that was checked.
A restarted backend finds its pending rows and sends them; a notice already answered 2xx is
never sent again. A backend killed in the middle of a send sends that one again after the
restart (at least once; the unchanged webhook-id lets the receiver drop the copy).

Alertmanager API targets (format alertmanager_api) get the state changes through the outbox,
and the holder also re-posts every firing alert to them every ALERTMANAGER_RESEND_S, as
Prometheus does, so Alertmanager never times the alert out (resolve_timeout) while it fires.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import functools
import ipaddress
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from sqlalchemy import Connection, Engine, func, insert, select, update
from starlette.concurrency import run_in_threadpool

from app.alerts.bodies import Notice, alertmanager_api_body, render
from app.alerts.rules import dashboard_link, labels_match
from app.alerts.signing import new_msg_id, signed_headers
from app.alerts.urls import IpAddress, Target, UrlRefused, check_url
from app.settings import Settings
from app.store.tables import alert, alert_rule, webhook, webhook_delivery

log = logging.getLogger("splitwatch.webhooks")

BACKOFF_BASE_S = 1.0
SNIPPET_BYTES = 512
ALERTMANAGER_RESEND_S = 60.0
ALERTMANAGER_API_PATH = "/api/v2/alerts"
USER_AGENT = "splitwatch-webhook/0.1"
SENDER_POLL_S = 1.0

DeliveryStatus = Literal["pending", "sending", "delivered", "failed", "gone"]


# ------------------------------------------------------------------------------ writing notices


def enabled_webhooks(conn: Connection) -> list[Any]:
    return list(
        conn.execute(
            select(webhook.c.id, webhook.c.format, webhook.c.match).where(webhook.c.enabled.is_(True))
        ).all()
    )


def receiver_name(webhook_id: int) -> str:
    return f"webhook-{webhook_id}"


def alert_notice(row: Any, rule_name: str, settings: Settings) -> Notice:
    labels: dict[str, str] = dict(row.labels)
    return Notice(
        alert_id=row.id,
        rule=rule_name,
        status="resolved" if row.status == "resolved" else "firing",
        labels=labels,
        annotations=dict(row.annotations),
        starts_at=row.starts_at or row.pending_since,
        ends_at=row.ends_at,
        generator_url=generator_url(labels, settings),
        fingerprint=row.fingerprint,
        value=row.value,
    )


def generator_url(labels: Mapping[str, str], settings: Settings) -> str:
    return f"{settings.base_url()}/{dashboard_link(labels.get('host'), labels.get('guest'))}"


def _alert_row(conn: Connection, alert_id: int) -> tuple[Any, str]:
    row = conn.execute(
        select(alert, alert_rule.c.name.label("rule_name"))
        .join(alert_rule, alert_rule.c.id == alert.c.rule_id)
        .where(alert.c.id == alert_id)
    ).one()
    return row, row.rule_name


def _enqueue(
    conn: Connection,
    webhook_id: int,
    fmt: str,
    alert_id: int | None,
    notice: Notice,
    settings: Settings,
    now: dt.datetime,
    kind: str,
) -> None:
    body = render(fmt, notice, receiver_name(webhook_id), settings.base_url())
    conn.execute(
        insert(webhook_delivery).values(
            webhook_id=webhook_id,
            alert_id=alert_id,
            msg_id=new_msg_id(),
            notice=kind,
            body=body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def notify(
    conn: Connection, hooks: Sequence[Any], alert_id: int, settings: Settings, now: dt.datetime
) -> int:
    """Firing notices of one alert to every enabled webhook whose match fits; rows written."""
    row, rule_name = _alert_row(conn, alert_id)
    notice = alert_notice(row, rule_name, settings)
    n = 0
    for hook in hooks:
        if labels_match(notice.labels, hook.match or {}):
            _enqueue(conn, hook.id, hook.format, alert_id, notice, settings, now, "firing")
            n += 1
    return n


def notify_resolved(conn: Connection, alert_id: int, settings: Settings) -> int:
    """Resolved notices to the webhooks that were told it fired (and only those)."""
    row, rule_name = _alert_row(conn, alert_id)
    notice = alert_notice(row, rule_name, settings)
    now = row.ends_at or dt.datetime.now(dt.UTC)
    told = conn.execute(
        select(webhook.c.id, webhook.c.format)
        .where(
            webhook.c.id.in_(
                select(webhook_delivery.c.webhook_id).where(
                    webhook_delivery.c.alert_id == alert_id, webhook_delivery.c.notice == "firing"
                )
            )
        )
        .order_by(webhook.c.id)
    ).all()
    for hook in told:
        _enqueue(conn, hook.id, hook.format, alert_id, notice, settings, now, "resolved")
    return len(told)


# ------------------------------------------------------------------------------ what an answer means


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one HTTP attempt got (status None: no answer, `error` says why)."""

    status: int | None
    error: str | None
    latency_ms: int | None
    snippet: str | None
    retry_after: str | None = None
    location: str | None = None
    final: bool = False  # refused before sending (URL check): no retry can help


@dataclass(frozen=True, slots=True)
class Decision:
    status: DeliveryStatus
    next_attempt_at: dt.datetime
    error: str | None
    gone: bool = False


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_s(attempts: int, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential (1 s doubling per attempt) up to the cap, with "equal jitter": half fixed,
    half random, so receivers coming back are not hit by every sender at once."""
    ceiling = min(cap_s, BACKOFF_BASE_S * 2.0 ** max(0, attempts - 1))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


def decide(
    attempt: Attempt, attempts: int, now: dt.datetime, settings: Settings, rng: random.Random | None = None
) -> Decision:
    """The delivery's next state after its `attempts`-th attempt."""
    code = attempt.status
    if attempt.final:
        return Decision("failed", now, attempt.error)
    if code is not None and 200 <= code < 300:
        return Decision("delivered", now, None)
    if code == 410:
        return Decision("gone", now, "the receiver answered 410 Gone: the webhook was disabled", gone=True)
    if code is not None and 300 <= code < 400:
        where = f" to {attempt.location}" if attempt.location else ""
        return Decision(
            "failed",
            now,
            f"the receiver answered {code}, a redirect{where}: redirects are not followed, "
            "point the webhook at the final URL",
        )
    if code is not None and 400 <= code < 500 and code not in (408, 425, 429):
        return Decision("failed", now, f"the receiver answered {code}: the notice was refused, not retried")
    error = attempt.error or f"the receiver answered {code}"
    if attempts >= settings.webhook_max_attempts:
        return Decision("failed", now, f"{error}; gave up after {attempts} attempts")
    wait = None
    if code == 429:
        wait = parse_retry_after(attempt.retry_after, now)
        if wait is not None:
            wait = min(wait, settings.webhook_retry_after_max_s)
    if wait is None:
        wait = backoff_s(attempts, settings.webhook_backoff_cap_s, rng)
    return Decision("pending", now + dt.timedelta(seconds=wait), error)


# ------------------------------------------------------------------------------ one HTTP attempt


def _pinned(target: Target, ip: IpAddress) -> tuple[str, dict[str, str], dict[str, Any]]:
    """URL to the checked address, the Host header, and TLS SNI/verification for the name."""
    literal = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    default = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default else f"{target.host}:{target.port}"
    if ":" in target.host and not target.host.startswith("["):
        host_header = f"[{target.host}]" if target.port == default else f"[{target.host}]:{target.port}"
    extensions: dict[str, Any] = {}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host
    return f"{target.scheme}://{literal}:{target.port}{target.path}", {"Host": host_header}, extensions


async def post(
    client: httpx.AsyncClient, url: str, body: str, headers: Mapping[str, str], settings: Settings
) -> Attempt:
    """One POST of `body` to `url`, with the URL checked (and pinned) first; never raises."""
    try:
        target, ip = await run_in_threadpool(check_url, url, settings.webhook_allow_private)
    except UrlRefused as exc:
        return Attempt(None, f"URL refused: {exc}", None, None, final=True)
    pinned, host_header, extensions = _pinned(target, ip)
    all_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **host_header, **headers}
    started = time.perf_counter()
    try:
        async with client.stream(
            "POST", pinned, content=body.encode(), headers=all_headers, extensions=extensions
        ) as response:
            chunks = bytearray()
            async for chunk in response.aiter_bytes():
                chunks.extend(chunk)
                if len(chunks) >= SNIPPET_BYTES:
                    break
            latency = int((time.perf_counter() - started) * 1000)
            return Attempt(
                response.status_code,
                None,
                latency,
                bytes(chunks[:SNIPPET_BYTES]).decode("utf-8", errors="replace"),
                retry_after=response.headers.get("retry-after"),
                location=response.headers.get("location"),
            )
    except httpx.TimeoutException as exc:
        latency = int((time.perf_counter() - started) * 1000)
        return Attempt(
            None, f"timed out after {settings.webhook_timeout_s:g}s ({type(exc).__name__})", latency, None
        )
    except httpx.HTTPError as exc:
        latency = int((time.perf_counter() - started) * 1000)
        return Attempt(None, f"cannot reach the receiver ({type(exc).__name__}: {exc})", latency, None)


def make_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=False,
        timeout=httpx.Timeout(settings.webhook_timeout_s, connect=settings.webhook_timeout_s),
        trust_env=False,  # a proxy from the environment would bypass the address check
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
    )


def delivery_request(hook: Any, msg_id: str, body: str, now: dt.datetime) -> tuple[str, dict[str, str]]:
    """URL and signature headers of one send of a delivery to `hook`."""
    if hook.format == "alertmanager_api":
        return hook.url.rstrip("/") + ALERTMANAGER_API_PATH, {}
    return hook.url, signed_headers(hook.secret, msg_id, body, now)


# ------------------------------------------------------------------------------ recording


def record(
    conn: Connection,
    delivery_id: int,
    webhook_id: int,
    attempt: Attempt,
    decision: Decision,
    attempted_at: dt.datetime,
    from_status: str = "pending",
) -> None:
    conn.execute(
        update(webhook_delivery)
        .where(webhook_delivery.c.id == delivery_id, webhook_delivery.c.status == from_status)
        .values(
            status=decision.status,
            attempts=webhook_delivery.c.attempts + 1,
            next_attempt_at=decision.next_attempt_at,
            last_status_code=attempt.status,
            last_error=decision.error,
            latency_ms=attempt.latency_ms,
            response_snippet=attempt.snippet,
            last_attempt_at=attempted_at,
            delivered_at=attempted_at if decision.status == "delivered" else None,
        )
    )
    if decision.gone:
        conn.execute(
            update(webhook)
            .where(webhook.c.id == webhook_id)
            .values(
                enabled=False,
                gone_at=attempted_at,
                disabled_reason=f"the receiver answered 410 Gone at {attempted_at.isoformat()}: it asked "
                "to be removed; fix the URL and enable the webhook again (PATCH enabled=true)",
            )
        )


@dataclass(frozen=True, slots=True)
class Due:
    delivery_id: int
    webhook_id: int
    msg_id: str
    body: str
    attempts: int


def due_deliveries(engine: Engine, now: dt.datetime, busy: set[int]) -> list[Due]:
    """The oldest pending delivery of each enabled webhook not busy, when it is due."""
    d = webhook_delivery
    with engine.connect() as conn:
        heads = (
            select(d.c.webhook_id, func.min(d.c.id).label("id"))
            .where(d.c.status == "pending")
            .group_by(d.c.webhook_id)
            .subquery()
        )
        rows = conn.execute(
            select(d.c.id, d.c.webhook_id, d.c.msg_id, d.c.body, d.c.attempts, d.c.next_attempt_at)
            .join(heads, heads.c.id == d.c.id)
            .join(webhook, webhook.c.id == d.c.webhook_id)
            .where(webhook.c.enabled.is_(True))
        ).all()
    return [
        Due(r.id, r.webhook_id, r.msg_id, r.body, r.attempts)
        for r in rows
        if r.webhook_id not in busy and r.next_attempt_at <= now
    ]


def _hook(engine: Engine, webhook_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(webhook).where(webhook.c.id == webhook_id)).one_or_none()


# ------------------------------------------------------------------------------ the sender


class Sender:
    def __init__(self, engine: Engine, writer: Any, settings: Settings, leadership: Any) -> None:
        self.engine = engine
        self.writer = writer
        self.settings = settings
        self.leadership = leadership
        self._busy: dict[int, asyncio.Task[None]] = {}
        self._last_resend = 0.0
        self._wake: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._wake = wake
        poll = min(SENDER_POLL_S, self.settings.alert_interval)
        async with make_client(self.settings) as client:
            while not stop.is_set():
                wake.clear()
                if self.leadership.held():
                    try:
                        await self._tick(client, loop.time())
                    except Exception as exc:  # the database may be away: try again next tick
                        log.warning("webhook sender: %s", exc)
                waiter = asyncio.ensure_future(wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
            if self._busy:
                await asyncio.wait(list(self._busy.values()), timeout=self.settings.webhook_timeout_s * 2)

    async def _tick(self, client: httpx.AsyncClient, loop_now: float) -> None:
        now = dt.datetime.now(dt.UTC)
        due = await run_in_threadpool(due_deliveries, self.engine, now, set(self._busy))
        for item in due:
            task = asyncio.create_task(self._deliver(client, item))
            self._busy[item.webhook_id] = task
            task.add_done_callback(functools.partial(self._done, item.webhook_id))
        if loop_now - self._last_resend >= ALERTMANAGER_RESEND_S:
            self._last_resend = loop_now
            await self.resend_to_alertmanager(client)

    def _done(self, webhook_id: int, _task: asyncio.Task[None]) -> None:
        self._busy.pop(webhook_id, None)
        # The webhook's next notice goes now, not at the next poll: one notice a poll per
        # webhook took ~17 minutes to tell a receiver of a 1,000-host outage, and a critical
        # alert behind it waited as long. (A retry waits anyway: not due until next_attempt_at.)
        if self._wake is not None:
            self._wake.set()

    async def _deliver(self, client: httpx.AsyncClient, item: Due) -> None:
        hook = await run_in_threadpool(_hook, self.engine, item.webhook_id)
        if hook is None or not hook.enabled:
            return
        attempted_at = dt.datetime.now(dt.UTC)
        url, headers = delivery_request(hook, item.msg_id, item.body, attempted_at)
        attempt = await post(client, url, item.body, headers, self.settings)
        decision = decide(attempt, item.attempts + 1, dt.datetime.now(dt.UTC), self.settings)
        if decision.status != "delivered":
            log.info(
                "webhook %d delivery %d: %s (%s)", hook.id, item.delivery_id, decision.status, decision.error
            )
        try:
            await self.writer.run(
                lambda conn: record(conn, item.delivery_id, hook.id, attempt, decision, attempted_at)
            )
        except Exception as exc:  # not recorded: it stays pending and is sent again (at least once)
            log.warning(
                "webhook %d delivery %d: could not record the attempt: %s", hook.id, item.delivery_id, exc
            )

    async def resend_to_alertmanager(self, client: httpx.AsyncClient) -> int:
        """Re-post every firing alert to each Alertmanager API target (see the module docstring),
        RESEND_PAGE alerts a post; the number of alerts posted. Every one, however many fire: an
        alert left out is one Alertmanager resolves by itself after its resolve_timeout, while it
        still fires here (a mass outage opens an AgentSilent per host, thousands)."""
        hooks = await run_in_threadpool(_alertmanager_hooks, self.engine)
        posted = 0
        after = 0
        while hooks:
            firing = await run_in_threadpool(_firing_page, self.engine, after)
            for hook in hooks:
                mine = [
                    alert_notice(row, row.rule_name, self.settings)
                    for row in firing
                    if labels_match(dict(row.labels), hook.match or {})
                ]
                if not mine:
                    continue
                body = json.dumps(alertmanager_api_body(mine), separators=(",", ":"))
                url, headers = delivery_request(hook, "", body, dt.datetime.now(dt.UTC))
                attempt = await post(client, url, body, headers, self.settings)
                posted += len(mine)
                if attempt.status is None or not 200 <= attempt.status < 300:
                    log.warning(
                        "re-posting %d firing alert(s) to Alertmanager webhook %d failed: %s",
                        len(mine),
                        hook.id,
                        attempt.error or attempt.status,
                    )
            if len(firing) < RESEND_PAGE:
                break
            after = firing[-1].id
        return posted


RESEND_PAGE = 1000  # firing alerts read and posted at once (a post of 1,000 is ~1 MB of JSON)


def _alertmanager_hooks(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(webhook).where(webhook.c.enabled.is_(True), webhook.c.format == "alertmanager_api")
            ).all()
        )


def _firing_page(engine: Engine, after: int) -> list[Any]:
    """The next RESEND_PAGE firing alerts whose notices went out, by id, after `after`."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(alert, alert_rule.c.name.label("rule_name"))
                .join(alert_rule, alert_rule.c.id == alert.c.rule_id)
                .where(alert.c.status == "firing", alert.c.notified_at.is_not(None), alert.c.id > after)
                .order_by(alert.c.id)
                .limit(RESEND_PAGE)
            ).all()
        )


# ------------------------------------------------------------------------------ test notices


def test_notice(settings: Settings, now: dt.datetime) -> Notice:
    labels = {"alertname": "SplitwatchTest", "severity": "info"}
    from app.alerts.rules import fingerprint

    return Notice(
        alert_id=None,
        rule="SplitwatchTest",
        status="firing",
        labels=labels,
        annotations={
            "summary": "splitwatch test notice",
            "description": "Sent by `splitwatch webhook test` or "
            "POST /api/v1/webhooks/{id}/test to check that this receiver gets and verifies notices.",
        },
        starts_at=now,
        ends_at=None,
        generator_url=f"{settings.base_url()}/#/fleet",
        fingerprint=fingerprint(labels),
    )


async def send_test(engine: Engine, writer_run: Any, settings: Settings, webhook_id: int) -> int | None:
    """Write a test notice to the delivery log and send it now (one attempt, no retry).
    Returns the delivery id, or None when there is no such webhook."""
    hook = await run_in_threadpool(_hook, engine, webhook_id)
    if hook is None:
        return None
    now = dt.datetime.now(dt.UTC)
    body = render(hook.format, test_notice(settings, now), receiver_name(hook.id), settings.base_url())
    msg_id = new_msg_id()

    def _insert(conn: Connection) -> int:
        return int(
            conn.execute(
                insert(webhook_delivery)
                .values(
                    webhook_id=hook.id,
                    alert_id=None,
                    msg_id=msg_id,
                    notice="test",
                    body=body,
                    status="sending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
                .returning(webhook_delivery.c.id)
            ).scalar_one()
        )

    delivery_id: int = await writer_run(_insert)
    url, headers = delivery_request(hook, msg_id, body, now)
    async with make_client(settings) as client:
        attempt = await post(client, url, body, headers, settings)
    decision = decide(attempt, 1, dt.datetime.now(dt.UTC), settings)
    if decision.status == "pending":  # a test is sent once: what would be retried is reported as failed
        decision = Decision("failed", decision.next_attempt_at, decision.error)
    await writer_run(lambda conn: record(conn, delivery_id, hook.id, attempt, decision, now, "sending"))
    return delivery_id
