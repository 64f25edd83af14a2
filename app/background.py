"""The app's background loops (token revocation poll, alerting, retention) end the same way."""

from __future__ import annotations

import asyncio
from typing import Any


async def finish(task: asyncio.Task[Any] | None, timeout: float) -> None:
    """Wait up to `timeout` seconds for a loop that was asked to stop, then cancel it.

    The loop is given the time to end what it is doing (a query, a webhook delivery) so that
    nothing is cut off half-way in the normal case; past the timeout it is cancelled, so a
    stuck database or receiver never holds up the server's shutdown."""
    if task is None:
        return
    try:
        await asyncio.wait_for(task, timeout=timeout)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
