"""The app's background loops (token revocation poll, alerting, retention) end the same way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

log = logging.getLogger("splitwatch.background")


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


async def stop_side_by_side(stops: Mapping[str, Awaitable[None]]) -> list[str]:
    """Run the components' stops at once, each within its own grace time: shutdown then takes the
    longest of them, not their sum (alerting alone may wait twice the webhook timeout for a
    delivery under way). A stop that fails is logged and does not keep the others, or what the
    caller stops after them (the writer, which flushes the last batches), from running.
    Returns the names of those that failed."""
    results = await asyncio.gather(*stops.values(), return_exceptions=True)
    failed = []
    for name, result in zip(stops, results, strict=True):
        if isinstance(result, BaseException):
            log.error("shutdown: stopping %s failed: %r", name, result)
            failed.append(name)
    return failed
