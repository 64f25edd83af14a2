"""The vCPU time misery mode took, as a lower bound from true counts. Pure.

In warn mode with misery on (app/insights/eras.py: 5.19+, mitigate=1 or no sysctl yet) every
trapped split lock runs split_lock_warn(): `msleep_interruptible(10)`, then a wait on the
global `buslock_sem` (one core at a time). So each trap costs its thread at least 10 ms: the
sleep is rounded up to whole jiffies (16 ms at HZ=250) and the semaphore wait comes on top. A
signal cuts the sleep short, but then the thread re-executes the instruction and traps again,
and that second trap is counted too.

Only true counts give a figure: tracefs kprobe hits (source `tracefs`). A kernel-log line
(source `kmsg`, `import`) is a first sighting — since 5.19 printed once per thread and rate
limited — so a guest seen only in the log has "no count known", never an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.insights.eras import MISERY_SLEEP_MS

NO_COUNT = (
    "no count known: only kernel-log sightings (printed once per thread since 5.19, rate limited), "
    "which are not counts; enable the agent's tracefs source for true counts"
)
ERA_UNKNOWN = "no figure: the kernel era (and so whether misery mode was on) is unknown for these traps"


@dataclass(frozen=True, slots=True)
class Tally:
    """Split-lock traps of one guest, host or fleet over a window, by what can be claimed."""

    counted: int = 0  # tracefs counts of traps taken while misery mode was on
    sighted: int = 0  # kernel-log lines (kmsg, import) while misery mode was on
    uncertain: int = 0  # traps or lines while it is unknown whether misery mode was on

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.counted + other.counted, self.sighted + other.sighted, self.uncertain + other.uncertain
        )


@dataclass(frozen=True, slots=True)
class Cost:
    vcpu_seconds: float | None  # at least this much; None: no count known
    vcpu_share: float | None  # vcpu_seconds / window seconds (0.01: 1% of one vCPU's time)
    counted_traps: int
    uncounted_sightings: int
    reason: str | None  # why vcpu_seconds is None


def throttling_cost(tally: Tally, window_s: float) -> Cost:
    """count x 10 ms over the window; None with the reason when no true count exists."""
    if tally.counted:
        # In integer milliseconds first: 3 traps are 0.03 s, not 0.030000000000000002.
        seconds = tally.counted * MISERY_SLEEP_MS / 1000
        share = seconds / window_s if window_s > 0 else None
        return Cost(seconds, share, tally.counted, tally.sighted, None)
    if tally.sighted:
        return Cost(None, None, 0, tally.sighted, NO_COUNT)
    if tally.uncertain:
        return Cost(None, None, 0, 0, ERA_UNKNOWN)
    return Cost(0.0, 0.0, 0, 0, None)
