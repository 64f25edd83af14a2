"""Host facts from procfs under the host root (DESIGN.md §2). Never raises.

Reads, once per call: proc/sys/kernel/{hostname,osrelease,random/boot_id,split_lock_mitigate},
proc/stat (btime), proc/cmdline, proc/cpuinfo, proc/modules. Everything comes from under the root —
never os.uname(), socket.gethostname() or platform — so a fake host is described, not this machine.

A file that cannot be read or parsed gives a sane default plus one sentence in `errors` naming
the file, the cause and the remedy. split_lock_mitigate is absent before 6.2 (6.1.y backport): that
is None and no error.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.errors import ParseError
from agent.host import HostRoot
from agent.kernel import procfs
from agent.kernel.modes import UNKNOWN_KERNEL, parse_cmdline_mode, parse_kernel_release
from agent.payload import Mode

UNKNOWN = "unknown"
T = TypeVar("T")


@dataclass(frozen=True)
class ProcfsResult:
    hostname: str
    kernel: str  # osrelease as written, e.g. "6.8.0-49-generic"
    boot_id: str
    btime: int
    mode: Mode  # what split_lock_detect= on the command line selects (the kernel's parse)
    ratelimit: int | None
    mitigate: int | None
    cpu_model: str
    cpu_count: int
    sld_flag: bool
    bld_flag: bool
    hypervisor_modules: tuple[str, ...]
    errors: tuple[str, ...]

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
    boot_id = read.parsed("proc/sys/kernel/random/boot_id", boot_id_text, procfs.parse_boot_id, "")
    btime = read.parsed("proc/stat", read.text("proc/stat"), procfs.parse_stat_btime, 0)

    try:
        version: tuple[int, int] | None = parse_kernel_release(kernel)
    except ParseError as err:
        if kernel != UNKNOWN:
            read.errors.append(f"cannot parse proc/sys/kernel/osrelease: {err}")
        version = None
    cmdline = read.text("proc/cmdline")
    mode, ratelimit = parse_cmdline_mode(cmdline or "", kernel=version)

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
    )
