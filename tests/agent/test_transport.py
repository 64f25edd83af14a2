"""Transport and sender against a real HTTP server on 127.0.0.1 with scripted answers (#4)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import random
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from agent.errors import ConfigError
from agent.payload import (
    Action,
    CpuState,
    Event,
    Gap,
    GapReason,
    HostInfo,
    HostState,
    Kind,
    Mode,
    Payload,
    Source,
)
from agent.spool import Spool, encode_record
from agent.transport import Rejected, Retry, Sender, Sent, Transport, parse_retry_after
from tests.tls import make_certs

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]
    client_port: int = 0  # one port per TCP connection: keep-alive shows as one port

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.body["events"]]


@dataclass
class ScriptedServer:
    """Answers POSTs from `script` (one answer or a function of the request per call, in order),
    then with `default`; records every request it got, body decoded."""

    port: int = 0
    script: list[Answer | Callable[[Request], Answer]] = field(default_factory=list)
    default: Callable[[Request], Answer] | None = None
    requests: list[Request] = field(default_factory=list)
    delay_s: float = 0.0
    scheme: str = "http"
    close_after_answer: bool = False  # drop every connection once answered, as an idle timeout does

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def answer(self, req: Request) -> Answer:
        if self.script:
            item = self.script.pop(0)
            return item(req) if callable(item) else item
        if self.default is not None:
            return self.default(req)
        return ok(req)


def ok(req: Request) -> Answer:
    return 200, {}, json.dumps({"accepted": len(req.body["events"]), "duplicates": 0}).encode()


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    body = {"error": "x", "message": message, "details": None}
    return status, headers or {}, json.dumps(body).encode()


@contextmanager
def scripted_server(*, http11: bool = False, tls: ssl.SSLContext | None = None) -> Iterator[ScriptedServer]:
    """`http11`: HTTP/1.1 with keep-alive, as uvicorn answers (the default HTTP/1.0 closes after
    each answer); `tls`: https with that server context."""
    state = ScriptedServer(scheme="https" if tls is not None else "http")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if http11 else "HTTP/1.0"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            data = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            headers = {k.lower(): v for k, v in self.headers.items()}
            req = Request(headers, raw, json.loads(data), self.client_address[1])
            state.requests.append(req)
            if state.delay_s:
                time.sleep(state.delay_s)
            status, headers, body = state.answer(req)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            if state.close_after_answer:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as srv:
        yield srv


def payload(
    seqs: list[int], *, boot_id: str = "boot-a", state: bool = False, gaps: tuple[Gap, ...] = ()
) -> bytes:
    host = HostInfo("host-1", boot_id, "6.8.0", "Xeon", "0.1.0")
    events = tuple(
        Event(Source.KMSG, s, AT, Kind.SPLIT_LOCK, "CPU 0/KVM", 100, 99, "0x401136", 1, Action.WARN)
        for s in seqs
    )
    host_state = (
        HostState(
            AT + timedelta(seconds=seqs[0] if seqs else 0),
            Mode.WARN,
            None,
            1,
            True,
            True,
            (CpuState(0, 1 << 29, True, True),),
        )
        if state
        else None
    )
    return Payload(host, host_state, events, gaps).to_json().encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool", max_bytes=1 << 30)
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_sender(spool: Spool, server: ScriptedServer, clock: Clock, **kw: Any) -> Sender:
    transport = Transport(server.url, "agent-token-1", timeout_s=kw.pop("timeout_s", 5.0))
    return Sender(spool, transport, clock=clock, rng=random.Random(7), **kw)


# --------------------------------------------------------------------------- 2xx


def test_accepted_batch_is_acknowledged_and_leaves_the_spool(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    spool.append([payload([1, 2])])
    report = make_sender(spool, server, clock).send_pending()
    assert spool.depth == 0
    assert report.records == 1 and report.accepted == 2
    assert server.requests[0].seqs == [1, 2]


def test_body_is_gzip_json_with_the_bearer_token(spool: Spool, server: ScriptedServer, clock: Clock) -> None:
    spool.append([payload([1])])
    make_sender(spool, server, clock).send_pending()
    req = server.requests[0]
    assert req.headers["authorization"] == "Bearer agent-token-1"
    assert req.headers["content-encoding"] == "gzip"
    assert req.headers["content-type"] == "application/json"
    assert req.raw[:2] == b"\x1f\x8b"
    assert req.body["schema"] == 1 and req.body["host"]["name"] == "host-1"


def test_consecutive_payloads_of_one_boot_go_in_one_post_with_the_newest_state(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    spool.append([payload([1], state=True)])
    spool.append([payload([2, 3], state=True)])
    spool.append([payload([4])])
    make_sender(spool, server, clock).send_pending()
    (req,) = server.requests
    assert req.seqs == [1, 2, 3, 4]
    assert req.body["state"]["observed_at"] == "2026-11-24T12:00:02.000000Z"


def test_payloads_of_another_boot_are_never_merged(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    spool.append(
        [payload([1], boot_id="boot-a"), payload([1], boot_id="boot-b"), payload([2], boot_id="boot-b")]
    )
    make_sender(spool, server, clock).send_pending()
    assert [(r.body["host"]["boot_id"], r.seqs) for r in server.requests] == [
        ("boot-a", [1]),
        ("boot-b", [1, 2]),
    ]
    assert spool.depth == 0


def test_a_batch_holds_at_most_batch_max_events(spool: Spool, server: ScriptedServer, clock: Clock) -> None:
    for i in range(5):
        spool.append([payload([i * 2, i * 2 + 1])])
    make_sender(spool, server, clock, batch_max_events=4).send_pending()
    assert [len(r.seqs) for r in server.requests] == [4, 4, 2]
    assert sorted(s for r in server.requests for s in r.seqs) == list(range(10))


def test_health_figures_ride_along_in_every_post(spool: Spool, server: ScriptedServer, clock: Clock) -> None:
    spool.append([payload([1])])
    make_sender(spool, server, clock, health=lambda: {"spool_depth": 1, "lag_s": 0.5}).send_pending()
    assert server.requests[0].body["health"] == {"spool_depth": 1, "lag_s": 0.5}


def test_spool_full_gaps_are_sent_with_the_next_batch(
    tmp_path: Path, server: ScriptedServer, clock: Clock
) -> None:
    one = len(encode_record(1, payload([10]), 0.0))
    spool = Spool(tmp_path / "small", max_bytes=one)
    spool.append([payload([10])])
    spool.append([payload([11])])  # the first is dropped
    make_sender(spool, server, clock).send_pending()
    (req,) = server.requests
    assert req.seqs == [11]
    assert req.body["gaps"] == [
        {"source": "kmsg", "first_seq": 10, "last_seq": 10, "count": 1, "reason": "spool_full"}
    ]
    assert spool.depth == 0
    spool.close()


# --------------------------------------------------------------------------- 401 / 403


def test_rejected_token_keeps_everything_and_says_how_to_make_one(
    spool: Spool, server: ScriptedServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server.default = lambda req: error(401, "missing or invalid agent token")
    spool.append([payload([1])])
    spool.append(
        [payload([2])],
    )
    sender = make_sender(spool, server, clock)
    with caplog.at_level(logging.ERROR):
        report = sender.send_pending()
    assert spool.depth == 2
    assert report.stopped is not None
    assert f"token rejected by {server.url}/api/v1/ingest: 401 missing or invalid agent token" in caplog.text
    assert "splitwatch token create --role agent --host host-1" in caplog.text
    assert sender.token_rejected is not None


def test_rejected_token_is_tried_and_reported_again_every_pass_not_backed_off(
    spool: Spool, server: ScriptedServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [error(403, "this agent token may write host 'x'"), error(403, "again")]
    spool.append([payload([1])])
    sender = make_sender(spool, server, clock)
    with caplog.at_level(logging.ERROR):
        sender.send_pending()
        sender.send_pending()  # the next pass: same clock, no backoff
    assert len(server.requests) == 2
    assert caplog.text.count("token rejected") == 2
    sender.send_pending()  # the token works again (the default answer is 200)
    assert spool.depth == 0 and sender.token_rejected is None


# --------------------------------------------------------------------------- 413


def too_large_over(limit: int) -> Callable[[Request], Answer]:
    def answer(req: Request) -> Answer:
        if len(req.body["events"]) > limit:
            return error(413, "ingest body as sent is over the limit")
        return ok(req)

    return answer


def test_too_large_batch_is_split_in_halves_and_every_event_arrives_once(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    for i in range(8):
        spool.append([payload([i])])
    server.default = too_large_over(2)
    make_sender(spool, server, clock).send_pending()
    stored = [s for r in server.requests if len(r.seqs) <= 2 for s in r.seqs]
    assert sorted(stored) == list(range(8))
    assert spool.depth == 0


def test_a_single_payload_still_too_large_is_split_by_its_events(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    overrun = Gap(Source.KMSG, 100, 104, 5, GapReason.OVERRUN)
    spool.append([payload(list(range(10)), state=True, gaps=(overrun,))])
    server.default = too_large_over(3)
    make_sender(spool, server, clock).send_pending()
    accepted = [r for r in server.requests if len(r.seqs) <= 3]
    assert sorted(s for r in accepted for s in r.seqs) == list(range(10))
    assert sum(len(r.body["gaps"]) for r in accepted) == 1  # the gap is stored once
    assert sum(r.body["state"] is not None for r in accepted) == 1
    assert spool.depth == 0


def test_one_event_too_large_is_set_aside_not_retried_forever(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    spool.append([payload([1])])
    server.default = lambda req: error(413, "ingest body as sent is over the limit of 1024 bytes")
    sender = make_sender(spool, server, clock)
    sender.send_pending()
    assert spool.depth == 0
    (kept,) = (spool.directory / "rejected").glob("*.json")
    assert "413" in json.loads(kept.read_text())["reason"]


# --------------------------------------------------------------------------- 422


def test_unreadable_payload_is_moved_to_rejected_with_the_servers_message_and_the_rest_is_sent(
    spool: Spool, server: ScriptedServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(4):
        spool.append([payload([i])])

    def refuse_seq_2(req: Request) -> Answer:
        if 2 in req.seqs:
            return (
                422,
                {},
                json.dumps(
                    {
                        "error": "invalid_payload",
                        "message": "ingest payload: body.events.0.tid must be positive",
                        "details": [{"field": "body.events.0.tid", "message": "must be positive"}],
                    }
                ).encode(),
            )
        return ok(req)

    server.default = refuse_seq_2
    sender = make_sender(spool, server, clock)
    with caplog.at_level(logging.ERROR):
        sender.send_pending()
    assert spool.depth == 0
    stored = sorted(s for r in server.requests if 2 not in r.seqs for s in r.seqs)
    assert stored == [0, 1, 3]
    (kept,) = (spool.directory / "rejected").glob("*.json")
    doc = json.loads(kept.read_text())
    assert [e["seq"] for e in doc["payloads"][0]["events"]] == [2]
    assert "body.events.0.tid must be positive" in doc["reason"]
    assert str(kept) in caplog.text
    assert sender.rejected_batches == 1 and spool.rejected_batches == 1


# --------------------------------------------------------------------------- retry


def test_429_with_retry_after_waits_exactly_that_long(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    server.script = [error(429, "slow down", {"Retry-After": "7"})]
    spool.append([payload([1])])
    sender = make_sender(spool, server, clock)
    sender.send_pending()
    assert sender.next_attempt_at == clock.now + 7
    clock.now += 6.9
    sender.send_pending()
    assert len(server.requests) == 1  # still waiting
    clock.now += 0.2
    sender.send_pending()
    assert len(server.requests) == 2 and spool.depth == 0


def test_503_honours_retry_after_as_an_http_date(spool: Spool, server: ScriptedServer, clock: Clock) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    server.script = [error(503, "database could not store the batch", {"Retry-After": later})]
    spool.append([payload([1])])
    sender = make_sender(spool, server, clock)
    sender.send_pending()
    assert 100 < sender.next_attempt_at - clock.now <= 120
    assert spool.depth == 1


class Highest(random.Random):
    """Full jitter drawn at its ceiling: the schedule's upper bound, deterministically."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_server_errors_back_off_exponentially_up_to_the_cap(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    server.default = lambda req: error(500, "boom")
    spool.append([payload([1])])
    transport = Transport(server.url, "t", timeout_s=5)
    sender = Sender(spool, transport, clock=clock, rng=Highest(), backoff_base_s=1.0, backoff_cap_s=30.0)
    waits = []
    for _ in range(8):
        sender.send_pending()
        waits.append(sender.next_attempt_at - clock.now)
        clock.now = sender.next_attempt_at
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    assert spool.depth == 1 and sender.failures == 8


