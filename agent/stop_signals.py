"""SIGTERM and SIGINT set a `threading.Event`, with no lock taken inside the signal handler.

Python runs a signal handler in the main thread between two bytecodes, whatever that thread
was doing. `Event.set()` takes the Event's Condition lock, and `Event.wait()` holds that same
(non-reentrant) lock for a moment on every call: a handler that sets the Event while the main
thread is inside `wait()` blocks on a lock its own thread holds, forever. The Python docs warn
against locks in handlers; it happened here: a thread holding the GIL keeps the main thread
paused inside `wait()` long enough for a signal to land there (a `splitwatch demo` hung after
SIGTERM in CI; a loop of `stop.wait()` with SIGTERM sent at random moments and a busy thread
beside it deadlocks within a few hundred signals, seen in `py-spy dump` as `Event.set` called
from the handler inside `Event.wait`).

So the handler only writes the signal's number to a pipe (a system call, no Python lock), and a
daemon thread reads it and sets the Event, outside any signal context. A wait on the Event
ends within microseconds of the signal, as before. Standard library only (the agent's rule).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(
    stop: threading.Event, on_signal: Callable[[signal.Signals], None] | None = None
) -> Iterator[None]:
    """While inside: SIGTERM and SIGINT set `stop` (after `on_signal(signum)`, which runs in a
    thread of its own, so it may log or take locks). The previous handlers come back on exit.
    Outside the main thread (where Python allows no handler) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def handler(signum: int, _frame: FrameType | None) -> None:
        # Nothing here may take a lock: a failed write means the pipe is full of signals the
        # relay has not read yet, which set `stop` anyway.
        with contextlib.suppress(OSError):
            os.write(write_fd, bytes([signum]))

    relay = threading.Thread(
        target=_relay, args=(read_fd, stop, on_signal), name="splitwatch-stop-signals", daemon=True
    )
    relay.start()
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        os.close(write_fd)  # the relay reads the end of the pipe and closes its own end


def _relay(read_fd: int, stop: threading.Event, on_signal: Callable[[signal.Signals], None] | None) -> None:
    try:
        while True:
            data = os.read(read_fd, 64)
            if not data:
                return
            for signum in data:
                if on_signal is not None:
                    # A report that fails must not keep the stop from happening.
                    with contextlib.suppress(Exception):
                        on_signal(signal.Signals(signum))
                stop.set()
    finally:
        os.close(read_fd)


__all__ = ["STOP_SIGNALS", "stop_on_signals"]
