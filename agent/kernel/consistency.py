"""The consistency verdict: is this host's split-lock detection what its kernel says it should be?

Pure: the evidence one agent pass gathered (plus a short history of earlier samples) in, one
`Verdict` out (name, a reason sentence, details). No files, no clock. The agent sends it with each
state (`state.consistency`, docs/api.md), `splitwatch doctor` prints the same words, and the
backend derives the host status from it (app/store/status.py). Python 3.9 and the standard
library only: this module ships to every host.

Why a verdict and not "a core reads off": an off read of MSR_TEST_CTRL bit 29 means different
things by kernel era (docs/kernel.md "Consistency verdicts"):

- before 5.7 mainline has no split-lock detection: bit 29 is whatever firmware left. Distribution
  kernels backport it (RHEL 8.7's 4.18.0-394.el8: default off, a runtime sysfs knob), so the
  kernel's own evidence (boot line, cpuinfo flag, the sysctl's and the knob's presence) decides
  the era before the version number does;
- 5.7-5.18: after its first trap a task runs with bit 29 cleared for life (TIF_SLD,
  `split_lock_warn()` in arch/x86/kernel/cpu/intel.c), so a pinned offender's core reads off and
  its later split locks are neither trapped nor logged;
- 5.19+ warn mode: each trap clears bit 29 on that core for 2 jiffies (`sld_update_msr(false)` and
  a delayed `__split_lock_reenable`), commit b041b525dab9;
- kernels with `split_lock_mitigate` (6.2+, 6.1.y) and mitigate=0 before "x86/split_lock: Fix the
  delayed detection logic" (tip c929d08df8be, v6.15 merge window): one global re-enable work item,
  so when two cores trap before it runs the second core stays off;
- anything else that leaves a core off in consecutive samples is drift: something wrote the MSR.

Verdict names (the wire words, `VERDICTS`): consistent, unsupported, off_by_design, transient,
per_task_off, stuck_off, drift, inconsistent_config, foreign_hypervisor. `LABELS` gives the words
people read ("per-task off"). `NEEDS_ACTION` are the ones an operator must act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

CONSISTENT = "consistent"
UNSUPPORTED = "unsupported"
OFF_BY_DESIGN = "off_by_design"
TRANSIENT = "transient"
PER_TASK_OFF = "per_task_off"
STUCK_OFF = "stuck_off"
DRIFT = "drift"
INCONSISTENT_CONFIG = "inconsistent_config"
FOREIGN_HYPERVISOR = "foreign_hypervisor"

VERDICTS = (
    CONSISTENT,
    UNSUPPORTED,
    OFF_BY_DESIGN,
    TRANSIENT,
    PER_TASK_OFF,
    STUCK_OFF,
    DRIFT,
    INCONSISTENT_CONFIG,
    FOREIGN_HYPERVISOR,
)
LABELS = {
    CONSISTENT: "consistent",
    UNSUPPORTED: "unsupported",
    OFF_BY_DESIGN: "off by design",
    TRANSIENT: "transient",
    PER_TASK_OFF: "per-task off",
    STUCK_OFF: "stuck off",
    DRIFT: "drift",
    INCONSISTENT_CONFIG: "inconsistent config",
    FOREIGN_HYPERVISOR: "foreign hypervisor",
}
NEEDS_ACTION = frozenset({DRIFT, STUCK_OFF, INCONSISTENT_CONFIG, FOREIGN_HYPERVISOR})

# A core must read off in this many consecutive samples (this one included) before an
# unexplained "off" is drift: one read can catch any transient state.
DRIFT_SAMPLES = 3
# The history the agent keeps (agent/state.py): enough for DRIFT_SAMPLES, bounded.
HISTORY_KEPT = 8

# Out-of-tree hypervisors that know nothing of split-lock detection (the 2020 "Detect VMX
# modules and disable Split-Lock-Detect" patch that would have handled them never landed).
FOREIGN_MODULES = ("vmmon", "vboxdrv")

# Kernel eras, decided by evidence first (kernel_era()).
ERA_NONE = "pre-5.7"  # no split-lock detection in this kernel
ERA_BACKPORT = "backport"  # a distribution kernel < 5.7 with detection backported (RHEL 8)
ERA_PER_TASK = "5.7-5.18"  # TIF_SLD: off for the rest of the task's life after its first trap
ERA_MISERY = (
    "5.19+ without sysctl"  # warn mode clears the core for 2 jiffies per trap; no sysctl (5.19-6.1.1)
)
ERA_SYSCTL = "sysctl before 6.15"  # split_lock_mitigate exists (6.2+, 6.1.y), before the v6.15 fix
ERA_FIXED = "6.15+"  # per-CPU re-enable work: no stuck-off bug
ERA_UNKNOWN = "unknown"

SLD_SINCE = (5, 7)
RATELIMIT_SINCE = (5, 14)
MISERY_SINCE = (5, 19)
STUCK_FIX_SINCE = (6, 15)

_RELEASE = re.compile(r"\s*(\d+)\.(\d+)")
_KNOB_WORD = re.compile(r"\[([a-z]+(?::\d+)?)\]")


@dataclass(frozen=True)
class Sample:
    """One earlier pass, as the agent keeps it: which CPUs read off, and what trapped."""

    off: frozenset[int]
    trapped: bool = False  # a trap (any source) was seen in that pass's window
    trapped_cpus: frozenset[int] | None = None  # CPUs of tracefs hits; None: no per-CPU evidence


@dataclass(frozen=True)
class Evidence:
    """Everything the verdict reads. Defaults describe "not seen"."""

    release: str = ""
    cmdline_mode: str = "warn"  # split_lock_detect= as this kernel parses it (off|warn|fatal|ratelimit)
    cmdline_given: bool = False  # split_lock_detect= is on the command line at all
    ratelimit: int | None = None
    boot_mode: str | None = None  # the boot line's mode, None: no boot line seen this boot
    boot_sld: bool | None = None  # the boot line says #AC is on (True) or off (False)
    boot_line: str | None = None
    cpuinfo_sld: bool = False  # `split_lock_detect` in cpuinfo flags
    hypervisor_flag: bool = False  # `hypervisor` in cpuinfo flags: we run inside a VM
    core_caps_sld: bool | None = None  # CORE_CAPS bit 5 on any CPU; None: not readable
    msr_status: str = "ok"  # ok | absent | denied | failed (agent/sources/msr.py)
    msr_error: str | None = None
    cpus_on: frozenset[int] = frozenset()  # TEST_CTRL bit 29 set
    cpus_off: frozenset[int] = frozenset()  # TEST_CTRL bit 29 clear
    mitigate: int | None = None  # proc/sys/kernel/split_lock_mitigate; None: absent
    knob: str | None = None  # the runtime sysfs split_lock_detect knob's text; None: absent
    foreign_modules: tuple[tuple[str, str | None], ...] = ()  # (module, ISO time first seen)
    trapped: bool = False  # a split-lock trap (any source) in this pass's window
    trapped_cpus: frozenset[int] | None = None  # CPUs of this window's tracefs hits
    offenders: tuple[str, ...] = ()  # guests (or tasks) that split-locked this boot, newest first
    trap_cpus_boot: int = 0  # distinct CPUs that trapped this boot (tracefs)
    trap_threads_boot: int = 0  # distinct threads that trapped this boot
    history: tuple[Sample, ...] = ()  # earlier samples of this boot, oldest first


@dataclass(frozen=True)
class Verdict:
    name: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    @property
    def needs_action(self) -> bool:
        return self.name in NEEDS_ACTION

    def to_dict(self) -> dict[str, Any]:
        """The payload's `state.consistency` object (docs/api.md)."""
        return {"verdict": self.name, "reason": self.reason, "details": dict(self.details)}


