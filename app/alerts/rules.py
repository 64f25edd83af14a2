"""Alert rules, pure: what each rule type means, its labels, the pending/firing/resolved steps,
fingerprints, silences and webhook matches. Values in, values out; no database, no clock.

Rule types (issue 12):

    threshold          sum of event counts (rollup_1m) of a kind/action over a window, grouped
                       by fleet, host or guest, at or above `threshold`, for `for_s`
    guest_killed       a guest got SIGBUS (action sigbus: the host is in fatal mode and QEMU
                       died, docs/kernel.md) in the window                         built in
    host_inconsistent  the host status needs action (the consistency verdict, #16)  built in
    agent_silent       the host's agent has not reported for `window_s`          built in
    events_lost        counted losses (gaps other than forged) in the window     built in
    forged_records     kernel-log records with facility >= 1 (a process wrote them to
                       /dev/kmsg, docs/kernel.md "/dev/kmsg") in the window        built in
    new_offender       a guest first seen split- or bus-locking within the window  built in

Every alert's labels: alertname (the rule's name), severity, host and guest where they apply,
then the rule's own extra labels. The fingerprint is Alertmanager's (FNV-1a 64 over the sorted
labels, common/model LabelSet.Fingerprint), so one alert has the same fingerprint here, in the
webhook bodies and in a real Alertmanager's API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

RuleType = Literal[
    "threshold",
    "guest_killed",
    "host_inconsistent",
    "agent_silent",
    "events_lost",
    "forged_records",
    "new_offender",
]
RULE_TYPES: tuple[RuleType, ...] = (
    "threshold",
    "guest_killed",
    "host_inconsistent",
    "agent_silent",
    "events_lost",
    "forged_records",
    "new_offender",
)
GroupBy = Literal["fleet", "host", "guest"]
Severity = Literal["critical", "warning", "info"]
AlertStatus = Literal["pending", "firing", "resolved"]

# Filters a threshold rule's `match` may hold (what it counts); kind is a field of its own.
MATCH_KEYS = frozenset({"host", "guest", "action", "source"})
# Labels splitwatch sets itself: a rule's extra labels may not replace them.
RESERVED_LABELS = frozenset({"alertname", "severity", "host", "guest"})
# rollup_1m is the finest rollup: windows are whole minutes of buckets (see window_buckets_since).
BUCKET_S = 60
MAX_WINDOW_S = 30 * 86400


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    name: str
    type: str
    kind: str | None
    group_by: str | None  # host | guest | None (fleet)
    window_s: int
    threshold: int | None
    for_s: int
    severity: str
    match: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    builtin: bool = False
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Finding:
    """One label set the rule finds bad now, with the figure and the words for people."""

    labels: dict[str, str]
    value: int
    summary: str
    description: str
    link: str  # dashboard hash route, e.g. "#/guest/vm-1?range=1h"


# Built-in rules: they exist (seeded on startup) and fire with nothing configured; each can be
# disabled or retuned (window, threshold, for, severity, labels, annotations) but not deleted.
BUILTIN_RULES: tuple[dict[str, Any], ...] = (
    {"name": "GuestKilled", "type": "guest_killed", "window_s": 600, "threshold": 1, "severity": "critical"},
    {
        "name": "HostInconsistent",
        "type": "host_inconsistent",
        "window_s": 0,
        "threshold": None,
        "severity": "warning",
    },
    {
        "name": "AgentSilent",
        "type": "agent_silent",
        "window_s": 300,
        "threshold": None,
        "severity": "warning",
    },
    {"name": "EventsLost", "type": "events_lost", "window_s": 3600, "threshold": 100, "severity": "warning"},
    {
        "name": "ForgedKernelLog",
        "type": "forged_records",
        "window_s": 3600,
        "threshold": 1,
        "severity": "critical",
    },
    {"name": "NewOffender", "type": "new_offender", "window_s": 3600, "threshold": None, "severity": "info"},
)


# ------------------------------------------------------------------------------ durations

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int) -> int:
    """Seconds from `90`, `"90s"`, `"5m"`, `"1h"`, `"2d"`; ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 60s, 5m, 1h or a number of seconds")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    m = _DURATION.match(value)
    if not m or m.group(2) == "ms":
        raise ValueError(f"{value!r} is not a duration: write e.g. 60s, 5m, 1h, 2d or a number of seconds")
    return int(m.group(1)) * _UNIT_S[m.group(2) or "s"]


