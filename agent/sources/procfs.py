"""Host facts from procfs under the host root (docs/agent.md). Never raises.

Reads, once per call: proc/sys/kernel/{hostname,osrelease,random/boot_id,split_lock_mitigate},
proc/stat (btime), proc/cmdline, proc/cpuinfo, proc/modules, and the runtime split-lock knob
`sys/kernel/split_lock_detect` where a distribution kernel has one (RHEL 8's backport, issue 16).
Everything comes from under the root —
never os.uname(), socket.gethostname() or platform — so a fake host is described, not this machine.

A file that cannot be read or parsed gives a sane default plus one sentence in `errors` naming
the file, the cause and the remedy, except boot_id and btime: an unreadable one is None (never a
made-up value), so the collector neither takes a failed read for a new boot nor dates events in
1970 (issue 16). split_lock_mitigate is absent before 6.2 (and 6.1.y before its backport): that is
None and no error; so is an absent knob.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.errors import ParseError
from agent.host import HostRoot
from agent.kernel import procfs
from agent.kernel.modes import UNKNOWN_KERNEL, cmdline_has_option, parse_cmdline_mode, parse_kernel_release
from agent.payload import Mode

UNKNOWN = "unknown"
# RHEL 8's backport (4.18.0-394.el8 on) changes the split-lock mode after boot through this file.
KNOB = "sys/kernel/split_lock_detect"
T = TypeVar("T")


@dataclass(frozen=True)
class ProcfsResult:
    hostname: str
    kernel: str  # osrelease as written, e.g. "6.8.0-49-generic"
    boot_id: str | None  # None: unreadable (not a new boot)
    btime: int | None  # None: unreadable (never 0: that dates events in 1970)
    mode: Mode  # what split_lock_detect= on the command line selects (the kernel's parse)
    ratelimit: int | None
    mitigate: int | None
    cpu_model: str
    cpu_count: int
    sld_flag: bool
    bld_flag: bool
    hypervisor_modules: tuple[str, ...]
    errors: tuple[str, ...]
    cmdline_given: bool = False  # split_lock_detect= is on the command line
    knob: str | None = None  # the runtime sys/kernel/split_lock_detect knob's text, None: absent
    hypervisor_flag: bool = False  # cpuinfo `hypervisor`: this "host" is a virtual machine

    @property
    def kernel_version(self) -> tuple[int, int]:
        """(major, minor) for agent.kernel.modes.derive_action; UNKNOWN_KERNEL when not parseable."""
        try:
            return parse_kernel_release(self.kernel)
        except ParseError:
            return UNKNOWN_KERNEL


def _why(err: OSError) -> str:
    if err.errno == errno.ENOENT:
        return "missing"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"{errno.errorcode.get(err.errno or 0, err.errno)}: {err.strerror}"


class _Reader:
    def __init__(self, host: HostRoot) -> None:
        self.host = host
        self.errors: list[str] = []

    def text(self, rel: str) -> str | None:
        try:
            return self.host.read_text(rel)
        except OSError as err:
            self.errors.append(
                f"cannot read {rel} ({_why(err)}): mount procfs at {self.host.path('proc')} "
                "or point --root at the host's root"
            )
            return None

    def parsed(self, rel: str, text: str | None, parse: Callable[[str], T], default: T) -> T:
        if text is None:
            return default
        try:
            return parse(text)
        except ParseError as err:
            self.errors.append(f"cannot parse {rel}: {err}")
            return default


def collect(host: HostRoot) -> ProcfsResult:
    read = _Reader(host)

    hostname = (read.text("proc/sys/kernel/hostname") or "").strip() or UNKNOWN
    kernel = (read.text("proc/sys/kernel/osrelease") or "").strip() or UNKNOWN
    boot_id_text = read.text("proc/sys/kernel/random/boot_id")
    boot_id: str | None = read.parsed(
        "proc/sys/kernel/random/boot_id", boot_id_text, procfs.parse_boot_id, None
    )
    btime: int | None = read.parsed("proc/stat", read.text("proc/stat"), procfs.parse_stat_btime, None)

    try:
        version: tuple[int, int] | None = parse_kernel_release(kernel)
    except ParseError as err:
        if kernel != UNKNOWN:
            read.errors.append(f"cannot parse proc/sys/kernel/osrelease: {err}")
        version = None
    cmdline = read.text("proc/cmdline")
    mode, ratelimit = parse_cmdline_mode(cmdline or "", kernel=version)
    cmdline_given = cmdline_has_option(cmdline or "")
    try:
        knob: str | None = host.read_text(KNOB).strip()[:64]
    except FileNotFoundError:
        knob = None  # mainline kernels have no runtime knob: the mode is the boot's
    except OSError as err:
        read.errors.append(f"cannot read {KNOB} ({_why(err)}): run as root")
        knob = None

    try:
        mitigate_text: str | None = host.read_text("proc/sys/kernel/split_lock_mitigate")
    except FileNotFoundError:
        mitigate_text = None  # before 6.2 / 6.1.y, or a CPU without split-lock detection
    except OSError as err:
        read.errors.append(f"cannot read proc/sys/kernel/split_lock_mitigate ({_why(err)}): run as root")
        mitigate_text = None
    mitigate: int | None = read.parsed(
        "proc/sys/kernel/split_lock_mitigate", mitigate_text, procfs.parse_mitigate, None
    )

    cpuinfo = read.parsed(
        "proc/cpuinfo", read.text("proc/cpuinfo"), procfs.parse_cpuinfo, procfs.CpuInfo("", 0, frozenset())
    )
    try:
        modules = procfs.parse_modules(host.read_text("proc/modules"))
    except FileNotFoundError:
        modules = ()  # CONFIG_MODULES=n: everything is built in, nothing to list
    except OSError as err:
        read.errors.append(f"cannot read proc/modules ({_why(err)}): point --root at the host's root")
        modules = ()

    return ProcfsResult(
        hostname=hostname,
        kernel=kernel,
        boot_id=boot_id,
        btime=btime,
        mode=mode,
        ratelimit=ratelimit,
        mitigate=mitigate,
        cpu_model=cpuinfo.model or UNKNOWN,
        cpu_count=cpuinfo.count,
        sld_flag=cpuinfo.split_lock_detect,
        bld_flag=cpuinfo.bus_lock_detect,
        hypervisor_modules=procfs.hypervisor_modules(modules),
        errors=tuple(read.errors),
        cmdline_given=cmdline_given,
        knob=knob,
        hypervisor_flag="hypervisor" in cpuinfo.flags,
    )