# -- small parsers --------------------------------------------------------------------------------


def parse_release(release: str) -> tuple[int, int] | None:
    match = _RELEASE.match(release or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_knob(text: str) -> tuple[str, int | None] | None:
    """The mode of the runtime `split_lock_detect` knob: `warn`, `ratelimit:10`, or a choice list
    with the current one in brackets (`off [warn] fatal`). None when it says nothing we know."""
    text = (text or "").strip()
    bracket = _KNOB_WORD.search(text)
    word = bracket.group(1) if bracket else text.split()[0] if text.split() else ""
    if word in ("off", "warn", "fatal"):
        return word, None
    if word.startswith("ratelimit:") and word[len("ratelimit:") :].isdigit():
        return "ratelimit", int(word[len("ratelimit:") :])
    return None


def cpu_list(cpus: Any) -> str:
    """`0-3,8` from CPU numbers."""
    numbers = sorted(set(cpus))
    parts = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ",".join(parts)


# -- era and mode ---------------------------------------------------------------------------------


def kernel_has_evidence(e: Evidence) -> bool:
    """The kernel itself shows split-lock detection: a boot line, the cpuinfo flag, the knob or the
    sysctl. (The cpuinfo flag exists since 5.7; 4.x distribution kernels print it only if backported.)"""
    return e.boot_mode is not None or e.cpuinfo_sld or e.knob is not None or e.mitigate is not None


def kernel_era(e: Evidence) -> str:
    """The era whose rules apply, the kernel's evidence before its version number."""
    version = parse_release(e.release)
    if e.mitigate is not None:
        # The sysctl exists: 6.2+ or a 6.1.y backport, whatever the version string says.
        return ERA_FIXED if version is not None and version >= STUCK_FIX_SINCE else ERA_SYSCTL
    if version is None:
        return ERA_MISERY if kernel_has_evidence(e) else ERA_UNKNOWN
    if version < SLD_SINCE:
        return ERA_BACKPORT if kernel_has_evidence(e) else ERA_NONE
    if version < MISERY_SINCE:
        return ERA_PER_TASK
    if version >= STUCK_FIX_SINCE:
        return ERA_FIXED
    return ERA_MISERY


def effective_mode(e: Evidence, era: str) -> tuple[str, str]:
    """(mode, where it comes from): the runtime knob, else the boot line, else the command line
    (on a backport the distribution's default is off, not mainline's warn)."""
    if e.knob is not None:
        parsed = parse_knob(e.knob)
        if parsed is not None:
            return parsed[0], f"the runtime split_lock_detect knob says {e.knob.strip()}"
    if e.boot_mode is not None:
        return e.boot_mode, "the kernel's boot line"
    if not e.cmdline_given:
        if era == ERA_BACKPORT:
            return "off", "this distribution kernel's default (off)"
        return e.cmdline_mode, "the kernel's default (no split_lock_detect= on the command line)"
    return e.cmdline_mode, "split_lock_detect= on the command line"


# -- the verdict ----------------------------------------------------------------------------------


def verdict(e: Evidence) -> Verdict:
    """The one rule (docs/kernel.md "Consistency verdicts"), checked in this order:
    unsupported CPU or kernel, inconsistent config, off by design, foreign hypervisor, no MSR
    access, then what the cores that read off mean on this era."""
    era = kernel_era(e)
    base: dict[str, Any] = {"era": era}
    capable = e.cpuinfo_sld or e.core_caps_sld is True or e.boot_sld is True

    if not capable and e.hypervisor_flag:
        return Verdict(
            UNSUPPORTED,
            "running inside a virtual machine (cpuinfo flag hypervisor): the guest's MSRs and flags are "
            "not the host's; run the agent on the hypervisor host",
            {**base, "why": "guest"},
        )
    if not capable and e.core_caps_sld is False:
        return Verdict(
            UNSUPPORTED,
            "this CPU has no split-lock detection: no split_lock_detect flag in cpuinfo and "
            "CORE_CAPS bit 5 clear",
            {**base, "why": "cpu"},
        )
    if era == ERA_NONE:
        return Verdict(
            UNSUPPORTED,
            f"kernel {e.release.strip()} predates split-lock detection (5.7) and shows no backport of it "
            "(no boot line, cpuinfo flag, sysctl or knob): TEST_CTRL bit 29 is whatever firmware left",
            {**base, "why": "kernel"},
        )
    if era == ERA_UNKNOWN:
        return Verdict(
            UNSUPPORTED,
            "the kernel release could not be read and the kernel shows no split-lock detection "
            "(no boot line, cpuinfo flag, sysctl or knob)",
            {**base, "why": "kernel"},
        )

    mode, origin = effective_mode(e, era)
    base["mode"] = mode

    # -- pairs that must agree ------------------------------------------------------------------
    version = parse_release(e.release)
    comparable = e.cmdline_given or (version is not None and version >= SLD_SINCE)
    if e.boot_mode is not None and comparable and e.cmdline_mode != e.boot_mode:
        said = f"split_lock_detect={e.cmdline_mode}" if e.cmdline_given else f"the default {e.cmdline_mode}"
        return Verdict(
            INCONSISTENT_CONFIG,
            f"the command line selects {said} but the kernel's boot line says {e.boot_mode} "
            f"({e.boot_line or 'boot line'}): one of them is not this boot's",
            {**base, "pair": ["cmdline", "boot line"]},
        )
    if e.boot_sld is True and not e.cpuinfo_sld:
        return Verdict(
            INCONSISTENT_CONFIG,
            "the boot line says split-lock #AC detection is on but cpuinfo has no split_lock_detect flag",
            {**base, "pair": ["boot line", "cpuinfo flag"]},
        )
    if mode in ("off", "ratelimit") and e.msr_status == "ok" and e.cpus_on:
        return Verdict(
            INCONSISTENT_CONFIG,
            f"the mode is {mode} ({origin}), in which the kernel keeps #AC off, yet TEST_CTRL bit 29 is on "
            f"on cpu {cpu_list(e.cpus_on)}: something else turned detection on (wrmsr 0x33)",
            {**base, "pair": ["mode", "MSR"], "cpus": sorted(e.cpus_on)},
        )

    if mode == "off":
        return Verdict(OFF_BY_DESIGN, f"split-lock detection is off by design: {origin} says off", base)
    if mode == "ratelimit":
        n = e.ratelimit
        return Verdict(
            OFF_BY_DESIGN,
            f"ratelimit{':' + str(n) if n else ''} turns split-lock #AC off by design ({origin}); "
            "only bus locks are seen and rate limited",
            base,
        )

    # -- detection should be on (warn or fatal) ---------------------------------------------------
    if e.foreign_modules:
        module, since = e.foreign_modules[0]
        when = f" (since {since})" if since else ""
        return Verdict(
            FOREIGN_HYPERVISOR,
            f"out-of-tree hypervisor module {module} is loaded{when} while split-lock detection is {mode}: "
            "its guests get #AC for split locks they never asked for",
            {**base, "module": module, "since": since, "modules": [m for m, _ in e.foreign_modules]},
        )
    if e.msr_status != "ok":
        cause = {
            "absent": "the msr module is not loaded (modprobe msr)",
            "denied": "permission denied (run as root or grant CAP_SYS_RAWIO)",
        }.get(e.msr_status, e.msr_error or "the MSRs could not be read")
        return Verdict(
            UNSUPPORTED,
            f"no MSR access: {cause}; detection on each core cannot be checked",
            {**base, "why": "msr"},
        )

    return _cores(e, era, mode, origin, base)


def _run(e: Evidence, cpu: int) -> int:
    """Consecutive samples, this one included, in which `cpu` read off."""
    n = 1
    for sample in reversed(e.history):
        if cpu not in sample.off:
            break
        n += 1
    return n


def _trapped_each(e: Evidence, cpu: int, samples: int) -> bool:
    """`cpu` has a tracefs hit in each of the last `samples` windows (this one included)."""
    windows = [e.trapped_cpus, *[s.trapped_cpus for s in reversed(e.history)]][:samples]
    return len(windows) == samples and all(w is not None and cpu in w for w in windows)


def _trapping_each(e: Evidence, samples: int) -> bool:
    windows = [e.trapped, *[s.trapped for s in reversed(e.history)]][:samples]
    return len(windows) == samples and all(windows)


def _cores(e: Evidence, era: str, mode: str, origin: str, base: dict[str, Any]) -> Verdict:
    off = sorted(e.cpus_off)
    total = len(e.cpus_on) + len(e.cpus_off)
    per_task_era = era in (ERA_PER_TASK, ERA_BACKPORT)
    misery_era = era in (ERA_MISERY, ERA_SYSCTL, ERA_FIXED)
    warn = mode == "warn"
    per_cpu = e.trapped_cpus is not None
    stuck_era = warn and era == ERA_SYSCTL and e.mitigate == 0

    persistent = [c for c in off if _run(e, c) >= DRIFT_SAMPLES]
    pending = [c for c in off if c not in persistent]
    transient: list[int] = []
    unverifiable: list[int] = []
    unexplained: list[int] = []
    per_task: list[int] = []
    for cpu in persistent:
        if warn and per_task_era and e.offenders:
            per_task.append(cpu)  # TIF_SLD: a task that trapped runs with detection off for life
        elif warn and misery_era and per_cpu:
            if _trapped_each(e, cpu, DRIFT_SAMPLES):
                unverifiable.append(cpu)  # this core traps every time we look
            else:
                unexplained.append(cpu)
        elif warn and misery_era:
            # No per-CPU trap evidence (no tracefs). 5.19+ prints a task's line once, so its later
            # traps leave none: with any offender this boot, a core that keeps reading off cannot be
            # told from one that keeps trapping.
            if stuck_era and e.trap_threads_boot >= 2:
                unexplained.append(cpu)  # the stuck-off bug explains a core that stays off
            elif e.offenders or _trapping_each(e, DRIFT_SAMPLES):
                unverifiable.append(cpu)
            else:
                unexplained.append(cpu)
        else:
            unexplained.append(cpu)
    for cpu in pending:
        transient.append(cpu)

    if unexplained:
        if stuck_era and (e.trap_cpus_boot >= 2 or (e.trap_cpus_boot == 0 and e.trap_threads_boot >= 2)):
            where = (
                f"traps on {e.trap_cpus_boot} CPUs"
                if e.trap_cpus_boot
                else f"traps by {e.trap_threads_boot} threads (CPUs unknown without tracefs)"
            )
            return Verdict(
                STUCK_OFF,
                f"detection stays off on cpu {cpu_list(unexplained)} after {where} this boot: with "
                "split_lock_mitigate=0 this kernel has one global re-enable work item, so a second core "
                'that traps before it runs is never turned back on (fixed by "x86/split_lock: Fix the '
                'delayed detection logic", v6.15); a reboot or split_lock_mitigate=1 avoids it',
                {**base, "cpus": unexplained, "samples": DRIFT_SAMPLES},
            )
        return Verdict(
            DRIFT,
            f"detection is off on cpu {cpu_list(unexplained)} in {DRIFT_SAMPLES} consecutive samples while "
            f"the mode is {mode} ({origin}) and nothing this kernel does explains it: something wrote "
            "MSR_TEST_CTRL (0x33); split locks there go unseen",
            {**base, "cpus": unexplained, "samples": DRIFT_SAMPLES},
        )
    if warn and per_task_era and e.offenders:
        guests = list(e.offenders[:5])
        more = f" and {len(e.offenders) - 5} more" if len(e.offenders) > 5 else ""
        where = f"; cpu {cpu_list(per_task)} read off while they run" if per_task else ""
        return Verdict(
            PER_TASK_OFF,
            f"{', '.join(guests)}{more} split-locked and now run with detection off for the rest of their "
            f"life (kernel {era}, TIF_SLD){where}: their later split locks are neither trapped nor counted, "
            "so their counts are a floor",
            {**base, "guests": guests, "cpus": per_task, "floor": True},
        )
    if unverifiable:
        how = (
            "each of these cores had a trap in every sample"
            if per_cpu
            else "without tracefs a task's repeat traps leave no kernel line"
        )
        return Verdict(
            TRANSIENT,
            f"unverifiable while trapping: cpu {cpu_list(unverifiable)} read off in {DRIFT_SAMPLES} samples, "
            f"but the host keeps trapping ({how}); warn mode clears a core for 2 jiffies per trap (5.19+)",
            {**base, "cpus": unverifiable, "unverifiable": True},
        )
    if transient:
        if warn and misery_era:
            why = "warn mode clears a core for 2 jiffies after each trap (5.19+)"
            if per_cpu and set(transient) <= set(e.trapped_cpus or ()):
                why = "each of them trapped in this window; " + why
        else:
            why = f"drift is declared only after {DRIFT_SAMPLES} consecutive samples"
        return Verdict(
            TRANSIENT,
            f"cpu {cpu_list(transient)} read off in fewer than {DRIFT_SAMPLES} consecutive samples: {why}",
            {**base, "cpus": transient},
        )
    return Verdict(
        CONSISTENT,
        f"split-lock detection is {mode} ({origin}) and on on all {total} CPUs",
        base,
    )