def format_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def window_buckets_since(now_s: float, window_s: int) -> float:
    """Epoch second of the first rollup_1m bucket counted: every bucket that overlaps
    (now - window, now]. A minute bucket holding an event counts until the window has
    passed its end, so nothing is missed; a window is thus up to one minute longer."""
    return now_s - window_s - BUCKET_S


# ------------------------------------------------------------------------------ fingerprints

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF  # prometheus/common model.SeparatorByte


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over name, 0xff, value, 0xff of the labels
    sorted by name (prometheus/common model/signature.go labelSetToFingerprint), 16 hex digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for chunk in (name.encode(), labels[name].encode()):
            for byte in chunk:
                h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def alert_labels(rule: Rule, found: Mapping[str, str]) -> dict[str, str]:
    labels = {"alertname": rule.name, "severity": rule.severity}
    labels.update({k: v for k, v in rule.labels.items() if k not in RESERVED_LABELS})
    labels.update(found)
    return labels


def alert_annotations(rule: Rule, finding: Finding) -> dict[str, str]:
    """summary and description with the figures; a rule's own annotations come on top, with
    `{value}`, `{host}` and `{guest}` filled in."""
    out = {"summary": finding.summary, "description": finding.description}
    fill = {
        "value": str(finding.value),
        "host": finding.labels.get("host", ""),
        "guest": finding.labels.get("guest", ""),
    }
    for key, text in rule.annotations.items():
        try:
            out[key] = text.format_map(fill)
        except (KeyError, ValueError, IndexError):
            out[key] = text  # an annotation with other braces is kept verbatim
    return out


# ------------------------------------------------------------------------------ state steps

Step = Literal["none", "pending", "fire", "keep", "resolve", "drop"]


def step(status: str | None, active: bool, pending_since_s: float | None, for_s: int, now_s: float) -> Step:
    """What one evaluation does to one label set.

    status is the open alert's (pending | firing) or None. Like Prometheus: a condition true
    for less than `for` is pending; pending that clears is dropped without a notice; firing
    that clears is resolved (one resolved notice).
    """
    if status is None:
        if not active:
            return "none"
        return "fire" if for_s <= 0 else "pending"
    if status == "pending":
        if not active:
            return "drop"
        assert pending_since_s is not None
        return "fire" if now_s - pending_since_s >= for_s else "keep"
    # firing
    return "keep" if active else "resolve"


def labels_match(labels: Mapping[str, str], matchers: Mapping[str, str]) -> bool:
    """Every matcher label equal (an empty matcher set matches everything)."""
    return all(labels.get(k) == v for k, v in matchers.items())


def silenced_by(labels: Mapping[str, str], silences: Iterable[tuple[int, Mapping[str, str]]]) -> list[int]:
    """Ids of the active silences whose matchers all match. An empty matcher set silences
    nothing (it would silence everything by accident; the API refuses it too)."""
    return [sid for sid, matchers in silences if matchers and labels_match(labels, matchers)]


# ------------------------------------------------------------------------------ findings


def dashboard_link(host: str | None = None, guest: str | None = None, range_: str = "24h") -> str:
    """A dashboard hash route (frontend/js/state.js): the guest's page, else the host's, else
    the fleet. The API and the notices build it from the labels alone, so it is the same link
    wherever the alert is shown."""
    if guest:
        return f"#/guest/{quote(guest, safe='')}?range={range_}"
    if host:
        return f"#/host/{quote(host, safe='')}?range={range_}"
    return f"#/fleet?range={range_}"


