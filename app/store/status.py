"""Host status, the one rule every view uses (hosts, summary, /metrics, alerts). Pure: values in.

1. `silent` wins: the agent has not reported for longer than `silent_after_s` (settings, default
   300), or no agent has ever reported the host (only `splitwatch import` wrote it, #16). A silent
   host's other figures are stale. The backend's own outages (`Break`s) are no host's silence: no
   batch could be stored while they lasted.
2. Else the agent's consistency verdict on its newest sample (agent/kernel/consistency.py; the
   agent has the evidence: kernel era, boot line, per-CPU MSRs, traps, consecutive samples):
   consistent, unsupported, off_by_design, transient, per_task_off, stuck_off, drift,
   inconsistent_config, foreign_hypervisor.
3. `unknown` when the agent sent no verdict (an agent older than #16, or no state yet).

`needs_action` is true for drift, stuck_off, inconsistent_config, foreign_hypervisor: the
verdicts an operator must act on. Everything else, silent included, is false here (silence has
its own alert).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Verdict = Literal[
    "consistent",
    "unsupported",
    "off_by_design",
    "transient",
    "per_task_off",
    "stuck_off",
    "drift",
    "inconsistent_config",
    "foreign_hypervisor",
]
Status = Literal[Verdict, "unknown", "silent"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
STATUSES: tuple[Status, ...] = (*VERDICTS, "unknown", "silent")
NEEDS_ACTION: frozenset[str] = frozenset({"drift", "stuck_off", "inconsistent_config", "foreign_hypervisor"})
# The words people read (agent/kernel/consistency.py LABELS, doctor's words).
LABELS: dict[str, str] = {
    "off_by_design": "off by design",
    "per_task_off": "per-task off",
    "stuck_off": "stuck off",
    "inconsistent_config": "inconsistent config",
    "foreign_hypervisor": "foreign hypervisor",
}


@dataclass(frozen=True, slots=True)
class Break:
    """A time the backend could not hear its fleet: no `serve` process reached the database
    from when one last did to when one did again (all were down, or the database was;
    app/store/backend_break.py records it). While it lasted no agent's batch was stored, so
    afterwards every host would look silent for its length: a dashboard full of silent hosts
    and an AgentSilent for the whole fleet, caused by splitwatch, resolving as the agents'
    spools arrive."""

    down_at: dt.datetime
    back_at: dt.datetime


# The backend's recent breaks, oldest first; none overlap (each ends a gap in what was heard).
Breaks = tuple[Break, ...]


def _overlap_s(b: Break, last_seen: dt.datetime, now: dt.datetime) -> float:
    return max((min(b.back_at, now) - max(b.down_at, last_seen)).total_seconds(), 0.0)


def unheard_s(breaks: Breaks, last_seen: dt.datetime, now: dt.datetime) -> float:
    """Seconds of (last_seen, now] the backend could not hear: they are no agent's silence.
    Newest first, stopping at the first break over before `last_seen` (the hosts that report
    read none of them)."""
    total = 0.0
    for b in reversed(breaks):
        if b.back_at <= last_seen:
            break
        total += _overlap_s(b, last_seen, now)
    return total


def _utc_text(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _not_counting(outages: list[Break]) -> str:
    last = f"{_utc_text(outages[-1].down_at)} to {_utc_text(outages[-1].back_at)}"
    if len(outages) == 1:
        return f", not counting splitwatch's own outage from {last}"
    return f", not counting splitwatch's own {len(outages)} outages, the last from {last}"


@dataclass(frozen=True, slots=True)
class HostStatus:
    status: Status  # silent, else the verdict, else unknown
    reason: str  # one sentence: why
    needs_action: bool
    verdict: Status  # the agent's newest verdict, kept while silent (unknown when none)
    details: dict[str, Any] = field(default_factory=dict)
    since: dt.datetime | None = None  # when the host entered this verdict (or went silent)

    @property
    def label(self) -> str:
        return LABELS.get(self.status, self.status)


def host_status(
    *,
    last_seen_at: dt.datetime | None,
    verdict: str | None,
    reason: str | None,
    details: Mapping[str, Any] | None,
    since: dt.datetime | None,
    now: dt.datetime,
    silent_after_s: float,
    breaks: Breaks = (),
) -> HostStatus:
    known: Status = verdict if verdict in VERDICTS else "unknown"
    facts = dict(details) if isinstance(details, Mapping) else {}
    if last_seen_at is None:
        return HostStatus(
            "silent",
            "no agent has ever reported this host: it is known only from `splitwatch import` of its logs",
            False,
            known,
            facts,
            None,
        )
    unheard = unheard_s(breaks, last_seen_at, now)
    if (now - last_seen_at).total_seconds() - unheard > silent_after_s:
        why = f"the agent has not reported since {_utc_text(last_seen_at)} UTC (over {int(silent_after_s)} s"
        if unheard > 0:
            why += _not_counting([b for b in breaks if _overlap_s(b, last_seen_at, now) > 0])
        return HostStatus(
            "silent",
            why + ")",
            False,
            known,
            facts,
            last_seen_at,
        )
    if known == "unknown":
        return HostStatus(
            "unknown",
            "the agent sent no consistency verdict (an agent older than the verdict, or no state yet)",
            False,
            known,
            facts,
            since,
        )
    return HostStatus(known, reason or known, known in NEEDS_ACTION, known, facts, since)
