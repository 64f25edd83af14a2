"""The evaluator: every SPLITWATCH_ALERT_INTERVAL seconds, the rules against the rollups and the
host and gap rows (never a scan of raw events), the alert state in the `alert` table, the
notices into the outbox (app/alerts/outbox.py) — all in ONE write transaction.

Guarantees (issue 12):
- State lives in the database: a restarted backend finds its pending and firing alerts and
  carries on; a firing alert is never fired again, a resolved one is resolved once.
- A notice is written in the same transaction as the state change it tells of, so a crash
  loses neither or both (then the next evaluation redoes both).
- With several worker processes (PostgreSQL) exactly one evaluates: each evaluation first
  renews the `alert_lease` row (`UPDATE ... WHERE holder = me OR expires_at < now`) inside its
  own transaction. The row lock makes a second worker's evaluation wait for the first to
  commit, after which its WHERE no longer matches and it stops; so two evaluations can never
  both commit, even when a lease expires mid-flight. The lease holder also runs the sender.
- On SQLite the evaluation is one job of the app's single writer (app/ingest/writer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import secrets
import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.alerts import outbox
from app.alerts.rules import (
    BUILTIN_RULES,
    Finding,
    Rule,
    alert_annotations,
    alert_labels,
    fingerprint,
    gap_finding,
    host_finding,
    new_offender_finding,
    silenced_by,
    step,
    threshold_findings,
    window_buckets_since,
)
from app.background import finish
from app.settings import Settings
from app.store.backend_break import ALERTING_LEASE, hear, recent_breaks
from app.store.events import NO_GUEST_ID
from app.store.hosts import StatusRule, row_status
from app.store.status import NEEDS_ACTION, Break, Breaks, unheard_s
from app.store.tables import alert, alert_lease, alert_rule, gap, guest, host, rollup_1m, silence

log = logging.getLogger("splitwatch.alerts")

LEASE_NAME = ALERTING_LEASE
OPEN = ("pending", "firing")
# Findings per rule and evaluation, and open alerts per rule: a rule matching more label sets
# than this keeps the alerts it has open while they hold and opens others as those resolve (a
# bad rule must not write a million alert rows; see _within_most).
MAX_FINDINGS_PER_RULE = 1000
# The rules that judge host rows (the status rule's columns), one finding per host.
HOST_RULES = ("host_inconsistent", "agent_silent")


def lease_ttl_s(interval_s: float) -> float:
    """A lease outlives three missed evaluations; a dead leader is replaced after that."""
    return max(3 * interval_s, 3.0)


def new_holder() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


# ------------------------------------------------------------------------------ lease


def take_lease(conn: Connection, holder: str, now: dt.datetime, ttl_s: float, name: str = LEASE_NAME) -> bool:
    """Renew or take the lease `name` in the caller's transaction; False when another holds it.

    Retention (app/retention/run.py, #13) keeps its single runner with the lease "retention"."""
    expires = now + dt.timedelta(seconds=ttl_s)
    values = {"holder": holder, "expires_at": expires, "renewed_at": now}
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    done = conn.execute(
        update(alert_lease)
        .where(alert_lease.c.name == name)
        .where(or_(alert_lease.c.holder == holder, alert_lease.c.expires_at < now))
        .values(**values)
        .returning(alert_lease.c.name)
    ).first()
    if done is not None:
        return True
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(alert_lease)
    created = conn.execute(
        ins.values(name=name, **values)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(alert_lease.c.name)
    ).first()
    return created is not None


def release_lease(conn: Connection, holder: str, name: str = LEASE_NAME) -> None:
    """Hand the lease over at once: it expires now. The row stays (with when the database was
    last heard from, app/store/backend_break.py)."""
    conn.execute(
        update(alert_lease)
        .where(alert_lease.c.name == name, alert_lease.c.holder == holder)
        .values(expires_at=dt.datetime.now(dt.UTC))
    )


# ------------------------------------------------------------------------------ rules


def ensure_builtin_rules(conn: Connection, now: dt.datetime) -> None:
    """Create the built-in rules that do not exist yet (a retuned or disabled one is kept)."""
    have = set(conn.execute(select(alert_rule.c.type).where(alert_rule.c.builtin.is_(True))).scalars())
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(alert_rule)
    for spec in BUILTIN_RULES:
        if spec["type"] in have:
            continue
        conn.execute(
            ins.values(
                **spec,
                kind=None,
                group_by=None,
                for_s=0,
                match={},
                labels={},
                annotations={},
                builtin=True,
                enabled=True,
                created_at=now,
                updated_at=now,
            ).on_conflict_do_nothing(index_elements=["name"])
        )


def rule_from_row(row: Any) -> Rule:
    return Rule(
        id=row.id,
        name=row.name,
        type=row.type,
        kind=row.kind,
        group_by=row.group_by,
        window_s=row.window_s,
        threshold=row.threshold,
        for_s=row.for_s,
        severity=row.severity,
        match=dict(row.match or {}),
        labels=dict(row.labels or {}),
        annotations=dict(row.annotations or {}),
        builtin=bool(row.builtin),
        enabled=bool(row.enabled),
    )


def host_needs_action(row: Any, now: dt.datetime, settings: Settings, breaks: Breaks = ()) -> str | None:
    """Why the host's detection state needs action, or None. The ONE place the
    host_inconsistent rule reads the host status: app/store/status.py's rule (the agent's
    consistency verdict, #16) and its `needs_action` (drift, stuck off, inconsistent config,
    foreign hypervisor), with the agent's own reason sentence."""
    status = row_status(row, StatusRule(now=now, silent_after_s=settings.silent_after_s, breaks=breaks))
    if not status.needs_action:
        return None
    return f"{status.label}: {status.reason}"


@dataclass
class _Names:
    hosts: dict[int, str] = field(default_factory=dict)
    guests: dict[int, tuple[str, int | None]] = field(default_factory=dict)  # id -> (name, last host id)


def _names(conn: Connection, host_ids: set[int], guest_ids: set[int]) -> _Names:
    names = _Names()
    gids = sorted(guest_ids - {NO_GUEST_ID})
    if gids:
        for gid, name, last_host in conn.execute(
            select(guest.c.id, guest.c.name, guest.c.last_host_id).where(guest.c.id.in_(gids))
        ):
            names.guests[gid] = (name, last_host)
            if last_host is not None:
                host_ids.add(last_host)
    if host_ids:
        names.hosts = dict(
            conn.execute(select(host.c.id, host.c.name).where(host.c.id.in_(sorted(host_ids)))).all()
        )
    return names


def _count_findings(
    conn: Connection, rule: Rule, now: dt.datetime, only: Sequence[str] | None = None
) -> list[Finding]:
    """threshold and guest_killed: sums of rollup_1m over the window, grouped (of the hosts or
    guests named in `only`, when given)."""
    r = rollup_1m
    since = dt.datetime.fromtimestamp(window_buckets_since(now.timestamp(), rule.window_s), dt.UTC)
    conds = [r.c.bucket > since]
    group_by = rule.group_by
    if rule.type == "guest_killed":
        conds.append(r.c.action == "sigbus")
        conds.append(r.c.guest_id != NO_GUEST_ID)
        group_by = "guest"
    else:
        if rule.kind:
            conds.append(r.c.kind == rule.kind)
        if "action" in rule.match:
            conds.append(r.c.action == rule.match["action"])
        if "source" in rule.match:
            conds.append(r.c.source == rule.match["source"])
    if "host" in rule.match:
        hid = conn.execute(select(host.c.id).where(host.c.name == rule.match["host"])).scalar()
        if hid is None:
            return []
        conds.append(r.c.host_id == hid)
    if "guest" in rule.match and rule.type != "guest_killed":
        if rule.match["guest"] == "(host)":
            conds.append(r.c.guest_id == NO_GUEST_ID)
        else:
            gid = conn.execute(select(guest.c.id).where(guest.c.name == rule.match["guest"])).scalar()
            if gid is None:
                return []
            conds.append(r.c.guest_id == gid)
    if only is not None and group_by == "host":
        conds.append(r.c.host_id.in_(select(host.c.id).where(host.c.name.in_(only))))
    elif only is not None and group_by == "guest":
        conds.append(r.c.guest_id.in_(select(guest.c.id).where(guest.c.name.in_(only))))
    total = func.sum(r.c.count)
    counts: list[tuple[str | None, str | None, int]]
    if group_by == "host":
        rows = conn.execute(select(r.c.host_id, total).where(*conds).group_by(r.c.host_id)).all()
        names = _names(conn, {h for h, _ in rows}, set())
        counts = [(names.hosts.get(h, f"#{h}"), None, int(n or 0)) for h, n in rows]
    elif group_by == "guest":
        conds.append(r.c.guest_id != NO_GUEST_ID)
        rows = conn.execute(select(r.c.guest_id, total).where(*conds).group_by(r.c.guest_id)).all()
        names = _names(conn, set(), {g for g, _ in rows})
        counts = []
        for g, n in rows:
            gname, last_host = names.guests.get(g, (f"#{g}", None))
            counts.append((names.hosts.get(last_host) if last_host is not None else None, gname, int(n or 0)))
    else:
        n = conn.execute(select(total).where(*conds)).scalar()
        counts = [(None, None, int(n or 0))]
    counts.sort(key=lambda c: -c[2])
    return threshold_findings(rule, counts[:MAX_FINDINGS_PER_RULE])


# What the host rules read of a host row: never its per-CPU list or health JSON (kilobytes per
# host: at 10,000 hosts, reading whole rows was most of an evaluation's CPU, issue 13).
_HOST_RULE_COLUMNS = (
    host.c.id,
    host.c.name,
    host.c.last_seen_at,
    host.c.agent_reported,
    host.c.verdict,
    host.c.verdict_reason,
    host.c.verdict_details,
    host.c.verdict_since,
)


def _host_findings(
    conn: Connection,
    rule: Rule,
    now: dt.datetime,
    settings: Settings,
    only: Sequence[str] | None = None,
    breaks: Breaks = (),
) -> list[Finding]:
    """The hosts the rule finds (among `only`, when given). SQL narrows the rows to those that
    may match (a superset: a verdict that needs action, or a report older than the window); the
    rule itself then decides on each, so the answer is the rule's whatever the fleet's size."""
    query = select(*_HOST_RULE_COLUMNS).order_by(host.c.id)
    if "host" in rule.match:
        query = query.where(host.c.name == rule.match["host"])
    if only is not None:
        query = query.where(host.c.name.in_(only))
    if rule.type == "agent_silent":
        # Not a host only `splitwatch import` made: no agent ever reported there to go silent.
        since = now - dt.timedelta(seconds=rule.window_s)
        query = query.where(host.c.agent_reported.is_(True), host.c.last_seen_at < since)
    else:
        query = query.where(host.c.verdict.in_(sorted(NEEDS_ACTION)))
    out: list[Finding] = []
    for row in conn.execute(query):
        if rule.type == "agent_silent":
            silent_s = int((now - row.last_seen_at).total_seconds())
            if silent_s - unheard_s(breaks, row.last_seen_at, now) > rule.window_s:
                out.append(host_finding(rule, row.name, "silent", silent_s))
        else:
            reason = host_needs_action(row, now, settings, breaks)
            if reason is not None:
                out.append(host_finding(rule, row.name, reason, 1))
        if len(out) >= MAX_FINDINGS_PER_RULE:
            break
    return out


def _gap_findings(
    conn: Connection, rule: Rule, now: dt.datetime, only: Sequence[str] | None = None
) -> list[Finding]:
    since = now - dt.timedelta(seconds=rule.window_s)
    forged = gap.c.reason == "forged"
    query = (
        select(gap.c.host_id, gap.c.reason, func.sum(gap.c.count))
        .where(gap.c.received_at >= since, forged if rule.type == "forged_records" else ~forged)
        .group_by(gap.c.host_id, gap.c.reason)
    )
    if only is not None:
        query = query.where(gap.c.host_id.in_(select(host.c.id).where(host.c.name.in_(only))))
    rows = conn.execute(query).all()
    per_host: dict[int, dict[str, int]] = defaultdict(dict)
    for host_id, reason, n in rows:
        per_host[host_id][reason] = int(n or 0)
    names = _names(conn, set(per_host), set())
    out = []
    for host_id, reasons in per_host.items():
        name = names.hosts.get(host_id, f"#{host_id}")
        if "host" in rule.match and name != rule.match["host"]:
            continue
        text = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
        found = gap_finding(rule, name, sum(reasons.values()), text)
        if found is not None:
            out.append(found)
    out.sort(key=lambda f: -f.value)  # the most lost first, as the threshold rules keep the biggest
    return out[:MAX_FINDINGS_PER_RULE]


def _new_offender_findings(
    conn: Connection, rule: Rule, now: dt.datetime, only: Sequence[str] | None = None
) -> list[Finding]:
    since = now - dt.timedelta(seconds=rule.window_s)
    query = (
        select(guest.c.name, guest.c.first_seen_at, guest.c.last_host_id)
        .where(guest.c.first_seen_at >= since)
        .order_by(guest.c.first_seen_at.desc())
        .limit(MAX_FINDINGS_PER_RULE)
    )
    if only is not None:
        query = query.where(guest.c.name.in_(only))
    rows = conn.execute(query).all()
    names = _names(conn, {r.last_host_id for r in rows if r.last_host_id is not None}, set())
    out = []
    for row in rows:
        host_name = names.hosts.get(row.last_host_id) if row.last_host_id is not None else None
        if "host" in rule.match and host_name != rule.match["host"]:
            continue
        first = row.first_seen_at.isoformat().replace("+00:00", "Z")
        out.append(new_offender_finding(rule, row.name, host_name, first))
    return out


# The rules whose last evaluation reached MAX_FINDINGS_PER_RULE (by name): said once when they
# reach it and once when they drop under it, not every evaluation of an outage.
_AT_MOST: set[str] = set()


def key_label(rule: Rule) -> str | None:
    """The label that tells a rule's label sets apart: one alert per host or per guest (None:
    one alert for the whole fleet)."""
    if rule.type in ("guest_killed", "new_offender"):
        return "guest"
    if rule.type == "threshold":
        return rule.group_by if rule.group_by in ("host", "guest") else None
    return "host"  # the host rules and the gap rules


def _still_holding(
    conn: Connection,
    rule: Rule,
    current: Mapping[str, Any],
    found: Mapping[str, Any],
    now: dt.datetime,
    settings: Settings,
    breaks: Breaks,
) -> set[str]:
    """Of the open alerts a rule did not find while finding its most, those that still hold:
    it asks again about just their hosts or guests, so one that came back (or fell under the
    threshold) resolves, and one that was only past the rule's most stays open."""
    key = key_label(rule)
    missing = [fp for fp in current if fp not in found]
    if key is None or not missing:
        return set()
    names = sorted({str(current[fp].labels[key]) for fp in missing if key in (current[fp].labels or {})})
    still: set[str] = set()
    for i in range(0, len(names), MAX_FINDINGS_PER_RULE):
        again = findings(conn, rule, now, settings, names[i : i + MAX_FINDINGS_PER_RULE], breaks)
        still.update(fingerprint(alert_labels(rule, f.labels)) for f in again)
    return {fp for fp in missing if fp in still}


def _within_most(
    found: Mapping[str, tuple[dict[str, str], Finding]], current: Mapping[str, Any], holding: set[str]
) -> dict[str, tuple[dict[str, str], Finding]]:
    """What a rule at its most opens: the alerts it has open stay while they hold, and new ones
    only take the room left under its most, in the order found (the biggest counts, the hosts
    first seen). Without this, which label sets make the biggest 1,000 shifts from one
    evaluation to the next, and the alerts at the edge resolve and fire again every cycle: a
    pager storm in the middle of a fleet-wide event. Open alerts stay bounded by the most."""
    room = MAX_FINDINGS_PER_RULE - sum(1 for fp in current if fp in found or fp in holding)
    kept: dict[str, tuple[dict[str, str], Finding]] = {}
    for fp, value in found.items():
        if fp in current:
            kept[fp] = value
        elif room > 0:
            kept[fp] = value
            room -= 1
    return kept


# Where the dashboard and the API list every host or guest a rule at its most may not alert on.
_WHERE_ALL: dict[str | None, str] = {
    "agent_silent": "GET /api/v1/hosts?status=silent lists every silent host",
    "host_inconsistent": "GET /api/v1/hosts?needs_action=true lists every host that needs action",
    "host": "GET /api/v1/hosts?sort=events lists the busiest hosts",
    "guest": "GET /api/v1/guests?sort=events lists the busiest guests",
    None: "the dashboard's charts show them all",
}


def _at_most(rule: Rule, found: int) -> bool:
    """Whether the rule found its most label sets; said in the log when that changes."""
    at_most = found >= MAX_FINDINGS_PER_RULE
    if at_most and rule.name not in _AT_MOST:
        # A mass outage (an AgentSilent per host) can reach it: the others must not go unsaid.
        _AT_MOST.add(rule.name)
        log.warning(
            "alert rule %s found %d label sets, its most per evaluation: its open alerts stay while "
            "they hold, and any others it matches fire as these resolve (%s)",
            rule.name,
            found,
            _WHERE_ALL.get(rule.type) or _WHERE_ALL[key_label(rule)],
        )
    elif not at_most and rule.name in _AT_MOST:
        _AT_MOST.discard(rule.name)
        log.info("alert rule %s finds fewer than %d label sets again", rule.name, MAX_FINDINGS_PER_RULE)
    return at_most


def findings(
    conn: Connection,
    rule: Rule,
    now: dt.datetime,
    settings: Settings,
    only: Sequence[str] | None = None,
    breaks: Breaks = (),
) -> list[Finding]:
    """What the rule finds now, at most MAX_FINDINGS_PER_RULE label sets; `only`: of these
    hosts or guests (the rule's key_label) alone; `breaks`: the backend's recent outages, which a
    host's silence does not count."""
    if rule.type in ("threshold", "guest_killed"):
        return _count_findings(conn, rule, now, only)
    if rule.type in HOST_RULES:
        return _host_findings(conn, rule, now, settings, only, breaks)
    if rule.type in ("events_lost", "forged_records"):
        return _gap_findings(conn, rule, now, only)
    if rule.type == "new_offender":
        return _new_offender_findings(conn, rule, now, only)
    log.warning("alert rule %s has unknown type %r: skipped", rule.name, rule.type)
    return []


# ------------------------------------------------------------------------------ one evaluation


@dataclass(frozen=True, slots=True)
class Report:
    fired: int = 0
    resolved: int = 0
    notices: int = 0  # outbox rows written


def active_silences(conn: Connection, now: dt.datetime) -> list[tuple[int, Mapping[str, str]]]:
    return [
        (sid, dict(m or {}))
        for sid, m in conn.execute(
            select(silence.c.id, silence.c.matchers).where(
                silence.c.starts_at <= now, silence.c.ends_at > now
            )
        )
    ]


def evaluate(conn: Connection, settings: Settings, holder: str, now: dt.datetime) -> Report | None:
    """One evaluation in the caller's write transaction; None when another process leads."""
    if not take_lease(conn, holder, now, lease_ttl_s(settings.alert_interval)):
        return None
    breaks = recent_breaks(conn, now)  # written by hear_at, the round's first job
    ensure_builtin_rules(conn, now)
    rules = [rule_from_row(r) for r in conn.execute(select(alert_rule)).all()]
    open_rows = conn.execute(select(alert).where(alert.c.status.in_(OPEN))).all()
    open_by_rule: dict[int, dict[str, Any]] = defaultdict(dict)  # rule id -> fingerprint -> row
    for open_row in open_rows:
        open_by_rule[open_row.rule_id][open_row.fingerprint] = open_row
    silences = active_silences(conn, now)
    hooks = outbox.enabled_webhooks(conn)
    fired = resolved = notices = 0
    still: list[int] = []  # open alerts found again with the same figures

    for rule in rules:
        current = open_by_rule.get(rule.id, {})
        found: dict[str, tuple[dict[str, str], Finding]] = {}
        at_most = False  # the rule found its most: what it did not find may just be past it
        if rule.enabled:
            matched = findings(conn, rule, now, settings, breaks=breaks)
            at_most = _at_most(rule, len(matched))
            for f in matched:
                labels = alert_labels(rule, f.labels)
                found[fingerprint(labels)] = (labels, f)
        # Not found is not cleared when the rule found its most: past it, which label sets come
        # first can change (a host with a lower id goes silent, a guest's count passes another's),
        # and resolving the one pushed out would tell the receivers that it is over.
        holding = _still_holding(conn, rule, current, found, now, settings, breaks) if at_most else set()
        if at_most:
            found = _within_most(found, current, holding)
        for fp, (labels, f) in found.items():
            row = current.get(fp)
            annotations = alert_annotations(rule, f)
            what = step(
                row.status if row is not None else None,
                True,
                row.pending_since.timestamp() if row is not None else None,
                rule.for_s,
                now.timestamp(),
            )
            if row is None:
                status = "firing" if what == "fire" else "pending"
                alert_id = conn.execute(
                    insert(alert)
                    .values(
                        rule_id=rule.id,
                        fingerprint=fp,
                        labels=labels,
                        annotations=annotations,
                        status=status,
                        value=f.value,
                        pending_since=now,
                        starts_at=now if status == "firing" else None,
                        ends_at=None,
                        last_evaluated_at=now,
                        notified_at=None,
                    )
                    .returning(alert.c.id)
                ).scalar_one()
            elif what != "fire" and row.value == f.value and row.annotations == annotations:
                alert_id = row.id
                still.append(row.id)  # the same figure: only when it was seen, below
            else:
                alert_id = row.id
                values: dict[str, Any] = {
                    "value": f.value,
                    "annotations": annotations,
                    "last_evaluated_at": now,
                }
                if what == "fire":
                    values.update(status="firing", starts_at=now)
                conn.execute(update(alert).where(alert.c.id == row.id).values(**values))
            if what == "fire":
                fired += 1
                if not silenced_by(labels, silences):
                    notices += outbox.notify(conn, hooks, alert_id, settings, now)
                    conn.execute(update(alert).where(alert.c.id == alert_id).values(notified_at=now))
        for fp, row in current.items():
            if fp in found or fp in holding:
                continue
            what = step(row.status, False, None, rule.for_s, now.timestamp())
            if what == "drop":
                conn.execute(delete(alert).where(alert.c.id == row.id))
            elif what == "resolve":
                conn.execute(
                    update(alert)
                    .where(alert.c.id == row.id)
                    .values(status="resolved", ends_at=now, last_evaluated_at=now)
                )
                resolved += 1
                if row.notified_at is not None:
                    notices += outbox.notify_resolved(conn, row.id, settings)

    # One statement for the alerts that only need their evaluation time, not one per alert:
    # a fleet-wide outage keeps up to MAX_FINDINGS_PER_RULE open per rule, cycle after cycle.
    for i in range(0, len(still), MAX_FINDINGS_PER_RULE):
        conn.execute(
            update(alert)
            .where(alert.c.id.in_(still[i : i + MAX_FINDINGS_PER_RULE]))
            .values(last_evaluated_at=now)
        )

    # Firing alerts whose notice a silence held back: notify once the silence is gone.
    for row in conn.execute(
        select(alert.c.id, alert.c.labels).where(alert.c.status == "firing", alert.c.notified_at.is_(None))
    ).all():
        if not silenced_by(row.labels, silences):
            notices += outbox.notify(conn, hooks, row.id, settings, now)
            conn.execute(update(alert).where(alert.c.id == row.id).values(notified_at=now))
    return Report(fired, resolved, notices)


def resolve_rule_alerts(conn: Connection, rule_id: int, settings: Settings, now: dt.datetime) -> None:
    """Before a rule is deleted: its firing alerts resolve (with their notices), pending ones go."""
    for row in conn.execute(select(alert).where(alert.c.rule_id == rule_id, alert.c.status.in_(OPEN))).all():
        if row.status == "pending":
            continue
        conn.execute(update(alert).where(alert.c.id == row.id).values(status="resolved", ends_at=now))
        if row.notified_at is not None:
            outbox.notify_resolved(conn, row.id, settings)


# ------------------------------------------------------------------------------ the loop


def hear_at(ttl_s: float, now: dt.datetime, reached: dt.datetime | None, conn: Connection) -> Break | None:
    """The round's first job, in a transaction of its own: this process reached the database.
    A gap longer than the lease's time since any process did is a break: every backend process,
    or the database, was down, and no agent's batch was stored. Afterwards every host would look
    silent for that long: an AgentSilent for the whole fleet and a dashboard of silent hosts,
    caused by splitwatch, resolving a minute later as the agents' spools arrive. So the break is
    written down (app/store/backend_break.py) and no host's silence counts it. One process
    restarting behind a load balancer while another kept evaluating is no break, and neither is
    an evaluation failing while the database answers (this job still commits)."""
    gap = hear(conn, now, ttl_s, reached)
    if gap is not None:
        log.info(
            "alerting: no backend process reached the database from %s to %s: no host's silence "
            "counts that time",
            gap.down_at.isoformat(timespec="seconds"),
            gap.back_at.isoformat(timespec="seconds"),
        )
    return gap


def _evaluate_at(settings: Settings, holder: str, now: dt.datetime, conn: Connection) -> Report | None:
    return evaluate(conn, settings, holder, now)


class Leadership:
    """Whether this process held the lease at its last evaluation (the sender reads it)."""

    def __init__(self) -> None:
        self.until: float = 0.0  # loop.time() until which the lease is ours

    def held(self) -> bool:
        return asyncio.get_running_loop().time() < self.until


async def evaluator_loop(
    writer: Any,
    settings: Settings,
    holder: str,
    leadership: Leadership,
    stop: asyncio.Event,
    wake_sender: asyncio.Event,
) -> None:
    loop = asyncio.get_running_loop()
    ttl = lease_ttl_s(settings.alert_interval)
    reached: dt.datetime | None = None  # when this process's last evaluation was committed
    while not stop.is_set():
        started = loop.time()
        now = dt.datetime.now(dt.UTC)
        try:
            await writer.run(functools.partial(hear_at, ttl, now, reached))
        except Exception as exc:
            if not _expected(exc):  # the database away: the evaluation below says so
                log.warning("could not note that the database was reached: %s", exc, exc_info=True)
        try:
            report: Report | None = await writer.run(functools.partial(_evaluate_at, settings, holder, now))
            reached = dt.datetime.now(dt.UTC)
        except Exception as exc:
            # Whatever failed (database away, a bug in one rule), alerting must keep trying;
            # the transaction rolled back, so nothing half-done remains.
            log.warning(
                "alert evaluation failed (will retry in %.1fs): %s",
                settings.alert_interval,
                exc,
                exc_info=not _expected(exc),
            )
            report = None
            leadership.until = 0.0
        else:
            # A little under the TTL: stop sending before another process may take over.
            leadership.until = started + ttl * 0.8 if report is not None else 0.0
            if report is not None and (report.notices or report.fired or report.resolved):
                log.info(
                    "alerts: %d fired, %d resolved, %d notices queued",
                    report.fired,
                    report.resolved,
                    report.notices,
                )
                wake_sender.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.alert_interval)


