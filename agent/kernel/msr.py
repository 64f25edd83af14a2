"""The three MSRs splitwatch reads and what their bits mean (docs/kernel.md). Pure: bytes in, values out.

| MSR                 | index | bit | meaning                                      |
|---------------------|-------|-----|----------------------------------------------|
| MSR_TEST_CTRL       | 0x33  | 29  | split-lock #AC detection on for this core    |
| MSR_IA32_CORE_CAPS  | 0xcf  | 5   | the CPU supports split-lock detection        |
| IA32_DEBUGCTL       | 0x1d9 | 2   | bus-lock #DB detection on (kernel 5.13+)     |

The agent never writes an MSR. `dev/cpu/N/msr` answers `pread(fd, 8, offset=index)` with a
little-endian u64; the msr driver answers EIO for an MSR the CPU lacks (and inside most guests).
"""

from __future__ import annotations

from agent.errors import ParseError

MSR_TEST_CTRL = 0x33
MSR_IA32_CORE_CAPS = 0xCF
MSR_IA32_DEBUGCTL = 0x1D9

TEST_CTRL_SPLIT_LOCK_DETECT = 1 << 29
CORE_CAPS_SPLIT_LOCK_DETECT = 1 << 5
DEBUGCTL_BUS_LOCK_DETECT = 1 << 2

MSR_NAMES = {
    MSR_TEST_CTRL: "MSR_TEST_CTRL",
    MSR_IA32_CORE_CAPS: "MSR_IA32_CORE_CAPS",
    MSR_IA32_DEBUGCTL: "IA32_DEBUGCTL",
}


def parse_msr_value(data: bytes) -> int:
    """The u64 of one 8-byte pread. Anything else is not an MSR value."""
    if len(data) != 8:
        raise ParseError(f"an MSR read gives 8 bytes, got {len(data)}: the msr device is not the msr driver")
    return int.from_bytes(data, "little")


def sld_supported(core_caps: int) -> bool:
    """CORE_CAPS bit 5. Some CPUs (Ice Lake, Tremont) support split-lock detection without setting
    it: the kernel knows them by model (split_lock_cpu_ids), which is why the cpuinfo flag counts too."""
    return bool(core_caps & CORE_CAPS_SPLIT_LOCK_DETECT)


def sld_on(test_ctrl: int) -> bool:
    """TEST_CTRL bit 29. In warn mode the kernel clears it for ~2 ticks after a trap (5.19+), so one
    read that says off is not yet drift."""
    return bool(test_ctrl & TEST_CTRL_SPLIT_LOCK_DETECT)


def bld_on(debugctl: int) -> bool:
    """DEBUGCTL bit 2: bus-lock #DB detection armed on this CPU."""
    return bool(debugctl & DEBUGCTL_BUS_LOCK_DETECT)
