"""The host status rule: silent, else the agent's consistency verdict, else unknown (app/store/status.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from app.store.status import Break, HostStatus, host_status

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
SINCE = NOW - dt.timedelta(minutes=20)


def status(
    *,
    seen_s_ago: float | None = 10,
    verdict: str | None = "consistent",
    reason: str | None = "all on",
    silent_after_s: float = 300,
) -> HostStatus:
    return host_status(
        last_seen_at=NOW - dt.timedelta(seconds=seen_s_ago) if seen_s_ago is not None else None,
        verdict=verdict,
        reason=reason,
        details={"cpus": [5]},
        since=SINCE,
        now=NOW,
        silent_after_s=silent_after_s,
    )


def test_host_that_reported_recently_shows_its_agents_verdict_and_reason() -> None:
    s = status(verdict="drift", reason="cpu 5 off in 3 samples")
    assert (s.status, s.reason, s.needs_action, s.details, s.since) == (
        "drift", "cpu 5 off in 3 samples", True, {"cpus": [5]}, SINCE,
    )  # fmt: skip


def test_host_silent_for_longer_than_silent_after_is_silent_and_keeps_its_last_verdict() -> None:
    s = status(seen_s_ago=301, verdict="drift")
    assert (s.status, s.verdict, s.needs_action) == ("silent", "drift", False)
    assert "has not reported since" in s.reason


def test_host_seen_exactly_silent_after_ago_is_not_yet_silent() -> None:
    assert status(seen_s_ago=300).status == "consistent"


def test_host_no_agent_ever_reported_is_silent_never_alive() -> None:
    s = status(seen_s_ago=None, verdict=None)
    assert (s.status, s.since) == ("silent", None)
    assert "splitwatch import" in s.reason


@pytest.mark.parametrize("verdict", [None, "ok", "made-up"])
def test_a_host_without_a_known_verdict_is_unknown_not_ok(verdict: str | None) -> None:
    s = status(verdict=verdict)
    assert (s.status, s.needs_action) == ("unknown", False)


@pytest.mark.parametrize(
    ("verdict", "needs_action"),
    [
        ("consistent", False),
        ("unsupported", False),
        ("off_by_design", False),
        ("transient", False),
        ("per_task_off", False),
        ("stuck_off", True),
        ("drift", True),
        ("inconsistent_config", True),
        ("foreign_hypervisor", True),
    ],
)
def test_needs_action_only_for_the_verdicts_an_operator_must_act_on(verdict: str, needs_action: bool) -> None:
    assert status(verdict=verdict).needs_action is needs_action


def test_label_is_the_words_people_read() -> None:
    assert status(verdict="per_task_off").label == "per-task off"
    assert status(verdict="stuck_off").label == "stuck off"


def test_the_backend_accepts_exactly_the_verdict_words_the_agent_sends() -> None:
    # One closed set on each side of the wire (#16): a verdict the agent learns must be learnt here.
    from agent.kernel.consistency import NEEDS_ACTION as AGENT_NEEDS_ACTION
    from agent.kernel.consistency import VERDICTS as AGENT_VERDICTS
    from app.store.status import NEEDS_ACTION, VERDICTS

    assert set(VERDICTS) == set(AGENT_VERDICTS)
    assert set(NEEDS_ACTION) == set(AGENT_NEEDS_ACTION)


# The backend's own outage (a Break, recorded by the evaluator) is no host's silence.
OUTAGE = Break(NOW - dt.timedelta(minutes=11), NOW - dt.timedelta(minutes=1))


def status_after_outage(seen_s_ago: float, outage: Break = OUTAGE) -> HostStatus:
    return host_status(
        last_seen_at=NOW - dt.timedelta(seconds=seen_s_ago),
        verdict="consistent",
        reason="all on",
        details=None,
        since=SINCE,
        now=NOW,
        silent_after_s=300,
        breaks=(outage,),
    )


def test_a_host_that_reported_until_the_backends_outage_is_not_silent_after_it() -> None:
    # 11 minutes without a report, 10 of them while the backend could not hear anyone.
    assert status_after_outage(11 * 60).status == "consistent"


def test_a_host_quiet_before_the_outage_counts_only_the_time_the_backend_could_hear() -> None:
    # Quiet 4 minutes before the outage and 1 after: 5 minutes heard, not over 300 s.
    assert status_after_outage(15 * 60).status == "consistent"
    s = status_after_outage(15 * 60 + 1)
    assert s.status == "silent"
    assert s.reason.endswith(
        "(over 300 s, not counting splitwatch's own outage from 2026-11-24 11:49:00 to 2026-11-24 11:59:00)"
    )


def test_an_outage_before_the_hosts_last_report_changes_nothing() -> None:
    # Reported after the outage, then stopped.
    s = status_after_outage(301, Break(NOW - dt.timedelta(hours=2), NOW - dt.timedelta(hours=1)))
    assert (s.status, s.reason.endswith("(over 300 s)")) == ("silent", True)


def test_two_outages_are_both_left_out_and_named_as_two() -> None:
    # Down 11 to 7 minutes ago and 6 to 1 minute ago: of 11 minutes quiet, 2 were heard.
    first = Break(NOW - dt.timedelta(minutes=11), NOW - dt.timedelta(minutes=7))
    second = Break(NOW - dt.timedelta(minutes=6), NOW - dt.timedelta(minutes=1))
    kw: dict[str, Any] = dict(verdict="consistent", reason="all on", details=None, since=SINCE, now=NOW)
    at = NOW - dt.timedelta(minutes=11)
    assert (
        host_status(last_seen_at=at, silent_after_s=120, breaks=(first, second), **kw).status == "consistent"
    )
    s = host_status(last_seen_at=at, silent_after_s=119, breaks=(first, second), **kw)
    assert s.status == "silent"
    assert s.reason.endswith(
        "not counting splitwatch's own 2 outages, the last from 2026-11-24 11:54:00 to 2026-11-24 11:59:00)"
    )
