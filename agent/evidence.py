"""What the agent remembers of the current boot for the consistency verdict, and the Evidence it builds.

The verdict (agent/kernel/consistency.py) is pure; this module is its memory. Kept in the agent's
state file (agent/state.py, key `consistency`) with the kmsg cursor, for the boot named there, and
dropped at a new boot. Every list is bounded:

    btime        proc/stat btime of this boot, so a failed read later never dates events in 1970
    boot_line    the kernel's boot mode line(s) seen this boot: {"mode", "sld", "text"}
    modules      foreign hypervisor module -> ISO time it was first seen loaded
    offenders    guests / tasks that split-locked this boot, newest first (OFFENDERS_KEPT)
    trap_cpus    CPUs that trapped this boot (tracefs `[CPU]`)
    trap_tids    threads that trapped this boot (TIDS_KEPT)
    fatal_line   this boot's one `fatal split_lock trap` line (pr_warn_once) was printed
    killed       guests reported killed this boot (KILLED_KEPT)
    inferred     the next number for events the agent infers (a kill known by its VMM's exit)
    alignment    `traps: ... trap alignment check` lines not taken for split locks, this boot
    history      the last HISTORY_KEPT samples: CPUs off, trapped, trapped CPUs

Python 3.9 and the standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from agent.kernel import consistency

if TYPE_CHECKING:
    from agent.kernel.splitlock import BootMode

OFFENDERS_KEPT = 20
TIDS_KEPT = 64
KILLED_KEPT = 64
MAX_CPU = 65536


def fresh(btime: int | None = None) -> dict[str, Any]:
    return {
        "btime": btime,
        "boot_line": None,
        "modules": {},
        "offenders": [],
        "trap_cpus": [],
        "trap_tids": [],
        "fatal_line": False,
        "killed": [],
        "inferred": 0,
        "alignment": 0,
        "history": [],
    }


def _ints(value: Any, limit: int) -> list[int]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_CPU][-limit:]


def _strs(value: Any, limit: int) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v[:255] for v in value if isinstance(v, str)][:limit]


def load(raw: Any) -> dict[str, Any]:
    """The memory as the state file holds it, each key checked; a bad key is a fresh one."""
    memory = fresh()
    if not isinstance(raw, dict):
        return memory
    btime = raw.get("btime")
    if isinstance(btime, int) and not isinstance(btime, bool) and btime > 0:
        memory["btime"] = btime
    line = raw.get("boot_line")
    if isinstance(line, dict) and isinstance(line.get("mode"), str):
        memory["boot_line"] = {
            "mode": line["mode"],
            "sld": line.get("sld") if isinstance(line.get("sld"), bool) else None,
            "text": str(line.get("text") or "")[:200],
            "ratelimit": line.get("ratelimit") if isinstance(line.get("ratelimit"), int) else None,
        }
    modules = raw.get("modules")
    if isinstance(modules, dict):
        memory["modules"] = {
            str(k)[:64]: str(v)[:40] for k, v in list(modules.items())[:8] if isinstance(v, str)
        }
    memory["offenders"] = _strs(raw.get("offenders"), OFFENDERS_KEPT)
    memory["killed"] = _strs(raw.get("killed"), KILLED_KEPT)
    memory["trap_cpus"] = _ints(raw.get("trap_cpus"), 4096)
    memory["trap_tids"] = _ints(raw.get("trap_tids"), TIDS_KEPT)
    memory["fatal_line"] = raw.get("fatal_line") is True
    for key in ("inferred", "alignment"):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            memory[key] = value
    history = raw.get("history")
    if isinstance(history, list):
        kept = []
        for item in history[-consistency.HISTORY_KEPT :]:
            if isinstance(item, dict):
                kept.append(
                    {
                        "off": _ints(item.get("off"), 4096),
                        "trapped": item.get("trapped") is True,
                        "trapped_cpus": (
                            _ints(item.get("trapped_cpus"), 4096)
                            if isinstance(item.get("trapped_cpus"), list)
                            else None
                        ),
                    }
                )
        memory["history"] = kept
    return memory


def note_boot_lines(memory: dict[str, Any], lines: Sequence[BootMode]) -> None:
    """The boot mode this kernel printed: the #AC line decides; a #DB-only line (a CPU with bus-lock
    but no split-lock detection, or ratelimit) says the mode when there is no #AC line."""
    if not lines:
        return
    ac = [b for b in lines if b.sld is not None]
    chosen = ac[-1] if ac else lines[-1]
    memory["boot_line"] = {
        "mode": str(chosen.mode),
        "sld": chosen.sld,
        "text": chosen.text[:200],
        "ratelimit": chosen.ratelimit,
    }


