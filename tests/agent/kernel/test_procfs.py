# ruff: noqa: E501  (real cpuinfo flags lines are kept verbatim)
"""procfs parsers: a table of named cases per parser, real text verbatim."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ParseError
from agent.kernel import procfs

# Verbatim heads of real files (trimmed to the CPUs shown; the parser reads every block).
CPUINFO_SAPPHIRE_RAPIDS = """\
processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8480+
stepping	: 8
microcode	: 0x2b0004b1
cpu MHz		: 2000.000
cache size	: 107520 KB
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb cat_l3 cat_l2 cdp_l3 invpcid_single cdp_l2 ssbd mba ibrs ibpb stibp ibrs_enhanced tpr_shadow flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb intel_pt avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local split_lock_detect user_shstk avx_vnni avx512_bf16 wbnoinvd dtherm ida arat pln pts hfi vnmi avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 rdpid bus_lock_detect cldemote movdiri movdir64b enqcmd fsrm md_clear serialize tsxldtrk pconfig arch_lbr ibt amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities
bugs		: spectre_v1 spectre_v2 spec_store_bypass swapgs eibrs_pbrsb bhi
bogomips	: 4000.00

processor	: 1
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep split_lock_detect bus_lock_detect
"""

CPUINFO_AMD_GUEST = """\
processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 1
model name	: AMD EPYC
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni hypervisor
power management:

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC
flags		: fpu vme de pse hypervisor
power management:
"""

CPUINFO_CASES = [
    (
        "Sapphire Rapids: both detections",
        CPUINFO_SAPPHIRE_RAPIDS,
        "Intel(R) Xeon(R) Platinum 8480+",
        2,
        True,
        True,
    ),
    ("AMD guest: neither", CPUINFO_AMD_GUEST, "AMD EPYC", 2, False, False),
    (
        "guest with bus_lock_detect only (CPUID passes through, split_lock_detect never in guests)",
        "processor\t: 0\nmodel name\t: Intel Xeon Processor (Icelake)\nflags\t\t: fpu hypervisor bus_lock_detect\n",
        "Intel Xeon Processor (Icelake)",
        1,
        False,
        True,
    ),
    ("no model name (some VMs)", "processor\t: 0\nflags\t\t: fpu\n", "", 1, False, False),
    ("no flags line", "processor\t: 0\nmodel name\t: X\n", "X", 1, False, False),
]


@pytest.mark.parametrize(
    ("text", "model", "count", "sld", "bld"),
    [c[1:] for c in CPUINFO_CASES],
    ids=[c[0] for c in CPUINFO_CASES],
)
def test_cpuinfo_gives_model_cpu_count_and_detection_flags(
    text: str, model: str, count: int, sld: bool, bld: bool
) -> None:
    info = procfs.parse_cpuinfo(text)
    assert (info.model, info.count, info.split_lock_detect, info.bus_lock_detect) == (model, count, sld, bld)


def test_a_flag_that_only_contains_the_word_does_not_count() -> None:
    info = procfs.parse_cpuinfo("processor\t: 0\nflags\t\t: fpu no_split_lock_detect\n")
    assert info.split_lock_detect is False


@pytest.mark.parametrize("text", ["", "garbage\n", "model name\t: X\n"])
def test_cpuinfo_without_a_processor_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="processor"):
        procfs.parse_cpuinfo(text)


STATUS_QEMU_VCPU = """\
Name:	CPU 0/KVM
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Ngid:	0
Pid:	4243
PPid:	1
TracerPid:	0
"""


def test_status_gives_the_thread_group_of_a_vcpu_thread() -> None:
    assert procfs.parse_status_tgid(STATUS_QEMU_VCPU) == 4242


def test_status_name_keeps_spaces_and_slashes_of_the_comm() -> None:
    assert procfs.parse_status_name(STATUS_QEMU_VCPU) == "CPU 0/KVM"
    assert procfs.parse_status_name("Name:\tCJobMgr::m_Work\nTgid:\t1\n") == "CJobMgr::m_Work"
    assert procfs.parse_status_name("Tgid:\t1\n") is None


@pytest.mark.parametrize("text", ["", "Name:\tx\n", "Tgid:\t\n", "Tgid:\tabc\n"])
def test_status_without_a_numeric_tgid_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="Tgid"):
        procfs.parse_status_tgid(text)


STAT = """\
cpu  2255 34 2290 22625563 6290 127 456 0 0 0
cpu0 1132 34 1441 11311718 3675 127 438 0 0 0
intr 114930548 113199788 3 0 5 263 0 4 [... 220 more numbers ...]
ctxt 1990473
btime 1062191376
processes 2915
procs_running 1
procs_blocked 0
softirq 183433 0 21755 12 39 1137 231 21459 2263
"""


def test_stat_gives_btime() -> None:
    assert procfs.parse_stat_btime(STAT) == 1062191376


@pytest.mark.parametrize("text", ["", "cpu 1 2 3\n", "btime\n", "btime soon\n"])
def test_stat_without_btime_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="btime"):
        procfs.parse_stat_btime(text)


MODULES = """\
kvm_intel 413696 8 - Live 0x0000000000000000
kvm 1363968 1 kvm_intel, Live 0x0000000000000000
irqbypass 12288 3 kvm, Live 0x0000000000000000
vboxdrv 696320 2 vboxnetadp,vboxnetflt, Live 0x0000000000000000 (OE)
"""


def test_modules_lists_names_in_file_order() -> None:
    assert procfs.parse_modules(MODULES) == ("kvm_intel", "kvm", "irqbypass", "vboxdrv")
    assert procfs.parse_modules("") == ()


HYPERVISORS = [
    ("KVM on Intel", ("kvm_intel", "kvm"), ("kvm_intel",)),
    ("KVM on AMD", ("kvm", "kvm_amd"), ("kvm_amd",)),
    ("VMware Workstation", ("vmmon", "vmnet"), ("vmmon",)),
    ("VirtualBox next to KVM", ("vboxdrv", "kvm_intel"), ("kvm_intel", "vboxdrv")),
    ("plain host", ("ext4", "xfs"), ()),
]


@pytest.mark.parametrize(
    ("modules", "expected"), [h[1:] for h in HYPERVISORS], ids=[h[0] for h in HYPERVISORS]
)
def test_hypervisor_modules_are_picked_out(modules: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert procfs.hypervisor_modules(modules) == expected


def test_boot_id_is_a_uuid() -> None:
    assert (
        procfs.parse_boot_id("b50e6b71-5ae3-42e6-8316-6c6cf6951274\n")
        == "b50e6b71-5ae3-42e6-8316-6c6cf6951274"
    )
    with pytest.raises(ParseError, match="boot_id"):
        procfs.parse_boot_id("not-a-uuid\n")


@pytest.mark.parametrize(("text", "expected"), [("0\n", 0), ("1\n", 1)])
def test_split_lock_mitigate_is_0_or_1(text: str, expected: int) -> None:
    assert procfs.parse_mitigate(text) == expected


@pytest.mark.parametrize("text", ["", "2\n", "yes\n"])
def test_split_lock_mitigate_other_values_are_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="split_lock_mitigate"):
        procfs.parse_mitigate(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_parse_error_never_anything_else(text: str) -> None:
    for parse in (
        procfs.parse_cpuinfo,
        procfs.parse_status_tgid,
        procfs.parse_stat_btime,
        procfs.parse_boot_id,
        procfs.parse_mitigate,
    ):
        with contextlib.suppress(ParseError):
            parse(text)
    procfs.parse_modules(text)
    procfs.parse_status_name(text)
