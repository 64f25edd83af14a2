"""Split-lock modes and what the host did with one trap (docs/kernel.md), as the kernel decides them.

Pure: text and facts in, values out. Three questions:

- `parse_cmdline_mode`: which mode did `split_lock_detect=` on /proc/cmdline select? Mirrors the
  kernel's early parsing (arch/x86/lib/cmdline.c `cmdline_find_option` + `sld_state_setup` /
  `match_option` in arch/x86/kernel/cpu/intel.c; arch/x86/kernel/cpu/bus_lock.c since 6.13).
- `parse_kernel_release`: `6.8.0-49-generic` -> (6, 8), the era that decides the rules.
- `derive_action`: the `action` of one event from the trap's verb (or tracefs probe), the mode,
  `split_lock_mitigate` and the kernel era. What the kernel text proves wins over what we
  inferred; where the two contradict, the answer is `unknown` rather than a guess.
"""

from __future__ import annotations

import re

from agent.errors import ParseError
from agent.payload import Action, Kind, Mode

# Verbs of agent.kernel.splitlock.Trap and tracefs probe names (agent.sources.tracefs).
VERB_TOOK = "took"  # `#AC: C/T took a split_lock trap`, `#DB: C/T took a bus_lock trap`
VERB_FATAL = "fatal"  # `#AC: C/T fatal split_lock trap`: KVM guest, host in fatal mode
VERB_BOGUS = "bogus"  # `#AC: C/T bogus split_lock trap`: KVM guest, host in another mode
VERB_ALIGNMENT_CHECK = "alignment_check"  # `traps: C[T] trap alignment check`: SIGBUS delivered
PROBE_SPLIT_LOCK_WARN = "split_lock_warn"
PROBE_HANDLE_GUEST_SPLIT_LOCK = "handle_guest_split_lock"
PROBE_HANDLE_BUS_LOCK = "handle_bus_lock"
# Not produced by today's sources, kept so a future kvm:kvm_exit (vector 17) source or an importer
# of an old boot's oops has a row to land on.
VERB_REFLECT = "reflect"  # #AC reflected into a guest that set EFLAGS.AC itself: the host logs nothing
VERB_OOPS = "oops"  # split lock in the kernel: the kernel dies, so only a previous boot's log shows it

VERBS = frozenset(
    {
        VERB_TOOK,
        VERB_FATAL,
        VERB_BOGUS,
        VERB_ALIGNMENT_CHECK,
        PROBE_SPLIT_LOCK_WARN,
        PROBE_HANDLE_GUEST_SPLIT_LOCK,
        PROBE_HANDLE_BUS_LOCK,
        VERB_REFLECT,
        VERB_OOPS,
    }
)

RATELIMIT_MIN, RATELIMIT_MAX = 1, 1000
# Kernel eras that change the rules.
# `ratelimit:N` is 5.14+ (commit ef4ae6e44170 "x86/bus_lock: Set rate limit for bus lock"): on
# 5.13, which has #DB bus-lock detection but not the option, it is an invalid value, so warn.
RATELIMIT_SINCE = (5, 14)
BUS_LOCK_SINCE = (5, 13)  # #DB bus-lock detection (handle_bus_lock)
MISERY_SINCE = (5, 19)  # split_lock_warn's 10 ms sleep + one-core-at-a-time (commit b041b525dab9)
UNKNOWN_KERNEL = (0, 0)  # what a caller passes when osrelease could not be read or parsed

_OPTION = "split_lock_detect"
# sld_state_setup(): `char arg[20]`; cmdline_find_option keeps bufsize-1 bytes but returns the
# full length, so match_option sees a truncated string and the true length.
_ARG_BUFSIZE = 20
_SIGNED_INT = re.compile(r"[+-]?\d+")
_RELEASE = re.compile(r"\s*(\d+)\.(\d+)")


def _find_option(cmdline: str, option: str) -> str | None:
    """The value of `option=` as the x86 early cmdline_find_option() returns it, or None.

    arch/x86/lib/cmdline.c __cmdline_find_option(): words are split on any byte <= ' '
    (myisspace), no quoting; the scan does not stop at a match — every later `option=` resets
    the buffer (`len = 0; bufptr = buffer;`) — so the LAST occurrence wins, like the generic
    parse_args(). A word must start with `option=` exactly (`xsplit_lock_detect=` is not it).
    """
    value: str | None = None
    for word in re.split(r"[\x00-\x20]+", cmdline):
        if word.startswith(option + "="):
            value = word[len(option) + 1 :]
    return value


def cmdline_has_option(cmdline: str) -> bool:
    """`split_lock_detect=` is on the command line (whatever its value)."""
    return _find_option(cmdline, _OPTION) is not None