def threshold_findings(rule: Rule, counts: Iterable[tuple[str | None, str | None, int]]) -> list[Finding]:
    """Findings of a threshold (or guest_killed) rule from (host, guest, count) sums already
    grouped as the rule says; groups under the threshold find nothing."""
    assert rule.threshold is not None
    what = rule.kind or "split/bus lock"
    action = rule.match.get("action")
    doing = f" {action}" if action else ""
    window = format_duration(rule.window_s)
    out: list[Finding] = []
    for host, guest, count in counts:
        if count < rule.threshold:
            continue
        labels: dict[str, str] = {}
        if host:
            labels["host"] = host
        if guest:
            labels["guest"] = guest
        if rule.type == "guest_killed":
            where = f"guest {guest}" + (f" on host {host}" if host else "")
            summary = f"{where} was killed by SIGBUS ({count} fatal split lock(s) in {window})"
            description = (
                f"The host is in split_lock_detect=fatal mode: a split lock in {where} sent SIGBUS to "
                f"its vCPU thread and the VMM died, so the guest is down. {count} sigbus event(s) in the "
                f"last {window}. Restart the guest and find the code that split-locks (the guest page "
                "lists its trap addresses), or move it to a host in warn mode."
            )
        else:
            scope = f"guest {guest}" if guest else f"host {host}" if host else "the fleet"
            summary = f"{count} {what}{doing} event(s) on {scope} in {window} (threshold {rule.threshold})"
            description = (
                f"Rule {rule.name}: the sum of {what}{doing} event counts on {scope} over the last "
                f"{window} is {count}, at or above the threshold {rule.threshold}."
            )
        out.append(Finding(labels, count, summary, description, dashboard_link(host, guest)))
    return out


def host_finding(rule: Rule, host: str, reason: str, value: int) -> Finding:
    """host_inconsistent and agent_silent: one finding per host, the reason in words."""
    if rule.type == "agent_silent":
        summary = f"host {host}: agent silent for {format_duration(value)}"
        description = (
            f"The splitwatch agent on {host} has sent nothing for {format_duration(value)} "
            f"(rule window {format_duration(rule.window_s)}): its figures are stale. Check that the host "
            "is up and that `systemctl status splitwatch-agent` runs, and its spool and network."
        )
    else:
        summary = f"host {host}: split-lock detection state is inconsistent ({reason})"
        description = (
            f"{host}: {reason}. The host's detection is not what its mode says, so split locks may go "
            "unseen. Open the host page for its CPUs and state history, and check for tools writing "
            "MSR 0x33 or a kernel bug that leaves a core off."
        )
    return Finding({"host": host}, value, summary, description, dashboard_link(host))


def gap_finding(rule: Rule, host: str, count: int, reasons: str) -> Finding | None:
    """events_lost and forged_records: a host whose counted losses reach the threshold."""
    assert rule.threshold is not None
    if count < rule.threshold:
        return None
    window = format_duration(rule.window_s)
    if rule.type == "forged_records":
        summary = f"host {host}: {count} forged kernel-log record(s) in {window}"
        description = (
            f"The agent on {host} read {count} split-lock-looking line(s) in /dev/kmsg with a facility "
            "other than 0 (the kernel's) in the last "
            f"{window}: a process wrote them, not the kernel. They were ignored and counted. Find who "
            "writes to /dev/kmsg on that host."
        )
    else:
        summary = f"host {host}: {count} event(s) lost in {window} ({reasons})"
        description = (
            f"The agent on {host} counted {count} event(s) it could not deliver in the last {window} "
            f"(reasons: {reasons}; threshold {rule.threshold}). The charts undercount by that much: "
            "overrun = the kernel log buffer wrapped (raise log_buf_len or lower the interval), "
            "suppressed = printk rate limit, spool_full = backend unreachable for too long."
        )
    return Finding({"host": host}, count, summary, description, dashboard_link(host))


def new_offender_finding(rule: Rule, guest: str, host: str | None, first_seen: str) -> Finding:
    where = f" on host {host}" if host else ""
    return Finding(
        {"guest": guest, **({"host": host} if host else {})},
        1,
        f"new offender: guest {guest}{where} split-locked for the first time",
        f"Guest {guest}{where} was first seen taking split or bus lock traps at {first_seen} (never "
        f"before). Split locks slow the whole host (misery mode, bus locks); find the workload in "
        "the guest that causes them.",
        dashboard_link(host, guest),
    )
