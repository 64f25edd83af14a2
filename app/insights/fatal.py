"""What `split_lock_detect=fatal` would have done with the traps we saw, and whether a host is
ready for it. Pure.

Who gets SIGBUS under fatal (kernel source, arch/x86/kernel/cpu/intel.c, bus_lock.c since 6.13):
- a user task that split-locks: handle_user_split_lock() returns false outside warn mode, so
  exc_alignment_check() sends SIGBUS (the task dies unless it handles SIGBUS itself);
- a KVM vCPU thread whose guest split-locks (#AC not reflected to the guest):
  handle_guest_split_lock() sends SIGBUS outside warn mode, QEMU dies, the guest with it;
- a user task that bus-locks, only on a CPU with bus-lock #DB and WITHOUT split-lock #AC:
  bus_lock_init() turns #DB off in warn and fatal mode wherever #AC exists ("warn and fatal are
  handled by #AC for split lock"), so on such a CPU a bus lock that is not a split lock goes
  unseen and unpunished; where #DB stays on, handle_bus_lock() sends SIGBUS in fatal mode.
  A guest's bus locks never reach handle_bus_lock() (they exit to the VMM, if it asked).
Never: traps the host reflected into a guest that enabled alignment checking itself
(`reflect`), kernel split locks (`oops`: the kernel dies in every mode), ratelimit sleeps.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

# Split-lock actions whose trap would have been a SIGBUS under fatal (sigbus: it already was).
KILLABLE_SPLIT_LOCK_ACTIONS = frozenset({"warn", "throttle", "sigbus", "unknown"})
# Modes in which #AC split-lock detection is on, so a clean window is evidence.
WATCHING_MODES = frozenset({"warn", "fatal"})


def killed_under_fatal(
    kind: str, action: str, *, guest: bool, sld_supported: bool | None, bld_supported: bool | None
) -> bool:
    if kind == "split_lock":
        return action in KILLABLE_SPLIT_LOCK_ACTIONS
    if kind == "bus_lock":
        return not guest and sld_supported is False and bool(bld_supported) and action != "reflect"
    return False


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool | None  # None: the window holds no evidence either way
    verdict: str
    clean_since: dt.datetime | None  # start of the offender-free, watched stretch up to `until`


def _span(seconds: float) -> str:
    days = math.floor(seconds / 86400)
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = math.floor(seconds / 3600)
    return f"{hours} hour{'s' if hours != 1 else ''}"


def host_readiness(
    *,
    offenders: int,
    last_offence_at: dt.datetime | None,
    mode_now: str | None,
    watched_since: dt.datetime | None,
    until: dt.datetime,
) -> Readiness:
    """ "ready: no offender in N days", or why not.

    `watched_since`: the start of the trailing stretch of the window in which #AC detection was
    on (warn or fatal mode on a kernel and CPU with split-lock detection), None when it is not on
    at the window's end. A host that cannot trap has no offenders and proves nothing.
    """
    if offenders:
        last = f", last at {last_offence_at:%Y-%m-%d %H:%M} UTC" if last_offence_at else ""
        if mode_now == "fatal":
            return Readiness(
                False, f"already fatal: {offenders} process(es) or guest(s) took SIGBUS{last}", None
            )
        return Readiness(False, f"not ready: {offenders} offender(s) would be killed{last}", None)
    if watched_since is None:
        return Readiness(
            None,
            "cannot tell: split-lock detection is not on (mode off or ratelimit, no kernel or CPU "
            "support, or no state reported), so no trap could be seen",
            None,
        )
    clean = _span((until - watched_since).total_seconds())
    if mode_now == "fatal":
        return Readiness(True, f"already fatal: no offender in {clean}", watched_since)
    return Readiness(True, f"ready: no offender in {clean}", watched_since)