def parse_cmdline_mode(cmdline: str, *, kernel: tuple[int, int] | None = None) -> tuple[Mode, int | None]:
    """(mode, ratelimit N or None) selected by /proc/cmdline, exactly as the kernel reads it.

    Absent or invalid values give `warn`, the kernel's default (`state = sld_warn` before the
    match loop). `kernel` is the release (see parse_kernel_release); before 5.14 `ratelimit:N`
    does not exist, so it is an invalid value there: warn. None means "assume 5.14+".

    Distribution kernels that backport detection may default to off (RHEL 8); that default is
    not on the command line, so it is agent.kernel.consistency.effective_mode's business.
    """
    value = _find_option(cmdline, _OPTION)
    if value is None:
        return Mode.WARN, None
    arg, arglen = value[: _ARG_BUFSIZE - 1], len(value)
    ratelimit_era = kernel is None or kernel == UNKNOWN_KERNEL or kernel >= RATELIMIT_SINCE
    for option, mode in (("off", Mode.OFF), ("warn", Mode.WARN), ("fatal", Mode.FATAL)):
        # 5.7-5.12: `len == arglen && !strncmp(arg, opt, len)`; 5.13+: the same for these three.
        if arglen == len(option) and arg == option:
            return mode, None
    if ratelimit_era and arg.startswith("ratelimit:"):
        # 5.14+ match_option(): `sscanf(arg, "ratelimit:%d", &ratelimit) == 1 && ratelimit > 0 &&
        # ratelimit <= 1000`, so trailing junk after the digits is accepted (`ratelimit:5x` is 5).
        number = _SIGNED_INT.match(arg, len("ratelimit:"))
        if number is not None and RATELIMIT_MIN <= int(number.group()) <= RATELIMIT_MAX:
            return Mode.RATELIMIT, int(number.group())
        if arglen == len("ratelimit:"):
            # Kernel quirk: a bare `ratelimit:` falls through to `return len == arglen`, which is
            # true, so the kernel selects sld_ratelimit with a zeroed (never limiting) ratelimit.
            return Mode.RATELIMIT, None
    return Mode.WARN, None


def parse_kernel_release(release: str) -> tuple[int, int]:
    """(major, minor) of `proc/sys/kernel/osrelease`: `6.8.0-49-generic` -> (6, 8), `5.15` -> (5, 15)."""
    match = _RELEASE.match(release)
    if match is None:
        raise ParseError(
            f"kernel release {release.strip()[:64]!r} does not start with MAJOR.MINOR: "
            "check proc/sys/kernel/osrelease under the agent's root"
        )
    return int(match.group(1)), int(match.group(2))


def _warn_action(mitigate: int | None, kernel: tuple[int, int]) -> Action:
    """What split_lock_warn() did: a logged warning, or 5.19+ misery (throttle)."""
    if kernel == UNKNOWN_KERNEL:
        return Action.UNKNOWN
    if kernel < MISERY_SINCE:
        # 5.7-5.18: warn and clear TEST_CTRL for the rest of the thread's life; no sysctl exists.
        return Action.WARN
    if mitigate == 0:
        return Action.WARN
    if mitigate == 1 or mitigate is None:
        # None on 5.19+: the sysctl came after the misery mode (commit 727209376f49 in 6.2,
        # backported to 6.1.y); 5.19-6.1.1 have no sysctl: there, or without CONFIG_PROC_SYSCTL,
        # the misery mode is unconditional — what sysctl_sld_mitigate's default 1 means.
        return Action.THROTTLE
    return Action.UNKNOWN  # proc_douintvec_minmax keeps it in 0..1: anything else is not a kernel


def derive_action(
    kind: Kind, verb: str, *, mode: Mode, mitigate: int | None, kernel: tuple[int, int], guest: bool
) -> Action:
    """What the host did with one trap: docs/agent.md's action table ("Modes and actions").

    `verb` is a Trap verb (took, fatal, bogus, alignment_check) or a tracefs probe name
    (split_lock_warn, handle_guest_split_lock, handle_bus_lock); reflect and oops are accepted
    too. `kernel` is (major, minor), UNKNOWN_KERNEL when not known. `guest` says the thread is a
    KVM vCPU; the kernel text already tells the guest cases apart, so it only matters for the
    tracefs probe of a guest split lock.
    """
    del guest  # the verb carries it (fatal/bogus/handle_guest_split_lock are vCPU-only paths)
    if verb == VERB_OOPS:
        return Action.OOPS
    if verb == VERB_REFLECT:
        return Action.REFLECT
    if verb in (VERB_FATAL, VERB_BOGUS):
        # handle_guest_split_lock(): outside warn mode it prints `fatal` (sld_fatal) or `bogus`
        # (any other state: the host cannot give the guest a split-lock #AC it never enabled),
        # then force_sig_fault(SIGBUS) on the vCPU thread: QEMU dies, the guest with it.
        return Action.SIGBUS if kind is Kind.SPLIT_LOCK else Action.UNKNOWN
    if verb == VERB_ALIGNMENT_CHECK:
        # exc_alignment_check() -> do_trap(SIGBUS): printed only when the signal was delivered
        # (fatal mode, or the task set EFLAGS.AC itself). Either way the task got SIGBUS.
        return Action.SIGBUS
    if kind is Kind.SPLIT_LOCK:
        if verb in (VERB_TOOK, PROBE_SPLIT_LOCK_WARN):
            # split_lock_warn() runs only in sld_warn; another mode means our picture is wrong.
            return _warn_action(mitigate, kernel) if mode is Mode.WARN else Action.UNKNOWN
        if verb == PROBE_HANDLE_GUEST_SPLIT_LOCK:
            # Called for a guest #AC KVM did not reflect: warn -> split_lock_warn(); any other
            # mode -> the `fatal`/`bogus` SIGBUS above (printed once per boot, counted here).
            if mode is Mode.WARN:
                return _warn_action(mitigate, kernel)
            return Action.SIGBUS
        return Action.UNKNOWN
    # Bus locks: handle_bus_lock() (5.13+) — ratelimit: sleep until under N/s, then warn;
    # warn: warn only (no misery for bus locks); fatal: SIGBUS without a line; off: #DB is off.
    if verb in (VERB_TOOK, PROBE_HANDLE_BUS_LOCK):
        if mode is Mode.RATELIMIT:
            return Action.RATELIMIT
        if mode is Mode.WARN:
            return Action.WARN
        if mode is Mode.FATAL and verb == PROBE_HANDLE_BUS_LOCK:
            return Action.SIGBUS
    return Action.UNKNOWN
