"""How uvicorn serves the app: the options `serve`, `demo` and the tests' servers share.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but a connection that
sends nothing, or only part of a request head, is kept forever: a few thousand such sockets
(slowloris) hold the server's file descriptors and memory without a token (issue 14).
HeadTimeoutProtocol arms a timer when a connection opens and when a new request begins, and
disarms it once the head is complete; a client that has not sent a whole request head by then
is disconnected. The body has its own bound (max_body_bytes, read as it arrives).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings

# httptools' own cap on a request head (URL + headers) is 80 KiB; h11's is 16 KiB. Ours for
# h11, should uvicorn fall back to it.
MAX_HEAD_BYTES = 64 * 1024


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head does not arrive."""

    def __init__(
        self,
        config: Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        head_timeout_s: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # the next request on a kept-alive connection
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config / uvicorn.run keywords for the timeouts and limits of `settings`."""
    return {
        "http": functools.partial(HeadTimeoutProtocol, head_timeout_s=settings.head_timeout_s),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }


__all__ = ["MAX_HEAD_BYTES", "HeadTimeoutProtocol", "uvicorn_options"]
