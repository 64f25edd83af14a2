"""Sending the spool to the backend: batches over one keep-alive connection, retried with backoff.

`Transport.post()` makes one POST /api/v1/ingest (gzip body, Bearer token, timeouts) and says
what happened as one of three values:

    Sent(accepted, duplicates)   2xx: the backend stored the batch (or had it already)
    Retry(after_s, reason)       try again later: network error, 5xx, 408, 429/503 (after_s from
                                 Retry-After), or an answer we cannot act on (404: wrong --server)
    Rejected(status, reason)     the backend will never take this as is: 401/403 (the token),
                                 413 (too large: the body, or too many guests new to the
                                 host for one batch, #14), 422 (a payload it cannot read)

`Sender` turns spool records into batches and results into spool actions (#4):
  - consecutive records of the same host and boot merge into one POST of at most
    batch_max_events events (the newest state wins; events and gaps are concatenated);
  - Sent -> ack; Retry -> exponential backoff (base, cap) with full jitter, or Retry-After;
  - 401/403 -> stop for this pass, keep everything, say so loudly once per pass (the token
    must be fixed by a human; one request per pass notices when it is);
  - 413 -> split the batch in halves, down to one record, then that record's events;
  - 422 -> split the same way to find the record the backend refuses, move it to
    spool_dir/rejected/ with the server's message and carry on with the rest.
Nothing is acknowledged that the backend did not answer 2xx for. A resend is harmless: ingest is
idempotent on (host, boot_id, source, seq).
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Union
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies, proxy_bypass

from agent.errors import ConfigError
from agent.spool import Spool, SpoolRecord

log = logging.getLogger("splitwatch.agent.transport")

USER_AGENT = "splitwatch-agent"
MAX_BATCH_BYTES = 1024 * 1024  # uncompressed; 1000 events are ~300 KB, and a backlog flush stays small in RSS
MAX_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True)
class Sent:
    accepted: int
    duplicates: int


@dataclass(frozen=True)
class Retry:
    after_s: float | None  # None: the sender's backoff decides
    reason: str


@dataclass(frozen=True)
class Rejected:
    status: int
    reason: str


Result = Union[Sent, Retry, Rejected]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if absent
    or unreadable; bounded to [0, 1 h] so a broken proxy cannot park the agent for days."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            at = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        seconds = (at - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _server_message(status: int, reason: str, body: bytes) -> str:
    """The backend's one error shape {"error","message","details"}, as one line."""
    try:
        answer = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip().replace("\n", " ")
        return text[:300] or reason or str(status)
    if not isinstance(answer, dict):
        return str(answer)[:300]
    message = str(answer.get("message") or answer.get("error") or reason)
    details = answer.get("details")
    if isinstance(details, list) and details:
        parts = []
        for d in details[:5]:
            if isinstance(d, dict):
                parts.append(f"{d.get('field', '?')}: {d.get('message', d)}")
        if parts:
            message += " (" + "; ".join(parts) + ")"
    return message


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Certificate and host-name verification always on: the system's trust store, or only
    `ca_file` (a private CA's PEM bundle) when given."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot use {ca_file} as the CA bundle ({getattr(exc, 'strerror', None) or exc}): "
            "pass --ca-file a readable PEM file: the certificate of the CA that signed the backend's "
            "certificate"
        ) from exc


def proxy_for(scheme: str, host: str) -> tuple[str, int, str | None] | None:
    """The HTTP proxy the environment names for `scheme` (https_proxy, http_proxy; no_proxy
    exempts), as (host, port, Proxy-Authorization value or None); None: connect directly.
    The same variables the agent honoured with httpx before (issue 17)."""
    url = getproxies().get(scheme)
    if not url or proxy_bypass(host):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"{scheme}_proxy={url!r} is not an http:// proxy URL: set it to http://proxy.example:3128 "
            "(or add the backend to no_proxy)"
        )
    auth = None
    if parts.username is not None:
        import base64

        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(pair).decode()
    return parts.hostname, parts.port or 80, auth