def test_backoff_is_full_jitter_between_zero_and_the_ceiling(spool: Spool, server: ScriptedServer) -> None:
    sender = Sender(spool, Transport(server.url, "t", timeout_s=5), rng=random.Random(7), backoff_cap_s=300)
    sender.failures = 5  # ceiling 16 s
    waits = [sender.backoff_s() for _ in range(500)]
    assert all(0 <= w <= 16 for w in waits)
    assert min(waits) < 1 and max(waits) > 15  # spread over the whole range, not a fixed step


def test_connection_refused_is_a_retry_and_nothing_is_acknowledged(
    spool: Spool, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spool.append([payload([1])])
    sender = Sender(spool, Transport(f"http://127.0.0.1:{port}", "t", timeout_s=2), clock=clock)
    with caplog.at_level(logging.WARNING):
        sender.send_pending()
    assert spool.depth == 1 and sender.failures == 1
    assert "cannot reach" in caplog.text and "1 record(s) wait in the spool" in caplog.text


def test_a_server_that_does_not_answer_in_time_is_a_retry(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    server.delay_s = 1.0
    spool.append([payload([1])])
    sender = make_sender(spool, server, clock, timeout_s=0.2)
    report = sender.send_pending()
    assert spool.depth == 1
    assert report.stopped is not None and "no answer" in report.stopped


def test_recovery_after_failures_resets_the_backoff(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    server.script = [error(502, "bad gateway")]
    spool.append([payload([1])])
    sender = make_sender(spool, server, clock)
    sender.send_pending()
    clock.now = sender.next_attempt_at
    sender.send_pending()
    assert spool.depth == 0 and sender.failures == 0 and sender.last_ack_at is not None


def test_batch_age_lets_records_wait_until_old_enough_or_numerous_enough(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    spool.append([payload([1])])
    sender = make_sender(spool, server, clock, batch_max_age_s=3600, batch_max_events=3)
    sender.send_pending()
    assert server.requests == []
    spool.append([payload([2]), payload([3])])
    sender.send_pending()
    assert [r.seqs for r in server.requests] == [[1, 2, 3]]


def test_shutdown_flush_ignores_backoff(spool: Spool, server: ScriptedServer, clock: Clock) -> None:
    server.script = [error(500, "boom")]
    spool.append([payload([1])])
    sender = make_sender(spool, server, clock, backoff_base_s=100, backoff_cap_s=100)
    sender.send_pending()
    sender.send_pending(force=True, deadline=clock.now + 5)
    assert spool.depth == 0


def test_a_server_without_gzip_gets_plain_bodies(spool: Spool, server: ScriptedServer, clock: Clock) -> None:
    server.script = [error(415, "Content-Encoding 'gzip' is not supported")]
    spool.append([payload([1])])
    make_sender(spool, server, clock).send_pending()
    assert "content-encoding" not in server.requests[1].headers
    assert spool.depth == 0


# --------------------------------------------------------------------------- one POST


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, Sent),
        (202, Sent),
        (401, Rejected),
        (403, Rejected),
        (413, Rejected),
        (422, Rejected),
        (408, Retry),
        (429, Retry),
        (500, Retry),
        (502, Retry),
        (503, Retry),
        (404, Retry),
    ],
)
def test_each_status_maps_to_one_result(server: ScriptedServer, status: int, kind: type) -> None:
    server.script = [(status, {}, b'{"accepted": 1, "duplicates": 0}' if status < 300 else b"{}")]
    transport = Transport(server.url, "t", timeout_s=5)
    assert isinstance(transport.post(payload([1])), kind)
    transport.close()


def test_wrong_url_says_to_check_server(server: ScriptedServer) -> None:
    server.script = [(404, {}, b"not found")]
    result = Transport(server.url, "t", timeout_s=5).post(payload([1]))
    assert isinstance(result, Retry) and "check --server" in result.reason


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("5", 5.0),
        ("0", 0.0),
        ("-3", 0.0),
        ("1e9", 3600.0),
        ("soon", None),
        ("Wed, 25 Nov 2026 03:00:30 GMT", 30.0),
    ],
)
def test_retry_after_header_is_read_as_seconds_or_date(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 11, 25, 3, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds


def test_a_set_stop_event_ends_a_backlog_drain_between_batches(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    stop = threading.Event()
    for i in range(3):
        spool.append([payload([i], boot_id=f"boot-{i}")])  # three boots: three POSTs

    def answer_then_stop(req: Request) -> Answer:
        stop.set()  # SIGTERM arrives while the first batch is in flight
        return ok(req)

    server.script = [answer_then_stop]
    report = make_sender(spool, server, clock).send_pending(stop=stop)
    assert len(server.requests) == 1 and spool.depth == 2
    assert report.stopped == "stopping"


def test_a_pass_stops_sending_at_its_deadline_and_keeps_the_rest(
    spool: Spool, server: ScriptedServer, clock: Clock
) -> None:
    spool.append([payload([1])])
    report = make_sender(spool, server, clock).send_pending(deadline=clock.now)
    assert server.requests == [] and spool.depth == 1
    assert report.stopped == "deadline"


# --------------------------------------------------------------------------- the connection


def test_posts_reuse_one_keep_alive_connection() -> None:
    with scripted_server(http11=True) as server:
        transport = Transport(server.url, "t", timeout_s=5)
        results = [transport.post(payload([i])) for i in range(5)]
        transport.close()
    assert all(isinstance(r, Sent) for r in results)
    assert transport.connections == 1
    assert len({r.client_port for r in server.requests}) == 1


def test_a_connection_the_server_closed_while_idle_is_reopened_without_a_failure() -> None:
    with scripted_server(http11=True) as server:
        server.close_after_answer = True
        transport = Transport(server.url, "t", timeout_s=5)
        results = [transport.post(payload([i])) for i in range(3)]
        transport.close()
    assert all(isinstance(r, Sent) for r in results)
    assert [r.seqs for r in server.requests] == [[0], [1], [2]]  # each sent once
    assert transport.connections == 3


def test_a_redirect_is_not_followed_with_the_token(server: ScriptedServer) -> None:
    server.script = [(307, {"Location": "http://127.0.0.1:9/api/v1/ingest"}, b"")]
    result = Transport(server.url, "t", timeout_s=5).post(payload([1]))
    assert isinstance(result, Retry) and "307" in result.reason and "check --server" in result.reason
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ScriptedServer, Path]]:
    certs = make_certs(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    with scripted_server(http11=True, tls=context) as srv:
        yield srv, certs.ca


def test_https_to_a_server_signed_by_a_private_ca_works_with_ca_file(
    tls_server: tuple[ScriptedServer, Path],
) -> None:
    server, ca = tls_server
    transport = Transport(server.url, "agent-token-1", timeout_s=5, ca_file=ca)
    assert isinstance(transport.post(payload([1])), Sent)
    assert isinstance(transport.post(payload([2])), Sent)
    transport.close()
    assert server.requests[0].headers["authorization"] == "Bearer agent-token-1"
    assert transport.connections == 1


def test_https_without_the_ca_is_refused_and_says_to_pass_ca_file(
    tls_server: tuple[ScriptedServer, Path],
) -> None:
    server, _ca = tls_server
    result = Transport(server.url, "agent-token-1", timeout_s=5).post(payload([1]))
    assert isinstance(result, Retry)
    assert "TLS certificate is not trusted" in result.reason and "--ca-file" in result.reason
    assert server.requests == []  # the token never left the agent


def test_https_to_an_address_the_certificate_does_not_name_is_refused(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "tls", names="DNS:splitwatch.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    with scripted_server(http11=True, tls=context) as server:
        result = Transport(server.url, "t", timeout_s=5, ca_file=certs.ca).post(payload([1]))
    assert isinstance(result, Retry)
    assert "not trusted" in result.reason and "mismatch" in result.reason
    assert server.requests == []


def test_an_unreadable_ca_file_is_a_config_error_with_the_remedy(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match="pass --ca-file a readable PEM file"):
        Transport("https://127.0.0.1:1", "t", timeout_s=1, ca_file=missing)


# --------------------------------------------------------------------------- proxies


@dataclass
class Proxy:
    """A forwarding HTTP proxy on 127.0.0.1: CONNECT tunnels and absolute-form requests, each
    request's first line and Proxy-Authorization recorded."""

    port: int = 0
    lines: list[str] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextmanager
def forwarding_proxy() -> Iterator[Proxy]:
    state = Proxy()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            first = self.rfile.readline().decode().rstrip("\r\n")
            headers = []
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                headers.append(line)
            state.lines.append(first)
            auth = [
                h.decode().split(":", 1)[1].strip()
                for h in headers
                if h.lower().startswith(b"proxy-authorization:")
            ]
            state.auth.append(auth[0] if auth else None)
            method, target, version = first.split(" ")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                upstream = socket.create_connection((parts.hostname, parts.port))
                kept = [h for h in headers if not h.lower().startswith(b"proxy-authorization:")]
                upstream.sendall(f"{method} {parts.path} {version}\r\n".encode() + b"".join(kept) + b"\r\n")
            leftover = self.rfile.peek() if hasattr(self.rfile, "peek") else b""
            if leftover:
                upstream.sendall(self.rfile.read(len(leftover)))
            back = threading.Thread(target=_pipe, args=(upstream, self.connection), daemon=True)
            back.start()
            _pipe(self.connection, upstream)
            back.join(timeout=10)
            upstream.close()

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_http_proxy_from_the_environment_gets_the_absolute_url_and_its_credentials(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with forwarding_proxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url.replace("http://", "http://ops:s%40cret@"))
        monkeypatch.delenv("no_proxy", raising=False)
        transport = Transport(server.url, "agent-token-1", timeout_s=5)
        result = transport.post(payload([1]))
        transport.close()
    assert isinstance(result, Sent), result
    assert proxy.lines == [f"POST {server.url}/api/v1/ingest HTTP/1.1"]
    assert proxy.auth == ["Basic " + base64.b64encode(b"ops:s@cret").decode()]
    assert server.requests[0].headers["authorization"] == "Bearer agent-token-1"


def test_https_goes_through_a_connect_tunnel_and_still_checks_the_certificate(
    tls_server: tuple[ScriptedServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = tls_server
    with forwarding_proxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        trusted = Transport(server.url, "agent-token-1", timeout_s=5, ca_file=ca)
        assert isinstance(trusted.post(payload([1])), Sent)
        trusted.close()
        untrusted = Transport(server.url, "agent-token-1", timeout_s=5).post(payload([2]))
    assert proxy.lines == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.0"] * 2
    assert isinstance(untrusted, Retry) and "not trusted" in untrusted.reason
    assert [r.seqs for r in server.requests] == [[1]]


def test_no_proxy_sends_directly(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with forwarding_proxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert isinstance(Transport(server.url, "t", timeout_s=5).post(payload([1])), Sent)
    assert proxy.lines == []


def test_a_proxy_url_that_is_not_http_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "socks5://127.0.0.1:1080")
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(ConfigError, match="not an http:// proxy URL"):
        Transport("https://splitwatch.example", "t", timeout_s=1)
