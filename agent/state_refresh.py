"""Send the host state only when it says something new (#13): steady-state bodies shrink.

A 32-CPU host's state is ~3 KB of the ~3.9 KB a quiet host sends every 10 s, and it is the
same sample after sample. The payload allows `state: null`; the backend then moves the host's
liveness (last_seen_at) and stores the events, and keeps the state it holds. So a pass carries
its state only when one of these holds:

- it differs from the last state sent in anything but `observed_at` (mode, ratelimit,
  mitigate, support flags, any CPU's MSR reading or error, and whatever a newer HostState
  carries), or the host's identity changed (boot, kernel, agent version);
- a core reads split-lock detection off, or cannot be read, while the mode says it should be
  on: the backend counts such samples one by one before it calls the host drifting, so each
  is sent (a healthy fleet sends none of these);
- `refresh_s` passed since the last state sent (default 120 s): the backend's copy is never
  older than that, even if it lost it (a restored database, a host deleted and recreated).
  120 s is well inside the backend's silent threshold (SPLITWATCH_SILENT_AFTER_S, default
  300 s): silence is judged from last_seen_at, which every batch moves, state or not, and a
  state two minutes old is still the one shown, never a stale one past the silent mark.
The first pass after the agent starts always sends its state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from agent.payload import HostState, Mode, Payload

DEFAULT_REFRESH_S = 120.0
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def needs_every_sample(state: HostState) -> bool:
    """A core reads detection off (or unreadable) while the mode says it should be on."""
    if state.mode not in (Mode.WARN, Mode.FATAL) or not state.sld_supported:
        return False
    return any(c.error is not None or c.sld_on is not True for c in state.cpus)


class StateRefresh:
    """Decides, pass by pass, whether the first payload keeps its state (see the module doc)."""

    def __init__(
        self, refresh_s: float = DEFAULT_REFRESH_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._refresh_s = refresh_s
        self._clock = clock
        self._last: tuple[Any, ...] | None = None
        self._last_at = 0.0

    def filter(self, payloads: list[Payload]) -> list[Payload]:
        """The payloads to spool: the state dropped from the first when nothing new is in it."""
        if not payloads or payloads[0].state is None:
            return payloads
        first = payloads[0]
        state = first.state
        assert state is not None
        key = (first.host, replace(state, observed_at=_EPOCH))
        now = self._clock()
        if key == self._last and now - self._last_at < self._refresh_s and not needs_every_sample(state):
            return [replace(first, state=None), *payloads[1:]]
        self._last, self._last_at = key, now
        return payloads
