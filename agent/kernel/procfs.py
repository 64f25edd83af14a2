"""Pure parsers for the procfs files the agent reads (docs/agent.md). Text in, values or ParseError out.

Shapes follow fs/proc and arch/x86/kernel/cpu/proc.c; like prometheus/procfs, each parser takes the
whole file's text and tolerates what real kernels add around the lines it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import ParseError

# Modules whose presence says "this host runs guests" (KVM) or a type-2 hypervisor that fights KVM
# for VMX (VMware's vmmon, VirtualBox's vboxdrv).
HYPERVISOR_MODULES = ("kvm_intel", "kvm_amd", "vmmon", "vboxdrv")


@dataclass(frozen=True)
class CpuInfo:
    model: str  # first `model name`, "" when the file has none (some VMs, non-x86)
    count: int  # `processor` entries: logical CPUs online
    flags: frozenset[str]  # the first CPU's flags: the kernel prints the same set for every CPU

    @property
    def split_lock_detect(self) -> bool:
        return "split_lock_detect" in self.flags

    @property
    def bus_lock_detect(self) -> bool:
        return "bus_lock_detect" in self.flags


def _field(line: str) -> tuple[str, str] | None:
    key, sep, value = line.partition(":")
    if not sep:
        return None
    return key.strip(), value.strip()


def parse_cpuinfo(text: str) -> CpuInfo:
    """`processor`, `model name`, `flags` of /proc/cpuinfo; a file with no processor is not cpuinfo."""
    count = 0
    model = ""
    flags: frozenset[str] | None = None
    for line in text.splitlines():
        field = _field(line)
        if field is None:
            continue
        key, value = field
        if key == "processor":
            count += 1
        elif key == "model name" and not model:
            model = value
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    if count == 0:
        raise ParseError("proc/cpuinfo has no `processor` line: it is not an x86 cpuinfo")
    return CpuInfo(model=model, count=count, flags=flags or frozenset())


def parse_status_tgid(text: str) -> int:
    """`Tgid:` of /proc/TID/status: the process (thread group) a thread belongs to."""
    for line in text.splitlines():
        if line.startswith("Tgid:"):
            value = line[len("Tgid:") :].strip()
            if value.isdigit():
                return int(value)
            break
    raise ParseError("proc/TID/status has no numeric `Tgid:` line")


def parse_status_name(text: str) -> str | None:
    """`Name:` of /proc/TID/status (the thread's COMM, with `\\n` and `\\\\` escaped by the kernel)."""
    for line in text.splitlines():
        if line.startswith("Name:"):
            return line[len("Name:") :].strip("\t").replace("\\n", "\n").replace("\\\\", "\\")
    return None


def parse_stat_btime(text: str) -> int:
    """`btime` of /proc/stat: boot time in seconds since the epoch (wall time = btime + USEC)."""
    for line in text.splitlines():
        if line.startswith("btime "):
            value = line.split()[1] if len(line.split()) > 1 else ""
            if value.isdigit():
                return int(value)
            break
    raise ParseError("proc/stat has no numeric `btime` line")


def parse_modules(text: str) -> tuple[str, ...]:
    """Module names of /proc/modules, in file order (`kvm_intel 413696 0 - Live 0x0...`)."""
    return tuple(line.split(maxsplit=1)[0] for line in text.splitlines() if line.strip())


def hypervisor_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    """The loaded modules of HYPERVISOR_MODULES, in that order."""
    loaded = set(modules)
    return tuple(m for m in HYPERVISOR_MODULES if m in loaded)


def parse_boot_id(text: str) -> str:
    """proc/sys/kernel/random/boot_id: a UUID, fresh each boot (the kmsg cursor's first half)."""
    value = text.strip()
    if len(value) != 36 or value.count("-") != 4:
        raise ParseError(f"boot_id {value[:40]!r} is not a UUID")
    return value


def parse_mitigate(text: str) -> int:
    """proc/sys/kernel/split_lock_mitigate: 0 or 1 (proc_douintvec_minmax keeps it in range)."""
    value = text.strip()
    if value not in ("0", "1"):
        raise ParseError(f"split_lock_mitigate is {value[:20]!r}, expected 0 or 1")
    return int(value)