def note_modules(memory: dict[str, Any], loaded: Iterable[str], now_iso: str) -> None:
    """Foreign hypervisor modules loaded now, each with the time it was first seen; unloaded ones go."""
    current = [m for m in loaded if m in consistency.FOREIGN_MODULES]
    modules = memory["modules"]
    memory["modules"] = {m: modules.get(m, now_iso) for m in current}


def note_trap(memory: dict[str, Any], who: str, tid: int, cpus: Iterable[int] = ()) -> None:
    """A split lock trapped in warn mode by `who` (guest name, else the task's COMM)."""
    offenders = [o for o in memory["offenders"] if o != who]
    memory["offenders"] = [who, *offenders][:OFFENDERS_KEPT]
    tids = [t for t in memory["trap_tids"] if t != tid]
    memory["trap_tids"] = [*tids, tid][-TIDS_KEPT:]
    known = set(memory["trap_cpus"])
    for cpu in cpus:
        if 0 <= cpu < MAX_CPU and cpu not in known:
            known.add(cpu)
    memory["trap_cpus"] = sorted(known)


def note_killed(memory: dict[str, Any], guest: str) -> None:
    killed = [k for k in memory["killed"] if k != guest]
    memory["killed"] = [*killed, guest][-KILLED_KEPT:]


def evidence(
    memory: dict[str, Any],
    *,
    release: str,
    cmdline_mode: str,
    cmdline_given: bool,
    ratelimit: int | None,
    cpuinfo_sld: bool,
    hypervisor_flag: bool,
    core_caps_sld: bool | None,
    msr_status: str,
    msr_error: str | None,
    cpus_on: frozenset[int],
    cpus_off: frozenset[int],
    mitigate: int | None,
    knob: str | None,
    trapped: bool,
    trapped_cpus: frozenset[int] | None,
) -> consistency.Evidence:
    line = memory.get("boot_line")
    history = tuple(
        consistency.Sample(
            off=frozenset(h["off"]),
            trapped=h["trapped"],
            trapped_cpus=frozenset(h["trapped_cpus"]) if h["trapped_cpus"] is not None else None,
        )
        for h in memory["history"]
    )
    modules: tuple[tuple[str, str | None], ...] = tuple(
        (m, memory["modules"].get(m)) for m in consistency.FOREIGN_MODULES if m in memory["modules"]
    )
    return consistency.Evidence(
        release=release,
        cmdline_mode=cmdline_mode,
        cmdline_given=cmdline_given,
        ratelimit=ratelimit if ratelimit is not None else (line or {}).get("ratelimit"),
        boot_mode=line["mode"] if line else None,
        boot_sld=line["sld"] if line else None,
        boot_line=line["text"] if line else None,
        cpuinfo_sld=cpuinfo_sld,
        hypervisor_flag=hypervisor_flag,
        core_caps_sld=core_caps_sld,
        msr_status=msr_status,
        msr_error=msr_error,
        cpus_on=cpus_on,
        cpus_off=cpus_off,
        mitigate=mitigate,
        knob=knob,
        foreign_modules=modules,
        trapped=trapped,
        trapped_cpus=trapped_cpus,
        offenders=tuple(memory["offenders"]),
        trap_cpus_boot=len(memory["trap_cpus"]),
        trap_threads_boot=len(memory["trap_tids"]),
        history=history,
    )


def remember_sample(
    memory: dict[str, Any], cpus_off: frozenset[int], trapped: bool, trapped_cpus: frozenset[int] | None
) -> None:
    """Append this pass's sample to the history (after the verdict read it)."""
    sample = {
        "off": sorted(cpus_off),
        "trapped": trapped,
        "trapped_cpus": sorted(trapped_cpus) if trapped_cpus is not None else None,
    }
    memory["history"] = [*memory["history"], sample][-consistency.HISTORY_KEPT :]
