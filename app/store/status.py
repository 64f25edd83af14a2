"""Host status, the one rule: `silent`, else `drift`, else `ok`. Pure: values in, a verdict out.

- silent: the agent has not reported for longer than `silent_after_s` (settings, default 300).
  A silent host's other figures are stale, so silence wins over drift.
- drift: the mode says split-lock detection is on (warn or fatal, and the CPU supports it), yet
  some core read TEST_CTRL bit 29 off in `drift_streak` (default 3) consecutive samples. One
  read cannot tell: warn mode clears the bit for ~2 ticks after each trap (DESIGN.md §1), so
  ingest keeps a per-CPU streak (`host.cpu_off_streak`) and we only compare it here.
- ok: neither.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "drift", "silent"]
STATUSES: tuple[Status, ...] = ("ok", "drift", "silent")

# Modes in which the kernel keeps #AC detection on (ratelimit:N turns #AC off, DESIGN.md §1).
DETECTING_MODES = frozenset({"warn", "fatal"})


@dataclass(frozen=True, slots=True)
class HostStatus:
    status: Status
    drifting_cpus: tuple[int, ...]


def drifting_cpus(
    mode: str | None,
    sld_supported: bool | None,
    cpu_off_streak: Mapping[str, object] | None,
    drift_streak: int,
) -> tuple[int, ...]:
    """CPUs read off `drift_streak` samples in a row while the mode says detection is on."""
    if mode not in DETECTING_MODES or not sld_supported or not cpu_off_streak:
        return ()
    cpus: list[int] = []
    for cpu, streak in cpu_off_streak.items():
        # The JSON column keys are strings; a malformed entry is skipped, not fatal.
        try:
            cpu_number = int(cpu)
        except ValueError:
            continue
        if isinstance(streak, int) and not isinstance(streak, bool) and streak >= drift_streak:
            cpus.append(cpu_number)
    return tuple(sorted(cpus))


def host_status(
    *,
    last_seen_at: dt.datetime,
    mode: str | None,
    sld_supported: bool | None,
    cpu_off_streak: Mapping[str, object] | None,
    now: dt.datetime,
    silent_after_s: float,
    drift_streak: int,
) -> HostStatus:
    drifting = drifting_cpus(mode, sld_supported, cpu_off_streak, drift_streak)
    if (now - last_seen_at).total_seconds() > silent_after_s:
        return HostStatus("silent", drifting)
    if drifting:
        return HostStatus("drift", drifting)
    return HostStatus("ok", ())
