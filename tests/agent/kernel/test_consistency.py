"""The consistency verdict, one table per kernel era, hand-made evidence in, a verdict and its words out.

Every era the issue names (16): 5.4, RHEL 8's 4.18.0-394.el8 (knob off and on), 5.10, 5.13 (ratelimit
falls back to warn), 5.15, 5.19, 6.1 with and without the sysctl, 6.6 with mitigate 0 and 1, 6.15+.
The kernel facts are stated here on their own (docs/kernel.md), not imported from the code.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.kernel.consistency import Evidence, Sample, verdict
from agent.kernel.modes import parse_cmdline_mode

CPUS = 8
WARN_LINE = (
    "x86/split lock detection: #AC: crashing the kernel on kernel split_locks and warning on user-space "
    "split_locks"
)


def off_for(samples: int, *cpus: int, trapped_cpus: frozenset[int] | None = None) -> tuple[Sample, ...]:
    """`samples` earlier samples in which `cpus` read off (the current one comes on top)."""
    return tuple(
        Sample(off=frozenset(cpus), trapped=False, trapped_cpus=trapped_cpus) for _ in range(samples)
    )


def ev(release: str, *, off: tuple[int, ...] = (), **kw: Any) -> Evidence:
    """A host with a capable CPU (cpuinfo flag and CORE_CAPS bit 5), 8 CPUs, `off` reading bit 29 clear."""
    facts: dict[str, Any] = {
        "release": release,
        "cpuinfo_sld": True,
        "core_caps_sld": True,
        "cpus_off": frozenset(off),
        "cpus_on": frozenset(range(CPUS)) - frozenset(off),
    }
    facts.update(kw)
    return Evidence(**facts)


WARN_BOOT = {"boot_mode": "warn", "boot_sld": True, "boot_line": WARN_LINE}
FATAL_BOOT = {
    "boot_mode": "fatal",
    "boot_sld": True,
    "boot_line": "x86/split lock detection: #AC: ... SIGBUS",
}
OFF_BOOT = {"boot_mode": "off", "boot_sld": False, "boot_line": "x86/split lock detection: disabled"}
RHEL = "4.18.0-394.el8.x86_64"

# (name, evidence, verdict, words the reason must hold)
CASES: list[tuple[str, Evidence, str, tuple[str, ...]]] = [
    # -- 5.4: no split-lock detection in the kernel ------------------------------------------------
    (
        "5.4 on a capable CPU with every core off in many samples is unsupported, never drift",
        ev("5.4.0-216-generic", off=tuple(range(CPUS)), cpuinfo_sld=False, history=off_for(6, *range(CPUS))),
        "unsupported",
        ("5.4.0-216-generic", "predates split-lock detection (5.7)"),
    ),
    (
        "5.4 on a CPU without the capability says it is the CPU",
        ev("5.4.0-216-generic", cpuinfo_sld=False, core_caps_sld=False, off=tuple(range(CPUS))),
        "unsupported",
        ("this CPU has no split-lock detection",),
    ),
    # -- RHEL 8.7, 4.18.0-394.el8: backported, default off, runtime knob ---------------------------
    (
        "RHEL 8 with the knob off is off by design",
        ev(RHEL, knob="off", off=tuple(range(CPUS)), history=off_for(5, *range(CPUS))),
        "off_by_design",
        ("knob says off",),
    ),
    (
        "RHEL 8 without knob nor cmdline is the distribution's default off, not mainline's warn",
        ev(RHEL, off=tuple(range(CPUS)), history=off_for(5, *range(CPUS))),
        "off_by_design",
        ("distribution kernel's default (off)",),
    ),
    (
        "RHEL 8 with the knob on warn and an offender is per-task off (pre-5.19 rules)",
        ev(RHEL, knob="warn", off=(2,), offenders=("win2012-app",), history=off_for(3, 2)),
        "per_task_off",
        ("win2012-app", "counts are a floor"),
    ),
    (
        "RHEL 8 with the knob on warn and a core off in 3 samples without any trap is drift",
        ev(RHEL, knob="warn", off=(6,), history=off_for(2, 6)),
        "drift",
        ("cpu 6", "3 consecutive samples"),
    ),
    (
        "RHEL 8 with the knob on warn and every core on is consistent",
        ev(RHEL, knob="[warn] off fatal"),
        "consistent",
        ("on on all 8 CPUs",),
    ),
    # -- 5.10: per-task era (TIF_SLD) -------------------------------------------------------------
    (
        "5.10 warn: a guest that trapped leaves its core off for life: per-task off naming it",
        ev(
            "5.10.0-28-amd64",
            off=(3,),
            offenders=("win2012-app", "web-04"),
            history=off_for(4, 3),
            **WARN_BOOT,
        ),
        "per_task_off",
        ("win2012-app, web-04", "neither trapped nor counted", "floor"),
    ),
    (
        "5.10 warn: cores off in 3 samples with no trap this boot is drift",
        ev("5.10.0-28-amd64", off=(4, 5), history=off_for(2, 4, 5), **WARN_BOOT),
        "drift",
        ("cpu 4-5", "wrote MSR_TEST_CTRL (0x33)"),
    ),
    (
        "5.10 fatal: one off read is not drift yet",
        ev("5.10.0-28-amd64", off=(1,), cmdline_mode="fatal", cmdline_given=True, **FATAL_BOOT),
        "transient",
        ("fewer than 3 consecutive samples",),
    ),
    (
        "5.10 booted off: off by design",
        ev("5.10.0-28-amd64", off=tuple(range(CPUS)), cmdline_mode="off", cmdline_given=True, **OFF_BOOT),
        "off_by_design",
        ("off",),
    ),
    (
        "5.10: cmdline fatal but the boot line says warn is inconsistent config naming the pair",
        ev("5.10.0-28-amd64", cmdline_mode="fatal", cmdline_given=True, **WARN_BOOT),
        "inconsistent_config",
        ("split_lock_detect=fatal", "boot line says warn"),
    ),
    (
        "5.10 warn with vboxdrv loaded is a foreign hypervisor, named with its time",
        ev("5.10.0-28-amd64", foreign_modules=(("vboxdrv", "2026-11-30T08:00:00.000000Z"),), **WARN_BOOT),
        "foreign_hypervisor",
        ("vboxdrv", "2026-11-30T08:00:00.000000Z"),
    ),
    # -- 5.13: ratelimit:N does not exist yet (5.14+): warn ---------------------------------------
    (
        "5.13 with split_lock_detect=ratelimit:10 runs in warn and its boot line agrees: consistent",
        ev(
            "5.13.0-52-generic",
            cmdline_mode=str(parse_cmdline_mode("ro split_lock_detect=ratelimit:10", kernel=(5, 13))[0]),
            cmdline_given=True,
            **WARN_BOOT,
        ),
        "consistent",
        ("warn",),
    ),
    (
        "5.13 warn with an offender is per-task off",
        ev("5.13.0-52-generic", off=(0,), offenders=("batch-01",), **WARN_BOOT),
        "per_task_off",
        ("batch-01",),
    ),
    # -- 5.15 -------------------------------------------------------------------------------------
    (
        "5.15: the boot line says #AC on but cpuinfo has no flag: inconsistent config",
        ev("5.15.0-126-generic", cpuinfo_sld=False, **WARN_BOOT),
        "inconsistent_config",
        ("boot line", "cpuinfo"),
    ),
    (
        "5.15 warn without MSR access is unsupported, saying why",
        ev("5.15.0-126-generic", msr_status="denied", cpus_on=frozenset(), **WARN_BOOT),
        "unsupported",
        ("no MSR access", "CAP_SYS_RAWIO"),
    ),
    (
        "5.15 warn, nothing off: consistent",
        ev("5.15.0-126-generic", **WARN_BOOT),
        "consistent",
        ("on on all 8 CPUs",),
    ),
    # -- 5.19: misery mode, no sysctl -------------------------------------------------------------
    (
        "5.19 warn: a core off once after traps is transient",
        ev("5.19.0-50-generic", off=(2,), offenders=("web-01",), trapped=True, **WARN_BOOT),
        "transient",
        ("2 jiffies",),
    ),
    (
        "5.19 warn without tracefs: off in 3 samples while guests trap is unverifiable, not drift",
        ev("5.19.0-50-generic", off=(2,), offenders=("web-01",), history=off_for(2, 2), **WARN_BOOT),
        "transient",
        ("unverifiable while trapping", "no kernel line"),
    ),
    (
        "5.19 warn with tracefs: a core off in 3 samples that never trapped is drift",
        ev(
            "5.19.0-50-generic",
            off=(2,),
            offenders=("web-01",),
            trapped_cpus=frozenset({5}),
            history=off_for(2, 2, trapped_cpus=frozenset({5})),
            **WARN_BOOT,
        ),
        "drift",
        ("cpu 2",),
    ),
    # -- 6.1: with and without the sysctl ---------------------------------------------------------
    (
        "6.1.0 without the sysctl cannot have the stuck-off bug: unexplained cores are drift",
        ev(
            "6.1.0-1-amd64",
            off=(3,),
            trapped_cpus=frozenset(),
            trap_cpus_boot=4,
            history=off_for(2, 3, trapped_cpus=frozenset()),
            **WARN_BOOT,
        ),
        "drift",
        ("cpu 3",),
    ),
    (
        "6.1.y with the sysctl at 0 and traps on several CPUs: stuck off",
        ev(
            "6.1.0-26-amd64",
            mitigate=0,
            off=(3,),
            trapped_cpus=frozenset(),
            trap_cpus_boot=2,
            history=off_for(2, 3, trapped_cpus=frozenset()),
            **WARN_BOOT,
        ),
        "stuck_off",
        ("split_lock_mitigate=0", "Fix the delayed detection logic"),
    ),
    # -- 6.6: mitigate 0 and 1 --------------------------------------------------------------------
    (
        "6.6 mitigate 0, cpu 5 stays off after traps on 3 CPUs: stuck off, not drift",
        ev(
            "6.6.58-generic",
            mitigate=0,
            off=(5,),
            trapped_cpus=frozenset(),
            trap_cpus_boot=3,
            history=off_for(4, 5, trapped_cpus=frozenset()),
            **WARN_BOOT,
        ),
        "stuck_off",
        ("cpu 5", "traps on 3 CPUs"),
    ),
    (
        "6.6 mitigate 0 without tracefs counts trapping threads instead of CPUs",
        ev(
            "6.6.58-generic",
            mitigate=0,
            off=(5,),
            offenders=("gameserver-01", "ha-01"),
            trap_threads_boot=2,
            history=off_for(2, 5),
            **WARN_BOOT,
        ),
        "stuck_off",
        ("traps by 2 threads",),
    ),
    (
        "6.6 mitigate 1, the same cores off: drift (one re-enable work per trap there)",
        ev(
            "6.6.58-generic",
            mitigate=1,
            off=(5,),
            trapped_cpus=frozenset(),
            trap_cpus_boot=3,
            history=off_for(4, 5, trapped_cpus=frozenset()),
            **WARN_BOOT,
        ),
        "drift",
        ("cpu 5",),
    ),
    (
        "6.6 mitigate 1, a core off in 3 samples that trapped in each: unverifiable while trapping",
        ev(
            "6.6.58-generic",
            mitigate=1,
            off=(5,),
            trapped=True,
            trapped_cpus=frozenset({5, 6}),
            history=off_for(2, 5, trapped_cpus=frozenset({5})),
            **WARN_BOOT,
        ),
        "transient",
        ("unverifiable while trapping", "had a trap in every sample"),
    ),
    (
        "6.6 booted off with bit 29 on on two cores: inconsistent config (mode vs MSR)",
        ev(
            "6.6.58-generic",
            mitigate=1,
            cmdline_mode="off",
            cmdline_given=True,
            cpus_on=frozenset({0, 1}),
            cpus_off=frozenset(range(2, CPUS)),
            **OFF_BOOT,
        ),
        "inconsistent_config",
        ("mode is off", "cpu 0-1", "wrmsr 0x33"),
    ),
    (
        "6.6 ratelimit:10 turns #AC off by design",
        ev(
            "6.6.58-generic",
            mitigate=1,
            cmdline_mode="ratelimit",
            cmdline_given=True,
            ratelimit=10,
            boot_mode="ratelimit",
            off=tuple(range(CPUS)),
        ),
        "off_by_design",
        ("ratelimit:10",),
    ),
    # -- 6.15+: the stuck-off fix is in -----------------------------------------------------------
    (
        "6.15 mitigate 0 with traps on several CPUs: no stuck-off bug any more, so drift",
        ev(
            "6.15.2-generic",
            mitigate=0,
            off=(7,),
            trapped_cpus=frozenset(),
            trap_cpus_boot=5,
            history=off_for(2, 7, trapped_cpus=frozenset()),
            **WARN_BOOT,
        ),
        "drift",
        ("cpu 7",),
    ),
    (
        "6.15 fatal, every core on: consistent",
        ev("6.15.2-generic", mitigate=1, cmdline_mode="fatal", cmdline_given=True, **FATAL_BOOT),
        "consistent",
        ("fatal",),
    ),
    # -- inside a VM -------------------------------------------------------------------------------
    (
        "a virtual machine is unsupported: its MSRs are not the host's",
        ev(
            "6.8.0-49-generic",
            cpuinfo_sld=False,
            core_caps_sld=None,
            hypervisor_flag=True,
            msr_status="failed",
        ),
        "unsupported",
        ("virtual machine",),
    ),
]


@pytest.mark.parametrize(("name", "facts", "expected", "words"), CASES, ids=[c[0] for c in CASES])
def test_verdict(name: str, facts: Evidence, expected: str, words: tuple[str, ...]) -> None:
    result = verdict(facts)
    assert result.name == expected, result.reason
    for word in words:
        assert word in result.reason, (word, result.reason)


def test_every_verdict_is_reached_by_some_case() -> None:
    names = {c[2] for c in CASES}
    assert names == {
        "consistent",
        "unsupported",
        "off_by_design",
        "transient",
        "per_task_off",
        "stuck_off",
        "drift",
        "inconsistent_config",
        "foreign_hypervisor",
    }


def test_drift_names_the_cores_and_needs_action_while_transient_does_not() -> None:
    drift = verdict(ev("6.8.0-49-generic", mitigate=1, off=(2, 3), history=off_for(2, 2, 3), **WARN_BOOT))
    assert (drift.name, drift.details["cpus"], drift.needs_action) == ("drift", [2, 3], True)
    once = verdict(ev("6.8.0-49-generic", mitigate=1, off=(2, 3), trapped=True, **WARN_BOOT))
    assert (once.name, once.needs_action) == ("transient", False)


def test_a_core_back_on_breaks_the_run_of_samples() -> None:
    history = (Sample(frozenset({2})), Sample(frozenset()), Sample(frozenset({2})))
    assert (
        verdict(ev("6.8.0-49-generic", mitigate=1, off=(2,), history=history, **WARN_BOOT)).name
        == "transient"
    )


def test_the_knob_changes_the_mode_after_boot_and_wins_over_the_boot_line() -> None:
    facts = ev(RHEL, knob="off", off=tuple(range(CPUS)), **WARN_BOOT)
    assert verdict(facts).name == "off_by_design"


def test_payload_shape_is_verdict_reason_details() -> None:
    body = verdict(ev("6.8.0-49-generic", mitigate=1, **WARN_BOOT)).to_dict()
    assert set(body) == {"verdict", "reason", "details"}
    assert body["details"]["mode"] == "warn"


# -- the matrix: the same situations on every era ----------------------------------------------------

ERAS: dict[str, dict[str, Any]] = {
    "5.4": {"release": "5.4.0-216-generic", "cpuinfo_sld": False, "boot_mode": None},
    "rhel8-knob-off": {"release": RHEL, "knob": "off", "boot_mode": None},
    "rhel8-knob-warn": {"release": RHEL, "knob": "warn", "boot_mode": None},
    "5.10": {"release": "5.10.0-28-amd64"},
    "5.13": {"release": "5.13.0-52-generic"},
    "5.15": {"release": "5.15.0-126-generic"},
    "5.19": {"release": "5.19.0-50-generic"},
    "6.1-no-sysctl": {"release": "6.1.0-1-amd64"},
    "6.1-sysctl": {"release": "6.1.0-26-amd64", "mitigate": 0},
    "6.6-mitigate-0": {"release": "6.6.58-generic", "mitigate": 0},
    "6.6-mitigate-1": {"release": "6.6.58-generic", "mitigate": 1},
    "6.15": {"release": "6.15.2-generic", "mitigate": 0},
}
TWO_CPUS = frozenset({0, 1})
SITUATIONS: dict[str, dict[str, Any]] = {
    "every core on": {},
    "cpu 6 off in 3 samples, no trap this boot": {"off": (6,), "history": off_for(2, 6)},
    "a guest trapped, its core off in 3 samples, no tracefs": {
        "off": (6,),
        "offenders": ("win2012-app",),
        "trap_threads_boot": 1,
        "history": off_for(2, 6),
    },
    "threads trapped on cpu 0 and 1; cpu 6 off in 3 samples and never trapping (tracefs)": {
        "off": (6,),
        "offenders": ("web-14", "app-14"),
        "trap_cpus_boot": 2,
        "trap_threads_boot": 2,
        "trapped_cpus": TWO_CPUS,
        "history": off_for(2, 6, trapped_cpus=TWO_CPUS),
    },
    "vboxdrv loaded": {"foreign_modules": (("vboxdrv", "2026-11-30T08:00:00.000000Z"),)},
    "cmdline fatal, boot line warn": {"cmdline_mode": "fatal", "cmdline_given": True, "boot_mode": "warn"},
    "no MSR access": {"msr_status": "absent", "core_caps_sld": None, "cpus_on": frozenset()},
    "cpu 2 off once, right after a trap": {"off": (2,), "trapped": True},
}
# One column per era, in ERAS order.
EXPECTED: dict[str, tuple[str, ...]] = {
    "every core on": (
        "unsupported", "inconsistent_config", "consistent", "consistent", "consistent", "consistent",
        "consistent", "consistent", "consistent", "consistent", "consistent", "consistent",
    ),
    "cpu 6 off in 3 samples, no trap this boot": (
        "unsupported", "off_by_design", "drift", "drift", "drift", "drift",
        "drift", "drift", "drift", "drift", "drift", "drift",
    ),
    "a guest trapped, its core off in 3 samples, no tracefs": (
        "unsupported", "off_by_design", "per_task_off", "per_task_off", "per_task_off", "per_task_off",
        "transient", "transient", "transient", "transient", "transient", "transient",
    ),
    "threads trapped on cpu 0 and 1; cpu 6 off in 3 samples and never trapping (tracefs)": (
        "unsupported", "off_by_design", "per_task_off", "per_task_off", "per_task_off", "per_task_off",
        "drift", "drift", "stuck_off", "stuck_off", "drift", "drift",
    ),
    "vboxdrv loaded": (
        "unsupported", "off_by_design", "foreign_hypervisor", "foreign_hypervisor", "foreign_hypervisor",
        "foreign_hypervisor", "foreign_hypervisor", "foreign_hypervisor", "foreign_hypervisor",
        "foreign_hypervisor", "foreign_hypervisor", "foreign_hypervisor",
    ),
    # On 5.4 a split-lock boot line is itself the kernel's evidence of a backport: then compared.
    "cmdline fatal, boot line warn": (
        "inconsistent_config", "inconsistent_config", "inconsistent_config", "inconsistent_config",
        "inconsistent_config", "inconsistent_config", "inconsistent_config", "inconsistent_config",
        "inconsistent_config", "inconsistent_config", "inconsistent_config", "inconsistent_config",
    ),
    "no MSR access": (
        "unsupported", "off_by_design", "unsupported", "unsupported", "unsupported", "unsupported",
        "unsupported", "unsupported", "unsupported", "unsupported", "unsupported", "unsupported",
    ),
    "cpu 2 off once, right after a trap": (
        "unsupported", "off_by_design", "transient", "transient", "transient", "transient",
        "transient", "transient", "transient", "transient", "transient", "transient",
    ),
}  # fmt: skip
MATRIX = [(situation, era, EXPECTED[situation][i]) for situation in SITUATIONS for i, era in enumerate(ERAS)]


@pytest.mark.parametrize(("situation", "era", "expected"), MATRIX, ids=[f"{e} | {s}" for s, e, _ in MATRIX])
def test_each_situation_on_each_era(situation: str, era: str, expected: str) -> None:
    facts: dict[str, Any] = {**WARN_BOOT, **ERAS[era], **SITUATIONS[situation]}
    if facts.get("boot_mode") is None:
        facts.update(boot_sld=None, boot_line=None)
    if ERAS[era].get("knob") == "off" and situation != "every core on":
        # The knob turned detection off: every core reads off (the first row shows one reading on).
        facts.pop("off", None)
        facts.update(cpus_on=frozenset(), cpus_off=frozenset(range(CPUS)))
    release = facts.pop("release")
    result = verdict(ev(release, **facts))
    assert result.name == expected, result.reason