def _expected(exc: Exception) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    from app.ingest.writer import WriterStopped

    return isinstance(exc, SQLAlchemyError | WriterStopped)


class Alerting:
    """The evaluator and the sender as two tasks of `serve` (started by the app's lifespan)."""

    def __init__(self, engine: Any, writer: Any, settings: Settings) -> None:
        self.engine = engine
        self.writer = writer
        self.settings = settings
        self.holder = new_holder()
        self.leadership = Leadership()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        sender = outbox.Sender(self.engine, self.writer, self.settings, self.leadership)
        self._tasks = [
            asyncio.create_task(
                evaluator_loop(
                    self.writer, self.settings, self.holder, self.leadership, self._stop, self._wake
                ),
                name="splitwatch-alert-evaluator",
            ),
            asyncio.create_task(sender.run(self._stop, self._wake), name="splitwatch-webhook-sender"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            await finish(task, timeout=self.settings.webhook_timeout_s * 2 + 5)
        self._tasks = []
        # Hand the lease over at once instead of making the next process wait for its expiry.
        if self.leadership.until:
            try:
                await self.writer.run(lambda conn: release_lease(conn, self.holder))
            except Exception as exc:  # the lease then simply expires
                log.info("could not release the alerting lease (it expires by itself): %s", exc)


def open_alert_count(conn: Connection) -> int:
    return int(
        conn.execute(select(func.count()).select_from(alert).where(alert.c.status == "firing")).scalar() or 0
    )


__all__: Sequence[str] = ("Alerting", "evaluate", "host_needs_action", "take_lease")
