"""Connections that send nothing, or half a request head, are closed (issue 14).

uvicorn alone times out an idle keep-alive connection but keeps a connection that never
completes its request head forever (a slowloris holds sockets and memory with no token).
app/server.py closes one after SPLITWATCH_HEAD_TIMEOUT_S; these tests watch a real socket.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from app.settings import Settings
from tests.app.conftest import Server

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

HEAD_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.0


@pytest.fixture
def strict(settings: Settings) -> Iterator[Server]:
    srv = Server(
        settings.model_copy(update={"head_timeout_s": HEAD_TIMEOUT_S, "keep_alive_timeout_s": KEEP_ALIVE_S})
    )
    srv.start()
    yield srv
    srv.stop()


def one_answer(sock: socket.socket) -> bytes:
    """One whole answer, head and Content-Length body: a head and its body may come in two
    segments, and the next answer must not start with the last one's body."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        if not chunk:
            return got
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def closed_within(sock: socket.socket, limit_s: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection or limit_s passes: (closed, bytes read)."""
    sock.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "],
    ids=["nothing", "partial-header"],
)
def test_a_connection_without_a_whole_request_head_is_closed(strict: Server, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", strict.port)) as sock:
        sock.sendall(sent)
        closed, answer = closed_within(sock, HEAD_TIMEOUT_S + 10)
    assert closed, f"the server kept a connection that sent {sent!r} open"
    assert answer == b""  # closed, not answered


def test_a_header_trickling_in_does_not_reset_the_deadline(strict: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < HEAD_TIMEOUT_S + 10:
            try:
                sock.sendall(b"X-A: b\r\n")  # a slowloris: one header line at a time
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed, _ = closed_within(sock, 0.3)
            if closed:
                break
    assert closed


def test_an_idle_keep_alive_connection_is_closed_and_a_prompt_one_is_served(strict: Server) -> None:
    with socket.create_connection(("127.0.0.1", strict.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        assert one_answer(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # kept alive: served
        assert one_answer(sock).startswith(b"HTTP/1.1 200")
        closed, _ = closed_within(sock, KEEP_ALIVE_S + 10)
    assert closed