# A kept-alive connection the server closed while idle fails on the next request with one of
# these before any answer: the request is sent again once on a new connection (ingest is
# idempotent, so even a request the server did read is harmless to repeat).
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class Transport:
    """One keep-alive HTTP/1.1 connection (http.client) to the backend's ingest endpoint."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout_s: float,
        gzip_bodies: bool = True,
        agent_version: str = "0",
        ca_file: Path | None = None,
    ) -> None:
        self.url = server.rstrip("/") + "/api/v1/ingest"
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"server {server!r} is not an http(s) URL: pass --server https://splitwatch.example:8000"
            )
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path
        self._tls = tls_context(ca_file) if self._https else None
        self._proxy = proxy_for(parts.scheme, parts.hostname)
        if self._proxy is not None and not self._https:
            # Through a proxy, plain HTTP asks for the absolute URL (RFC 9112, 3.2.2).
            self._path = self.url
        self.gzip_bodies = gzip_bodies
        self._timeout_s = timeout_s
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": f"{USER_AGENT}/{agent_version}",
        }
        # Plain HTTP through a proxy: its credentials ride on each request.
        self._via: dict[str, str] = {}
        if self._proxy is not None and self._proxy[2] is not None and not self._https:
            self._via["Proxy-Authorization"] = self._proxy[2]
        self._conn: http.client.HTTPConnection | None = None
        self.connections = 0  # opened so far: keep-alive keeps this at 1 while the server lets it

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """The open connection (reused: True) or a new one; `timeout` applies to each socket
        operation (connect, send, every read) of this request."""
        if self._conn is not None:
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
            self._conn.timeout = timeout
            return self._conn, True
        conn: http.client.HTTPConnection
        host, port = self._host, self._port
        if self._proxy is not None:
            host, port = self._proxy[0], self._proxy[1]
        if self._https:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
            if self._proxy is not None:
                # CONNECT tunnel: TLS (and its certificate check) is end to end with the backend.
                auth = {"Proxy-Authorization": self._proxy[2]} if self._proxy[2] else None
                conn.set_tunnel(self._host, self._port, headers=auth)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._conn = conn
        self.connections += 1
        return conn, False

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exchange(
        self, data: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, str, str | None, bytes]:
        """One request and its whole answer: (status, reason, Retry-After, body). Raises OSError
        or http.client.HTTPException; never follows a redirect (our token goes to --server only)."""
        for attempt in (1, 2):
            conn, reused = self._connection(timeout)
            try:
                conn.request("POST", self._path, body=data, headers={**self._headers, **headers, **self._via})
                response = conn.getresponse()
                body = response.read()
            except _STALE:
                self._drop()
                if reused and attempt == 1:
                    continue
                raise
            except BaseException:
                self._drop()
                raise
            if response.will_close:
                self._drop()
            return response.status, response.reason, response.getheader("Retry-After"), body
        raise AssertionError("unreachable")  # pragma: no cover

    def post(self, body: bytes, *, timeout_s: float | None = None) -> Result:
        headers = {}
        data = body
        if self.gzip_bodies:
            # Level 1: kmsg JSON shrinks ~10x at a fraction of the CPU of the default level.
            data = gzip.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        timeout = self._timeout_s if timeout_s is None else max(timeout_s, 0.1)
        try:
            status, reason, retry_after, answer = self._exchange(data, headers, timeout)
        except socket.timeout as exc:  # not yet TimeoutError on 3.9
            return Retry(None, f"no answer from {self.url} within {timeout}s ({type(exc).__name__})")
        except ssl.SSLCertVerificationError as exc:
            return Retry(
                None,
                f"cannot reach {self.url}: its TLS certificate is not trusted ({exc.verify_message}); "
                "pass --ca-file with the CA that signed it",
            )
        except (OSError, http.client.HTTPException) as exc:
            return Retry(None, f"cannot reach {self.url} ({type(exc).__name__}: {exc})")
        if 200 <= status < 300:
            try:
                counts = json.loads(answer)
                return Sent(int(counts.get("accepted", 0)), int(counts.get("duplicates", 0)))
            except (ValueError, AttributeError, TypeError):
                return Sent(0, 0)  # 2xx is the contract; the counts are only for the log
        message = f"{status} {_server_message(status, reason, answer)}"
        if status in (401, 403, 413, 422):
            return Rejected(status, message)
        if status == 415 and self.gzip_bodies:
            # A proxy or an old backend that does not take gzip: send plain from now on.
            self.gzip_bodies = False
            log.warning("%s does not accept gzip bodies (%s): sending them uncompressed", self.url, message)
            return self.post(body, timeout_s=timeout_s)
        after = parse_retry_after(retry_after) if status in (429, 503) else None
        if status >= 500 or status in (408, 429):
            return Retry(after, f"{self.url} answered {message}")
        return Retry(
            None,
            f"{self.url} answered {message}, which the agent cannot act on: check --server "
            "(it should be the backend's base URL, e.g. https://splitwatch.example:8000)",
        )

    def close(self) -> None:
        self._drop()


def merge_bodies(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """One payload from consecutive payloads of one host/boot: the newest host facts and state,
    every event and gap in order."""
    state = None
    for body in bodies:
        if body.get("state") is not None:
            state = body["state"]
    merged: dict[str, Any] = {
        "schema": bodies[-1].get("schema", 1),
        "host": bodies[-1]["host"],
        "state": state,
        "events": [e for b in bodies for e in b.get("events") or []],
        "gaps": [g for b in bodies for g in b.get("gaps") or []],
    }
    return merged


def _boot(body: dict[str, Any]) -> tuple[Any, Any]:
    host = body.get("host") or {}
    return host.get("name"), host.get("boot_id")


@dataclass
class FlushReport:
    batches: int = 0
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    set_aside: int = 0
    stopped: str | None = None  # why sending stopped before the spool was empty


class _Stop(Exception):
    def __init__(self, result: Retry | Rejected) -> None:
        super().__init__(result.reason)
        self.result = result


class _SetAside(Exception):
    def __init__(self, result: Rejected) -> None:
        super().__init__(result.reason)
        self.result = result


class Sender:
    """Drains the spool through the transport; owns the backoff state. Single-threaded."""

    def __init__(
        self,
        spool: Spool,
        transport: Transport,
        *,
        batch_max_events: int = 1000,
        batch_max_age_s: float = 0.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        health: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.spool = spool
        self.transport = transport
        self.batch_max_events = batch_max_events
        self.batch_max_age_s = batch_max_age_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_batch_bytes = max_batch_bytes
        self._health = health
        self._clock = clock
        self._rng = rng or random.Random()
        self.failures = 0  # consecutive failed attempts
        self.next_attempt_at = 0.0  # clock() time before which no attempt is made
        self.token_rejected: str | None = None
        self.last_ack_at: datetime | None = None
        self.rejected_batches = 0
        self.last_error: str | None = None

    def backoff_s(self) -> float:
        """Full jitter (AWS architecture blog, 2015): uniform in [0, min(cap, base * 2^(n-1)))."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(self.failures - 1, 62))
        return self._rng.uniform(0.0, ceiling)

    def _due(self) -> bool:
        if self.batch_max_age_s <= 0:
            return True
        oldest = self.spool.oldest_at
        if oldest is not None and time.time() - oldest >= self.batch_max_age_s:
            return True
        return self.spool.depth >= self.batch_max_events

    def send_pending(
        self, *, force: bool = False, deadline: float | None = None, stop: threading.Event | None = None
    ) -> FlushReport:
        """Send what waits, batch after batch, until the spool is empty, the backend says stop,
        `deadline` (a clock() time) passes or `stop` is set. `force` ignores backoff and batch
        age (the last flush at shutdown)."""
        report = FlushReport()
        if self.spool.depth == 0:
            return report
        now = self._clock()
        if not force and (now < self.next_attempt_at or not self._due()):
            report.stopped = "waiting"
            return report
        while self.spool.depth:
            if stop is not None and stop.is_set():
                report.stopped = "stopping"
                break
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                report.stopped = "deadline"
                break
            records, bodies = self._next_batch()
            if not records:
                break
            try:
                self._send(records, bodies, report, remaining)
            except _Stop as stop:
                self._on_failure(stop.result)
                report.stopped = stop.result.reason
                break
            if self.failures:
                log.warning(
                    "backend %s reachable again after %d failed attempt(s): sending what the spool kept",
                    self.transport.url,
                    self.failures,
                )
            self.failures = 0
            self.next_attempt_at = 0.0
            self.token_rejected = None
            self.last_error = None
            report.batches += 1
        return report

    def _next_batch(self) -> tuple[list[SpoolRecord], list[dict[str, Any]]]:
        peeked = self.spool.peek(max_records=max(self.batch_max_events, 1), max_bytes=self.max_batch_bytes)
        records: list[SpoolRecord] = []
        bodies: list[dict[str, Any]] = []
        events = 0
        for rec in peeked:
            try:
                body = json.loads(rec.body)
                if not isinstance(body, dict) or not isinstance(body.get("host"), dict):
                    raise ValueError("not a payload object")
            except ValueError as exc:
                # Checksummed bytes that are not a payload can only be an agent bug: keep them
                # for a human rather than retrying them forever.
                self.spool.set_aside([rec.id], f"spool record is not a payload ({exc})")
                self.rejected_batches += 1
                continue
            n = len(body.get("events") or [])
            if records and (_boot(body) != _boot(bodies[0]) or events + n > self.batch_max_events):
                break
            records.append(rec)
            bodies.append(body)
            events += n
        return records, bodies

    def _encode(self, body: dict[str, Any]) -> bytes:
        if self._health is not None:
            body = dict(body, health=self._health())
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def _send(
        self,
        records: list[SpoolRecord],
        bodies: list[dict[str, Any]],
        report: FlushReport,
        timeout_s: float | None,
    ) -> None:
        """Send records as one POST; on 413/422 bisect. Acks what was taken; raises _Stop."""
        result = self.transport.post(self._encode(merge_bodies(bodies)), timeout_s=timeout_s)
        if isinstance(result, Sent):
            self._acked(records, result, report)
            return
        if isinstance(result, Retry) or result.status in (401, 403):
            raise _Stop(result)
        if len(records) > 1:
            half = len(records) // 2
            self._send(records[:half], bodies[:half], report, timeout_s)
            self._send(records[half:], bodies[half:], report, timeout_s)
            return
        if result.status == 413 and len(bodies[0].get("events") or []) > 1:
            try:
                sent = self._send_split_events(bodies[0], report, timeout_s)
            except _SetAside as refused:
                # Parts already stored stay stored; the whole payload is kept for a human.
                self._set_aside(records[0], refused.result, report)
                return
            self._acked(records, sent, report)
            return
        self._set_aside(records[0], result, report)

    def _send_split_events(self, body: dict[str, Any], report: FlushReport, timeout_s: float | None) -> Sent:
        events = body.get("events") or []
        half = len(events) // 2
        # The state and gaps travel with the first half only: each is stored once.
        parts = [dict(body, events=events[:half]), dict(body, events=events[half:], state=None, gaps=[])]
        accepted = duplicates = 0
        for part in parts:
            result = self.transport.post(self._encode(part), timeout_s=timeout_s)
            if isinstance(result, Retry) or (isinstance(result, Rejected) and result.status in (401, 403)):
                raise _Stop(result)
            if isinstance(result, Rejected):
                if result.status == 413 and len(part["events"]) > 1:
                    result = self._send_split_events(part, report, timeout_s)
                else:
                    raise _SetAside(result)
            accepted += result.accepted
            duplicates += result.duplicates
        return Sent(accepted, duplicates)

    def _acked(self, records: list[SpoolRecord], sent: Sent, report: FlushReport) -> None:
        self.spool.ack([r.id for r in records])
        self.last_ack_at = datetime.now(timezone.utc)
        report.records += len(records)
        report.accepted += sent.accepted
        report.duplicates += sent.duplicates

    def _set_aside(self, record: SpoolRecord, result: Rejected, report: FlushReport) -> None:
        path = self.spool.set_aside([record.id], result.reason)
        self.rejected_batches += 1
        report.set_aside += 1
        log.error(
            "backend %s refused a payload for good (%s): it was moved to %s and will not be retried; "
            "the rest of the spool is still sent. Please report this with that file",
            self.transport.url,
            result.reason,
            path,
        )

    def _on_failure(self, result: Retry | Rejected) -> None:
        self.last_error = result.reason
        if isinstance(result, Rejected):
            host = "NAME"
            peeked = self.spool.peek(1, self.max_batch_bytes)
            if peeked:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    host = str(json.loads(peeked[0].body)["host"]["name"])
            self.token_rejected = result.reason
            # Not a backoff: a human must act. One request per pass notices when they have.
            log.error(
                "token rejected by %s: %s. Nothing is lost: %d record(s) stay in the spool and are sent "
                "once a valid token is used. Create an agent token with "
                "`splitwatch token create --role agent --host %s` and restart the agent with --token",
                self.transport.url,
                result.reason,
                self.spool.depth,
                host,
            )
            return
        self.failures += 1
        wait = result.after_s if result.after_s is not None else self.backoff_s()
        self.next_attempt_at = self._clock() + wait
        log.warning(
            "could not send to the backend: %s. %d record(s) wait in the spool; "
            "attempt %d failed, next in %.1f s%s",
            result.reason,
            self.spool.depth,
            self.failures,
            wait,
            " (as the server's Retry-After asks)" if result.after_s is not None else "",
        )
