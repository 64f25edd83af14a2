"""The fleet overview in one answer: totals for a range and the hosts' current condition.

Event totals come from the rollups (app/store/series.range_totals), host conditions from the
status rule (app/store/status.py) over the `host` rows: a few cheap queries whatever the range.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from app.store.events import NO_GUEST_ID, Resolved
from app.store.gaps import lost_in_range
from app.store.hosts import StatusRule, brief_status
from app.store.series import range_totals
from app.store.tables import guest, host

NO_MODE = "unknown"  # hosts whose agent has sent no state yet


@dataclass(frozen=True, slots=True)
class Summary:
    events: int
    guests_affected: int
    guests_killed: int
    hosts_total: int
    hosts_by_mode: dict[str, int]
    hosts_by_status: dict[str, int]
    hosts_need_action: int
    hosts_silent: int
    gaps: int


def fleet_summary(conn: Connection, *, since: dt.datetime, until: dt.datetime, rule: StatusRule) -> Summary:
    totals = range_totals(conn, Resolved(), since=since, until=until, by=("guest_id",))
    events = sum(totals.values())
    affected = sum(1 for (guest_id,), count in totals.items() if guest_id != NO_GUEST_ID and count > 0)
    killed = conn.execute(
        select(func.count()).select_from(guest).where(guest.c.killed_at >= since, guest.c.killed_at < until)
    ).scalar()
    by_mode: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    rows = conn.execute(select(host.c.mode, host.c.last_seen_at, host.c.agent_reported, host.c.verdict))
    hosts_total = 0
    need_action = 0
    for mode, last_seen_at, agent_reported, verdict in rows:
        hosts_total += 1
        by_mode[mode or NO_MODE] += 1
        status = brief_status(last_seen_at, agent_reported, verdict, rule)
        statuses[status.status] += 1
        need_action += status.needs_action
    return Summary(
        events=events,
        guests_affected=affected,
        guests_killed=int(killed or 0),
        hosts_total=hosts_total,
        hosts_by_mode=dict(sorted(by_mode.items())),
        hosts_by_status=dict(sorted(statuses.items())),
        hosts_need_action=need_action,
        hosts_silent=statuses["silent"],
        gaps=lost_in_range(conn, since=since, until=until),
    )
