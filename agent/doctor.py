"""`splitwatch doctor`: one host's split-lock set-up in words, and what is wrong with it.

Reads the host under a root the way the agent does (a few Collector passes, nothing persisted,
no kprobes registered: the passes are the consecutive samples the consistency verdict needs) and
answers in sections a person reads top to bottom: the consistency verdict in the agent's own
words (agent/kernel/consistency.py, the one rule, #16), detection, CPUs, mode and what it means,
kernel era, recent events, hypervisor modules, tracefs; then the problems, each with its remedy.
Pure stdlib; the CLI (app/cli/doctor.py) decides colour.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.collect import Collector
from agent.errors import ParseError
from agent.host import HostRoot
from agent.kernel import procfs as procfs_parse
from agent.kernel.consistency import LABELS, NEEDS_ACTION
from agent.kernel.modes import UNKNOWN_KERNEL, parse_kernel_release
from agent.payload import Action, CpuState, Event, GapReason, Mode, Payload

PROBES = ("split_lock_warn", "handle_guest_split_lock", "handle_bus_lock")
# What to do about each verdict that needs action (agent/kernel/consistency.py NEEDS_ACTION).
VERDICT_REMEDIES = {
    "drift": (
        "look for a tool writing MSR_TEST_CTRL (wrmsr 0x33), a firmware or microcode setting; "
        "a reboot restores the kernel's setting"
    ),
    "stuck_off": (
        'set kernel.split_lock_mitigate=1, or take a kernel with "x86/split_lock: Fix the delayed '
        'detection logic" (6.15+, some stable trees); a reboot re-enables the cores'
    ),
    "inconsistent_config": (
        "make the named pair agree: boot with the split_lock_detect= you mean, and find what wrote "
        "MSR_TEST_CTRL (0x33) if the MSR disagrees"
    ),
    "foreign_hypervisor": (
        "unload the module (rmmod vboxdrv / vmmon), or boot hosts that must run it with split_lock_detect=off"
    ),
}
TRACEFS = "sys/kernel/tracing"


@dataclass(frozen=True)
class Problem:
    what: str  # the thing and the cause
    remedy: str


@dataclass(frozen=True)
class Section:
    title: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    host: str
    sections: tuple[Section, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def diagnose(
    root: Path,
    *,
    recent: int = 10,
    samples: int = 3,
    sample_pause_s: float = 0.05,
    euid: int | None = None,
) -> Report:
    """Everything doctor says about the host under `root`. Raises ConfigError for a bad root only."""
    euid = os.geteuid() if euid is None else euid
    collector = Collector(root, None, use_tracefs=False)
    # The collector logs each problem as a warning; here they are the report, said once.
    agent_log = logging.getLogger("splitwatch.agent")
    was_disabled, agent_log.disabled = agent_log.disabled, True
    events: list[Event] = []
    payloads: list[Payload] = []
    try:
        # `samples` passes in a row: the verdict's consecutive samples (a drifted core reads off
        # in all of them; warn mode's 2-jiffy pause after a trap does not).
        for n in range(max(1, samples)):
            if n and sample_pause_s > 0:
                time.sleep(sample_pause_s)
            collected = collector.collect()
            collected.commit()  # no state dir: only this collector's memory moves on
            payloads.extend(collected.payloads)
            events.extend(e for p in collected.payloads for e in p.events)
    finally:
        collector.close()
        agent_log.disabled = was_disabled
    payload = collected.payload
    assert payload.state is not None  # the first payload of a pass always carries the state
    state = payload.state
    judged = state.consistency or {}
    host = HostRoot.at(root)
    flags = _cpu_flags(host)
    kernel = _kernel(payload.host.kernel)
    statuses = collected.statuses
    problems: list[Problem] = []

    # -- detection and CPUs -------------------------------------------------------------------
    sld_cores = sum(1 for c in state.cpus if c.sld_on)
    bld_cores = sum(1 for c in state.cpus if c.bld_on)
    detection = [
        "split-lock detection (#AC): "
        + (
            f"supported by this CPU; on for {sld_cores} of {len(state.cpus)} CPUs"
            if state.sld_supported
            else "NOT supported by this CPU"
        ),
        "bus-lock detection (#DB): "
        + (
            f"supported by this CPU; on for {bld_cores} of {len(state.cpus)} CPUs"
            if state.bld_supported
            else "not supported by this CPU"
        ),
    ]
    cpu_lines = describe_cpus(state.cpus)
    verdict_name = str(judged.get("verdict", "unknown"))
    label = LABELS.get(verdict_name, verdict_name)
    verdict_lines = [f"{label}: {judged.get('reason', 'no verdict')}"]
    details = judged.get("details") or {}
    if isinstance(details, dict) and details.get("era"):
        verdict_lines.append(f"kernel era (from the kernel's own evidence): {details['era']}")
    if verdict_name in NEEDS_ACTION:
        problems.append(Problem(f"{label}: {judged.get('reason')}", VERDICT_REMEDIES[verdict_name]))

    # -- mode -------------------------------------------------------------------------------------
    mode_text = f"{state.mode}" + (f":{state.ratelimit}" if state.ratelimit is not None else "")
    mitigate_text = "absent" if state.mitigate is None else str(state.mitigate)
    given = _cmdline_option(host)
    origin = (
        f"split_lock_detect={given} on the command line"
        if given is not None
        else "the kernel's default: no split_lock_detect= on the command line"
    )
    if given is not None and given != mode_text:
        # Invalid values, and ratelimit:N before 5.14, fall back to warn (sld_state_setup).
        origin += f", which this kernel reads as {mode_text}"
    mode_lines = [f"mode {mode_text} ({origin}), split_lock_mitigate {mitigate_text}"]
    if state.sld_supported or state.bld_supported:
        mode_lines.append(mode_meaning(state.mode, state.ratelimit, state.mitigate, kernel))
    else:
        mode_lines.append("the mode does not matter here: this CPU detects neither split locks nor bus locks")
    if state.mode is Mode.OFF:
        problems.append(
            Problem(
                "split-lock detection is off (split_lock_detect=off): split locks slow the host unseen",
                "boot with split_lock_detect=warn (the default) to see them",
            )
        )
    elif state.mode is Mode.RATELIMIT:
        problems.append(
            Problem(
                f"mode ratelimit:{state.ratelimit}: split-lock #AC detection is OFF, only bus locks are "
                "seen (and throttled)",
                "boot with split_lock_detect=warn to see split locks as well",
            )
        )

    # -- kernel -----------------------------------------------------------------------------------
    kernel_lines = [f"kernel {payload.host.kernel}", *kernel_notes(kernel)]
    if verdict_name == "unsupported" and isinstance(details, dict) and details.get("why") == "kernel":
        # Only when the kernel itself shows no split-lock code: RHEL 8's 4.18 backport has it.
        problems.append(
            Problem(
                f"kernel {payload.host.kernel} predates split-lock detection (5.7) and shows no backport",
                "upgrade the kernel to 5.7 or later (5.19+ for the misery mode)",
            )
        )

    # -- sources ----------------------------------------------------------------------------------
    msr_status = statuses.get("msr", "failed")
    if msr_status == "absent":
        problems.append(
            Problem(
                "no dev/cpu/*/msr: the per-core detection state cannot be read",
                "load the msr module: modprobe msr (and list it in /etc/modules-load.d/)",
            )
        )
    elif msr_status in ("denied", "failed"):
        first = next((c.error for c in state.cpus if c.error), None) or "MSRs not readable"
        problems.append(Problem(f"MSRs not readable: {first}", _msr_remedy(msr_status)))
    kmsg_status = statuses.get("kmsg", "failed")
    kmsg_error = next((e for e in collected.errors if "kmsg" in e), f"dev/kmsg: {kmsg_status}")
    if kmsg_status == "denied":
        problems.append(Problem(kmsg_error, "run as root or grant CAP_SYSLOG (kernel.dmesg_restrict = 1)"))
    elif kmsg_status in ("absent", "failed"):
        problems.append(Problem(kmsg_error, "check that dev/kmsg exists under the root (--root)"))
    if euid != 0 and "denied" in (msr_status, kmsg_status):
        problems.append(
            Problem(
                f"not running as root (uid {euid}): the MSRs or the kernel log are closed to this user",
                "run `sudo splitwatch doctor`, or grant CAP_SYS_RAWIO and CAP_SYSLOG",
            )
        )
    if not state.sld_supported and "split_lock_detect" not in flags:
        problems.append(
            Problem(
                "no split_lock_detect flag in proc/cpuinfo and no CORE_CAPS bit: this CPU lacks split-lock "
                "detection (Intel Ice Lake / Tremont and later have it)",
                "nothing to fix on this host: watch hosts whose CPUs have it",
            )
        )
    if "hypervisor" in flags:
        # First (#17): inside a VM every other finding (no msr module, detection off) follows
        # from it, and "modprobe msr" listed above it sent people fixing the wrong machine.
        problems.insert(
            0,
            Problem(
                "running inside a virtual machine (cpuinfo flag `hypervisor`): the MSRs are not the "
                "host's and its kernel does not see the guests' split locks",
                "run the agent on the hypervisor host",
            ),
        )

    # -- events -----------------------------------------------------------------------------------
    event_lines = describe_events(events, payloads, recent)

    # -- hypervisor modules, tracefs --------------------------------------------------------------
    modules = _hypervisor_modules(host)
    module_lines = [
        ", ".join(modules) if modules else "none loaded (kvm_intel): this host runs no KVM guests"
    ]
    tracefs_lines = describe_tracefs(host)

    sections = (
        Section("Consistency verdict", tuple(verdict_lines)),
        Section("Detection", tuple(detection)),
        Section("CPUs (MSR_TEST_CTRL bit 29, IA32_DEBUGCTL bit 2)", tuple(cpu_lines)),
        Section("Mode", tuple(mode_lines)),
        Section("Kernel", tuple(kernel_lines)),
        Section("Split-lock events in the kernel log", tuple(event_lines)),
        Section("Hypervisor modules", tuple(module_lines)),
        Section("tracefs", tuple(tracefs_lines)),
    )
    return Report(payload.host.name, sections, tuple(problems))


# -- wording ---------------------------------------------------------------------------------------


def cpu_ranges(cpus: Iterable[int]) -> str:
    """`0-3,8,10-11` from CPU numbers."""
    numbers = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(f"{numbers[i]}" if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ",".join(parts)


def _runs(cpus: Sequence[CpuState], label: dict[int, str]) -> str:
    """`cpu 0-31 on, cpu 32-35 off`: runs of consecutive CPUs with the same label, in CPU order."""
    out: list[str] = []
    run: list[int] = []
    for cpu in cpus:
        if run and (label[cpu.cpu] != label[run[-1]] or cpu.cpu != run[-1] + 1):
            out.append(f"cpu {cpu_ranges(run)} {label[run[-1]]}")
            run = []
        run.append(cpu.cpu)
    if run:
        out.append(f"cpu {cpu_ranges(run)} {label[run[-1]]}")
    return ", ".join(out)


def describe_cpus(cpus: Sequence[CpuState]) -> list[str]:
    if not cpus:
        return ["no CPU could be read"]
    ordered = sorted(cpus, key=lambda c: c.cpu)

    def word(value: bool | None, error: str | None) -> str:
        return "on" if value else "off" if value is False else "unreadable" if error else "n/a"

    lines = [
        "split-lock #AC: " + _runs(ordered, {c.cpu: word(c.sld_on, c.error) for c in ordered}),
        "bus-lock #DB:   " + _runs(ordered, {c.cpu: word(c.bld_on, c.error) for c in ordered}),
    ]
    errors = Counter(c.error for c in ordered if c.error)
    for error, n in errors.most_common(3):
        lines.append(f"{error}" + (f" (and {n - 1} more CPUs alike)" if n > 1 else ""))
    return lines


def mode_meaning(mode: Mode, ratelimit: int | None, mitigate: int | None, kernel: tuple[int, int]) -> str:
    """What the host does with a split lock in this mode, in words (docs/kernel.md)."""
    if mode is Mode.OFF:
        return "off: split locks run undetected, nothing is logged or slowed"
    if mode is Mode.FATAL:
        return (
            "fatal: a split-locking task gets SIGBUS and dies; a KVM guest that split-locks is killed "
            "with its QEMU"
        )
    if mode is Mode.RATELIMIT:
        return (
            f"ratelimit: split-lock #AC is off; bus locks are throttled to {ratelimit or 'N'} per second "
            "system-wide (the locking task sleeps)"
        )
    if kernel != UNKNOWN_KERNEL and kernel < (5, 19):
        return (
            "warn: a split-locking task is logged once and then runs with detection off for the rest of "
            "its life (5.7-5.18)"
        )
    if mitigate == 0:
        return "warn: a split-locking task is logged and detection pauses on its core for ~2 ticks"
    return "warn + misery: a split-locking task sleeps 10 ms and runs serialized (one core at a time)"


def kernel_notes(kernel: tuple[int, int]) -> list[str]:
    if kernel == UNKNOWN_KERNEL:
        return ["release not recognised: actions are reported as unknown where the era decides them"]
    if kernel < (5, 7):
        return ["before 5.7: no split-lock detection at all"]
    notes: list[str] = []
    if kernel < (5, 13):
        notes.append("5.7-5.12: no bus-lock detection (#DB) and no ratelimit mode")
    elif kernel < (5, 14):
        notes.append("5.13: bus-lock detection (#DB) but no ratelimit:N yet (5.14+): it falls back to warn")
    if kernel < (5, 19):
        notes.append("before 5.19: no misery mode; after its first trap a thread runs with detection off")
    else:
        notes.append("5.19+: misery mode (split_lock_mitigate); the #AC line is printed once per thread")
    notes.append(
        "a log line is a first sighting, not a count (printk limit 10 lines per 5 s); "
        "true counts need tracefs"
    )
    return notes


def describe_events(events: Sequence[Event], payloads: Sequence[Payload], recent: int) -> list[str]:
    gaps = [g for p in payloads for g in p.gaps]
    lines: list[str] = []
    if not events:
        lines.append("no split-lock or bus-lock trap in the kernel log")
    else:
        guests = {e.guest.name for e in events if e.guest is not None}
        actions = Counter(str(e.action) for e in events)
        lines.append(
            f"{len(events)} trap line(s): {sum(1 for e in events if e.guest)} from {len(guests)} guest(s), "
            f"{sum(1 for e in events if e.guest is None)} from host processes; actions "
            + ", ".join(f"{a} {n}" for a, n in actions.most_common())
        )
        killed = sorted({e.guest.name for e in events if e.guest and e.action is Action.SIGBUS})
        if killed:
            lines.append("guests killed by SIGBUS: " + ", ".join(killed))
        lines.append(f"last {min(recent, len(events))}:")
        for e in events[-recent:]:
            if e.guest is not None:
                who = f"guest {e.guest.name} ({e.guest.vmm}" + (
                    f", vcpu {e.guest.vcpu})" if e.guest.vcpu is not None else ")"
                )
            elif e.tgid is not None:
                who = f"host process (tgid {e.tgid})"
            else:
                who = "thread gone, not attributed"
            lines.append(
                f"  {e.time.strftime('%Y-%m-%d %H:%M:%S')}Z  {e.kind}  {e.comm}/{e.tid}  {who}  "
                f"action {e.action}" + (f"  at {e.address}" if e.address else "")
            )
    by_reason = Counter[str]()
    records = Counter[str]()
    for g in gaps:
        by_reason[str(g.reason)] += 1
        records[str(g.reason)] += g.count
    if by_reason[GapReason.OVERRUN]:
        lines.append(
            f"kmsg overruns: {by_reason[GapReason.OVERRUN]} ({records[GapReason.OVERRUN]} records lost)"
        )
    if by_reason[GapReason.SUPPRESSED]:
        lines.append(f"suppressed by the printk limit: {records[GapReason.SUPPRESSED]} line(s) not logged")
    if by_reason[GapReason.FORGED]:
        lines.append(
            f"forged: {by_reason[GapReason.FORGED]} record(s) written by a process, not the kernel (ignored)"
        )
    return lines


def describe_tracefs(host: HostRoot) -> list[str]:
    if not host.exists(f"{TRACEFS}/available_filter_functions"):
        return [
            f"not mounted at {TRACEFS}: counts are first sightings from the kernel log "
            "(mount -t tracefs nodev /sys/kernel/tracing for true counts)"
        ]
    try:
        available = set(host.read_text(f"{TRACEFS}/available_filter_functions").split())
    except OSError as exc:
        return [f"{TRACEFS}/available_filter_functions not readable ({exc.strerror}): run as root"]
    probes = [p for p in PROBES if p in available]
    writable = os.access(host.path(f"{TRACEFS}/kprobe_events"), os.W_OK)
    lines = [
        f"mounted at {TRACEFS}; kprobe_events " + ("writable" if writable else "NOT writable (run as root)"),
        "probe points: " + (", ".join(probes) if probes else "none of " + ", ".join(PROBES)),
    ]
    return lines


def _msr_remedy(status: str) -> str:
    if status == "denied":
        return "run as root or grant CAP_SYS_RAWIO"
    return "on a guest or a CPU without these MSRs nothing can be read; on a host, check the msr driver"


def _cmdline_option(host: HostRoot) -> str | None:
    """The split_lock_detect= value as written on proc/cmdline (the last one wins), or None."""
    try:
        words = host.read_text("proc/cmdline").split()
    except OSError:
        return None
    values = [w.partition("=")[2] for w in words if w.startswith("split_lock_detect=")]
    return values[-1] if values else None


def _cpu_flags(host: HostRoot) -> frozenset[str]:
    try:
        return procfs_parse.parse_cpuinfo(host.read_text("proc/cpuinfo")).flags
    except (OSError, ParseError):
        return frozenset()


def _hypervisor_modules(host: HostRoot) -> tuple[str, ...]:
    try:
        return procfs_parse.hypervisor_modules(procfs_parse.parse_modules(host.read_text("proc/modules")))
    except (OSError, ParseError):
        return ()


def _kernel(release: str) -> tuple[int, int]:
    try:
        return parse_kernel_release(release)
    except ParseError:
        return UNKNOWN_KERNEL


def format_report(report: Report) -> str:
    """The report as plain text."""
    out = [f"splitwatch doctor: {report.host}", ""]
    for section in report.sections:
        out.append(section.title)
        out.extend(f"  {line}" for line in section.lines)
        out.append("")
    if report.problems:
        out.append(f"Problems ({len(report.problems)})")
        for p in report.problems:
            out.append(f"  ✗ {p.what}")
            out.append(f"    → {p.remedy}")
    else:
        out.append("No problems found.")
    return "\n".join(out) + "\n"
