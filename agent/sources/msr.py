"""Per-CPU split-lock state from `dev/cpu/N/msr` under the host root (docs/kernel.md). Never raises.

For each CPU: MSR_IA32_CORE_CAPS (0xcf) bit 5 first; MSR_TEST_CTRL (0x33) bit 29 only where the CPU
supports split-lock detection (CORE_CAPS says so, or the kernel's `split_lock_detect` cpuinfo flag
does: Ice Lake and Tremont support it without the CORE_CAPS bit); IA32_DEBUGCTL (0x1d9) bit 2.
Reads only — the agent never writes an MSR.

Outcomes, per CPU and for the whole source:
- ok      every MSR that applies was read
- absent  no msr file: the msr module is not loaded (`modprobe msr`)
- denied  EPERM/EACCES: the msr driver wants CAP_SYS_RAWIO (run as root)
- failed  EIO or anything else: the CPU lacks the MSR, or we run inside a guest
One broken CPU never stops the others; its sentence lands in its CpuState.error. The source is `ok`
as soon as one CPU could be read.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Literal

from agent.host import HostRoot
from agent.kernel import msr
from agent.payload import CpuState

Status = Literal["ok", "absent", "denied", "failed"]

REMEDY_ABSENT = "msr module not loaded: modprobe msr"
REMEDY_DENIED = "run as root or grant CAP_SYS_RAWIO"


@dataclass(frozen=True)
class MsrResult:
    status: Status
    error: str | None
    cpus: tuple[CpuState, ...]
    sld_supported: bool | None  # None: no CPU could tell
    # CORE_CAPS bit 5 alone (the cpuinfo flag left out): True on any CPU, False when read and clear
    # everywhere, None when no CPU's CORE_CAPS could be read. The consistency verdict needs it raw.
    core_caps: bool | None = None


class _CpuError(Exception):
    def __init__(self, outcome: Status, sentence: str) -> None:
        super().__init__(sentence)
        self.outcome: Status = outcome
        self.sentence = sentence


def _errno_name(err: OSError) -> str:
    return errno.errorcode.get(err.errno or 0, str(err.errno))


def _open_error(cpu: int, rel: str, err: OSError) -> _CpuError:
    if err.errno == errno.ENOENT:
        return _CpuError("absent", f"cpu {cpu}: no {rel}: {REMEDY_ABSENT}")
    if err.errno in (errno.EPERM, errno.EACCES):
        return _CpuError("denied", f"cpu {cpu}: cannot read {rel} (permission denied): {REMEDY_DENIED}")
    if err.errno == errno.ENXIO:
        return _CpuError(
            "failed",
            f"cpu {cpu}: cannot read {rel} (ENXIO): the CPU is offline or has no MSRs; "
            f"bring it online (echo 1 > /sys/devices/system/cpu/cpu{cpu}/online) or ignore it",
        )
    return _CpuError(
        "failed",
        f"cpu {cpu}: cannot read {rel} ({_errno_name(err)}: {err.strerror}): "
        "check that it is the msr driver's device and the agent's --root",
    )


def _pread(fd: int, cpu: int, rel: str, index: int) -> int:
    try:
        data = os.pread(fd, 8, index)
    except OSError as err:
        if err.errno == errno.EIO:
            data = b""
        else:
            raise _open_error(cpu, rel, err) from err
    if len(data) != 8:
        # The driver's EIO, or a fake host's sparse file that ends before `index`: the same fact.
        raise _CpuError(
            "failed",
            f"MSR {index:#x} not readable on cpu {cpu} (EIO): "
            "not supported by this CPU or running in a guest",
        )
    return msr.parse_msr_value(data)


def _read_cpu(host: HostRoot, cpu: int, sld_flag: bool | None) -> tuple[CpuState, Status, bool | None]:
    """(state, outcome, CORE_CAPS verdict: True/False, None when the MSR could not be asked)."""
    rel = f"dev/cpu/{cpu}/msr"
    try:
        # O_NONBLOCK: harmless on the msr device, and a FIFO planted in a fake root cannot hang us.
        fd = host.open_fd(rel, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        failure = _open_error(cpu, rel, err)
        return CpuState(cpu, None, None, None, failure.sentence), failure.outcome, None
    test_ctrl: int | None = None
    sld: bool | None = None
    bld: bool | None = None
    supported: bool | None = None
    try:
        try:
            supported = msr.sld_supported(_pread(fd, cpu, rel, msr.MSR_IA32_CORE_CAPS))
        except _CpuError as failure:
            if failure.outcome != "failed":
                raise
            # No CORE_CAPS MSR (pre-Tremont CPUs, most guests): no split-lock detection by that
            # route; the cpuinfo flag may still say the kernel knows the model supports it.
            supported = False
        if supported or sld_flag:
            test_ctrl = _pread(fd, cpu, rel, msr.MSR_TEST_CTRL)
            sld = msr.sld_on(test_ctrl)
        bld = msr.bld_on(_pread(fd, cpu, rel, msr.MSR_IA32_DEBUGCTL))
    except _CpuError as failure:
        return CpuState(cpu, test_ctrl, sld, bld, failure.sentence), failure.outcome, supported
    finally:
        os.close(fd)
    return CpuState(cpu, test_ctrl, sld, bld, None), "ok", supported


def _cpu_numbers(host: HostRoot) -> list[int]:
    # dev/cpu also holds `microcode` and whatever else udev puts there: only numbers are CPUs.
    return sorted(int(name) for name in host.listdir("dev/cpu") if name.isdigit())


def collect(host: HostRoot, *, sld_flag: bool | None = None) -> MsrResult:
    """Every CPU's MSR state. `sld_flag` is cpuinfo's `split_lock_detect` (agent.sources.procfs)."""
    try:
        cpus = _cpu_numbers(host)
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            return MsrResult("denied", f"cannot list dev/cpu (permission denied): {REMEDY_DENIED}", (), None)
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return MsrResult("absent", f"no dev/cpu under the host root: {REMEDY_ABSENT}", (), None)
        return MsrResult("failed", f"cannot list dev/cpu ({_errno_name(err)}: {err.strerror})", (), None)
    if not cpus:
        return MsrResult("absent", f"no CPU under dev/cpu: {REMEDY_ABSENT}", (), None)

    states: list[CpuState] = []
    outcomes: list[Status] = []
    verdicts: list[bool | None] = []
    for cpu in cpus:
        state, outcome, verdict = _read_cpu(host, cpu, sld_flag)
        states.append(state)
        outcomes.append(outcome)
        verdicts.append(verdict)

    core_caps = True if True in verdicts else False if False in verdicts else None
    if True in verdicts or sld_flag:
        supported: bool | None = True
    elif False in verdicts:
        supported = False
    else:
        supported = None

    if all(o == "absent" for o in outcomes):
        # cpuid's dev/cpu/N directories without the msr module's files: nothing to report per CPU.
        return MsrResult("absent", f"no dev/cpu/*/msr: {REMEDY_ABSENT}", (), supported, core_caps)
    if "ok" in outcomes:
        return MsrResult("ok", None, tuple(states), supported, core_caps)
    status: Status = "denied" if "denied" in outcomes else "failed"
    first = next(s.error for s, o in zip(states, outcomes) if o == status)
    others = len(states) - 1
    error = f"{first} (and {others} more CPUs)" if others else first
    return MsrResult(status, error, tuple(states), supported, core_caps)
