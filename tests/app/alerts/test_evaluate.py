"""The evaluator on a real database, its clock passed in: rules fire once, resolve once, survive
a restart, and only the lease holder evaluates (issue 12)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from agent.payload import Action, GapReason, Mode
from app.alerts.evaluate import Report, evaluate, hear_at, lease_ttl_s, release_lease
from app.ingest.rows import build_rows
from app.ingest.schema import parse_payload
from app.ingest.write import write_batch
from app.settings import Settings
from app.store import alerting as store
from app.store.backend_break import recent_breaks
from app.store.status import Break
from app.store.tables import alert, alert_lease, alert_rule, webhook_delivery
from tests.app.ingest.payloads import event, gap, host_info, payload, state

NOW = datetime.now(UTC).replace(microsecond=0)
A, B = "process-a", "process-b"


@pytest.fixture
def cfg(settings: Settings) -> Settings:
    return settings.model_copy(update={"alert_interval": 1.0, "public_url": "https://sw.example.com"})


def ingest(
    engine: Engine,
    evs: Sequence[Any] = (),
    st: Any = None,
    gaps: Sequence[Any] = (),
    *,
    host: str = "kvm-1",
    at: datetime = NOW,
) -> None:
    body = payload(evs, st, gaps, host=host_info(name=host)).to_json().encode()
    with engine.begin() as conn:
        write_batch(conn, build_rows(parse_payload(body), at))


_seq = iter(range(1, 1_000_000))


def events(n: int, guest: str | None = "vm-1", at: datetime = NOW, action: Action = Action.WARN) -> list[Any]:
    return [event(next(_seq), at, guest=guest, action=action) for _ in range(n)]


def breaks(engine: Engine) -> list[Break]:
    """The backend's breaks kept in the database (every process reads them)."""
    with engine.connect() as conn:
        return list(recent_breaks(conn, NOW + timedelta(days=1)))


def run(engine: Engine, cfg: Settings, at: datetime = NOW, holder: str = A) -> Report | None:
    """One round of the evaluator loop: the database heard from, then the evaluation."""
    hear(engine, cfg, at)
    with engine.begin() as conn:
        return evaluate(conn, cfg, holder, at)


def hear(engine: Engine, cfg: Settings, at: datetime) -> None:
    with engine.begin() as conn:
        hear_at(lease_ttl_s(cfg.alert_interval), at, None, conn)


def add_webhook(engine: Engine, match: dict[str, str] | None = None) -> int:
    with engine.begin() as conn:
        return store.insert_webhook(
            conn,
            {
                "url": "https://hooks.example.com/",
                "format": "alertmanager",
                "secret": "whsec_x",
                "match": match or {},
                "enabled": True,
            },
            NOW,
        )


def add_rule(engine: Engine, **values: Any) -> int:
    base = {
        "name": "busy",
        "type": "threshold",
        "kind": None,
        "group_by": "guest",
        "window_s": 60,
        "threshold": 3,
        "for_s": 0,
        "severity": "warning",
        "match": {},
        "labels": {},
        "annotations": {},
        "enabled": True,
    }
    base.update(values)
    with engine.begin() as conn:
        return store.insert_rule(conn, base, NOW)


def only_rule(engine: Engine, name: str) -> None:
    """Disable every other rule (the built-ins would fire on the same data)."""
    with engine.begin() as conn:
        conn.execute(update(alert_rule).where(alert_rule.c.name != name).values(enabled=False))


def notices(engine: Engine) -> list[tuple[str, str]]:
    """(notice, alertname) of every outbox row, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(webhook_delivery.c.notice, webhook_delivery.c.body).order_by(webhook_delivery.c.id)
        ).all()
    import json

    return [(n, json.loads(b)["alerts"][0]["labels"]["alertname"]) for n, b in rows]


def alerts(engine: Engine, name: str | None = None) -> list[Any]:
    with engine.connect() as conn:
        q = (
            select(alert, alert_rule.c.name)
            .join(alert_rule, alert_rule.c.id == alert.c.rule_id)
            .order_by(alert.c.id)
        )
        if name:
            q = q.where(alert_rule.c.name == name)
        return list(conn.execute(q).all())


# ------------------------------------------------------------------------------ threshold


def test_threshold_fires_once_writing_its_notice_in_the_same_evaluation(
    engine: Engine, cfg: Settings
) -> None:
    run(engine, cfg)  # seeds the built-ins
    add_rule(engine)
    only_rule(engine, "busy")
    add_webhook(engine)
    ingest(engine, events(2))
    assert run(engine, cfg) == Report(0, 0, 0)
    ingest(engine, events(1))
    assert run(engine, cfg, NOW + timedelta(seconds=1)) == Report(fired=1, resolved=0, notices=1)
    [a] = alerts(engine)
    assert (a.status, a.value, a.labels["guest"], a.labels["host"]) == ("firing", 3, "vm-1", "kvm-1")
    assert a.notified_at is not None
    for later in (2, 3, 4):
        assert run(engine, cfg, NOW + timedelta(seconds=later)) == Report(0, 0, 0)
    assert notices(engine) == [("firing", "busy")]


def test_a_restarted_backend_resumes_and_never_fires_again(engine: Engine, cfg: Settings) -> None:
    run(engine, cfg)
    add_rule(engine)
    only_rule(engine, "busy")
    add_webhook(engine)
    ingest(engine, events(5))
    assert run(engine, cfg, holder=A) is not None
    # Process A died; B starts on the same database once A's lease has lapsed.
    after = NOW + timedelta(seconds=10)
    assert run(engine, cfg, after, holder=B) == Report(0, 0, 0)
    assert [a.status for a in alerts(engine)] == ["firing"]
    assert notices(engine) == [("firing", "busy")]


def test_alert_resolves_once_after_the_window_passes(engine: Engine, cfg: Settings) -> None:
    run(engine, cfg)
    add_rule(engine)
    only_rule(engine, "busy")
    add_webhook(engine)
    ingest(engine, events(3))
    run(engine, cfg)
    # Still inside the window (rounded out to whole minute buckets).
    assert run(engine, cfg, NOW + timedelta(seconds=60)).resolved == 0  # type: ignore[union-attr]
    gone = NOW + timedelta(minutes=3)
    assert run(engine, cfg, gone) == Report(fired=0, resolved=1, notices=1)
    assert run(engine, cfg, gone + timedelta(seconds=1)) == Report(0, 0, 0)
    [a] = alerts(engine)
    assert (a.status, a.ends_at) == ("resolved", gone)
    assert notices(engine) == [("firing", "busy"), ("resolved", "busy")]


def test_for_keeps_it_pending_and_pending_that_clears_sends_nothing(engine: Engine, cfg: Settings) -> None:
    run(engine, cfg)
    add_rule(engine, for_s=120)
    only_rule(engine, "busy")
    add_webhook(engine)
    ingest(engine, events(3))
    run(engine, cfg)
    assert [a.status for a in alerts(engine)] == ["pending"]
    run(engine, cfg, NOW + timedelta(seconds=60))
    assert [a.status for a in alerts(engine)] == ["pending"]
    run(engine, cfg, NOW + timedelta(minutes=5))  # the events left the window before `for` passed
    assert alerts(engine) == []
    assert notices(engine) == []


def test_for_fires_when_the_condition_held_that_long(engine: Engine, cfg: Settings) -> None:
    run(engine, cfg)
    add_rule(engine, for_s=30, window_s=600)
    only_rule(engine, "busy")
    add_webhook(engine)
    ingest(engine, events(3))
    run(engine, cfg)
    assert run(engine, cfg, NOW + timedelta(seconds=29)).fired == 0  # type: ignore[union-attr]
    assert run(engine, cfg, NOW + timedelta(seconds=30)).fired == 1  # type: ignore[union-attr]
    [a] = alerts(engine)
    assert a.pending_since == NOW and a.starts_at == NOW + timedelta(seconds=30)


def test_group_by_fleet_and_host_and_filters(engine: Engine, cfg: Settings) -> None:
    run(engine, cfg)
    add_rule(engine, name="fleet", group_by=None, threshold=4)
    add_rule(engine, name="per-host", group_by="host", threshold=3)
    add_rule(engine, name="sigbus-only", group_by="host", threshold=1, match={"action": "sigbus"})
    ingest(engine, events(2), host="kvm-1")
    ingest(engine, events(3, guest=None), host="kvm-2")
    run(engine, cfg)
    assert [(a.name, a.labels.get("host"), a.value) for a in alerts(engine) if a.name != "NewOffender"] == [
        ("fleet", None, 5),
        ("per-host", "kvm-2", 3),
    ]


def test_webhook_match_selects_what_it_is_told(engine: Engine, cfg: Settings) -> None:
    run(engine, cfg)
    add_rule(engine)
    only_rule(engine, "busy")
    add_webhook(engine, {"guest": "vm-2"})
    ingest(engine, events(3, guest="vm-1"))
    ingest(engine, events(3, guest="vm-2"))
    run(engine, cfg)
    assert len(alerts(engine)) == 2
    assert notices(engine) == [("firing", "busy")]


def test_silenced_alert_writes_no_notice(engine: Engine, cfg: Settings) -> None:
    run(engine, cfg)
    add_rule(engine)
    only_rule(engine, "busy")
    add_webhook(engine)
    with engine.begin() as conn:
        store.insert_silence(
            conn,
            {
                "matchers": {"guest": "vm-1"},
                "starts_at": NOW - timedelta(minutes=1),
                "ends_at": NOW + timedelta(hours=1),
                "created_by": "t",
                "comment": "",
                "created_at": NOW,
            },
        )
    ingest(engine, events(3))
    assert run(engine, cfg).fired == 1  # type: ignore[union-attr]
    assert notices(engine) == []
    assert alerts(engine)[0].notified_at is None


# ------------------------------------------------------------------------------ built-in rules


@pytest.fixture
def at_most(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Scales a fleet-wide event down: the most alerts a rule has open (MAX_FINDINGS_PER_RULE)."""

    def set_most(n: int) -> None:
        monkeypatch.setattr("app.alerts.evaluate.MAX_FINDINGS_PER_RULE", n)
        monkeypatch.setattr("app.alerts.evaluate._AT_MOST", set())

    return set_most


def fired(engine: Engine, cfg: Settings, name: str, at: datetime = NOW) -> list[Any]:
    run(engine, cfg, at)
    return [a for a in alerts(engine, name) if a.status == "firing"]


def test_guest_killed_fires_with_no_rule_configured(engine: Engine, cfg: Settings) -> None:
    ingest(engine, events(1, guest="vm-dead", action=Action.SIGBUS), state(NOW, mode=Mode.FATAL))
    [a] = fired(engine, cfg, "GuestKilled")
    assert a.labels == {
        "alertname": "GuestKilled",
        "severity": "critical",
        "host": "kvm-1",
        "guest": "vm-dead",
    }
    assert "SIGBUS" in a.annotations["summary"]


def test_host_process_sigbus_is_no_guest_killed(engine: Engine, cfg: Settings) -> None:
    ingest(engine, events(1, guest=None, action=Action.SIGBUS), state(NOW, mode=Mode.FATAL))
    assert fired(engine, cfg, "GuestKilled") == []


def test_host_inconsistent_fires_on_the_agents_drift_verdict_and_resolves_when_consistent(
    engine: Engine, cfg: Settings
) -> None:
    drift = state(
        NOW, sld_on=(True, False, True, True), verdict="drift", reason="CPU 1 read bit 29 off in 3 samples"
    )
    ingest(engine, st=drift)
    [a] = fired(engine, cfg, "HostInconsistent", NOW + timedelta(seconds=1))
    assert a.labels["host"] == "kvm-1"
    assert "CPU 1 read bit 29 off" in a.annotations["summary"] + a.annotations["description"]
    ingest(engine, st=state(NOW + timedelta(seconds=2), verdict="consistent"))  # every core on again
    assert fired(engine, cfg, "HostInconsistent", NOW + timedelta(seconds=3)) == []


@pytest.mark.parametrize(
    ("verdict", "pages"),
    [
        ("drift", True),
        ("stuck_off", True),
        ("inconsistent_config", True),
        ("foreign_hypervisor", True),
        ("transient", False),
        ("per_task_off", False),
        ("unsupported", False),
        ("off_by_design", False),
        ("consistent", False),
    ],
)
def test_host_inconsistent_pages_only_on_verdicts_that_need_action(
    engine: Engine, cfg: Settings, verdict: str, pages: bool
) -> None:
    # #16: warn mode's transient off cores and a 5.4 host's "unsupported" must never page.
    ingest(engine, st=state(NOW, verdict=verdict, reason=f"the agent says {verdict}"))
    assert len(fired(engine, cfg, "HostInconsistent", NOW + timedelta(seconds=1))) == int(pages)


def test_agent_silent_fires_after_its_window_and_resolves_when_it_reports(
    engine: Engine, cfg: Settings
) -> None:
    # Evaluations 2 minutes apart: the jumps between them are no break (see the break's tests).
    cfg = cfg.model_copy(update={"alert_interval": 120.0})
    ingest(engine, st=state(NOW))
    assert fired(engine, cfg, "AgentSilent", NOW + timedelta(seconds=299)) == []
    [a] = fired(engine, cfg, "AgentSilent", NOW + timedelta(seconds=400))
    assert a.labels["host"] == "kvm-1" and a.value >= 400
    ingest(engine, st=state(NOW + timedelta(seconds=401)), at=NOW + timedelta(seconds=401))
    assert fired(engine, cfg, "AgentSilent", NOW + timedelta(seconds=402)) == []


def test_events_lost_over_the_threshold_fire(engine: Engine, cfg: Settings) -> None:
    ingest(engine, gaps=[gap(1, 50)])
    assert fired(engine, cfg, "EventsLost") == []
    ingest(engine, gaps=[gap(100, 199, GapReason.SUPPRESSED)])
    [a] = fired(engine, cfg, "EventsLost")
    assert a.value == 150 and "overrun 50" in a.annotations["summary"]


def test_forged_records_fire_and_do_not_count_as_losses(engine: Engine, cfg: Settings) -> None:
    ingest(engine, gaps=[gap(7, 7, GapReason.FORGED)])
    [a] = fired(engine, cfg, "ForgedKernelLog")
    assert a.labels == {"alertname": "ForgedKernelLog", "severity": "critical", "host": "kvm-1"}
    assert alerts(engine, "EventsLost") == []


def test_new_offender_fires_for_a_guest_never_seen_before_only(engine: Engine, cfg: Settings) -> None:
    ingest(engine, events(1, guest="vm-old", at=NOW - timedelta(days=2)))
    ingest(engine, events(1, guest="vm-new"))
    [a] = fired(engine, cfg, "NewOffender")
    assert a.labels["guest"] == "vm-new" and a.labels["severity"] == "info"


def test_disabled_builtin_fires_nothing_and_retuned_one_uses_its_new_threshold(
    engine: Engine, cfg: Settings
) -> None:
    run(engine, cfg)
    with engine.begin() as conn:
        conn.execute(update(alert_rule).where(alert_rule.c.name == "ForgedKernelLog").values(enabled=False))
        conn.execute(update(alert_rule).where(alert_rule.c.name == "EventsLost").values(threshold=10))
    ingest(engine, gaps=[gap(1, 20), gap(30, 30, GapReason.FORGED)])
    assert fired(engine, cfg, "ForgedKernelLog") == []
    assert len(fired(engine, cfg, "EventsLost")) == 1


# ------------------------------------------------------------------------------ one evaluator


def test_only_the_lease_holder_evaluates_until_its_lease_lapses(engine: Engine, cfg: Settings) -> None:
    assert run(engine, cfg, holder=A) is not None
    assert run(engine, cfg, NOW + timedelta(seconds=1), holder=B) is None
    assert run(engine, cfg, NOW + timedelta(seconds=2), holder=A) is not None
    # A stops renewing; 3 intervals (min 3 s) later B takes over.
    assert run(engine, cfg, NOW + timedelta(seconds=6), holder=B) is not None
    assert run(engine, cfg, NOW + timedelta(seconds=7), holder=A) is None
    with engine.connect() as conn:
        assert conn.execute(select(alert_lease.c.holder)).scalar_one() == B


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_concurrent_evaluations_on_postgres_commit_one(engine: Engine, cfg: Settings) -> None:
    run(engine, cfg, holder=A)
    add_rule(engine)
    add_webhook(engine)
    ingest(engine, events(3))
    # The lease has lapsed for everyone: both race for it at the same moment.
    later = NOW + timedelta(seconds=60)
    barrier = threading.Barrier(2)
    results: dict[str, Report | None] = {}

    def race(holder: str) -> None:
        with engine.begin() as conn:
            barrier.wait()
            results[holder] = evaluate(conn, cfg, holder, later)

    threads = [threading.Thread(target=race, args=(h,)) for h in (B, "process-c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r is None for r in results.values()) == [False, True]
    with engine.connect() as conn:
        firing = conn.execute(
            select(func.count()).select_from(alert).where(alert.c.status == "firing")
        ).scalar()
    assert firing == len([n for n in notices(engine) if n[0] == "firing"])
    assert len(set(a.fingerprint for a in alerts(engine))) == len(alerts(engine))


def test_an_open_alert_found_again_gets_its_evaluation_time_and_its_new_figure(
    engine: Engine, cfg: Settings
) -> None:
    run(engine, cfg)
    add_rule(engine)
    only_rule(engine, "busy")
    ingest(engine, events(3))
    run(engine, cfg, NOW)
    # The same figure: only last_evaluated_at moves (one statement for all such alerts).
    run(engine, cfg, NOW + timedelta(seconds=5))
    [a] = alerts(engine)
    assert (a.status, a.value, a.last_evaluated_at) == ("firing", 3, NOW + timedelta(seconds=5))
    ingest(engine, events(2))
    run(engine, cfg, NOW + timedelta(seconds=6))
    [a] = alerts(engine)
    assert (a.value, a.last_evaluated_at) == (5, NOW + timedelta(seconds=6))
    assert a.annotations["summary"].startswith("5 ")


def test_host_rules_judge_only_hosts_that_may_match_yet_miss_none(engine: Engine, cfg: Settings) -> None:
    # The SQL narrows the host rows (a verdict needing action; a report older than the window);
    # the rule still decides: a drifting host that went silent is AgentSilent, not inconsistent.
    ingest(engine, st=state(NOW, verdict="drift"), host="kvm-drift")
    ingest(
        engine,
        st=state(NOW - timedelta(minutes=20), verdict="drift"),
        host="kvm-gone",
        at=NOW - timedelta(minutes=20),
    )
    ingest(engine, st=state(NOW), host="kvm-ok")
    inconsistent = fired(engine, cfg, "HostInconsistent")
    assert [a.labels["host"] for a in inconsistent] == ["kvm-drift"]
    assert [a.labels["host"] for a in fired(engine, cfg, "AgentSilent")] == ["kvm-gone"]


def test_a_rule_past_its_most_alerts_says_so_once_and_the_others_fire_as_those_resolve(
    engine: Engine, cfg: Settings, at_most: Callable[[int], None], caplog: pytest.LogCaptureFixture
) -> None:
    # A mass outage at fleet size, scaled down: 3 hosts silent, a rule opening at most 2 alerts.
    at_most(2)
    for host in ("kvm-1", "kvm-2", "kvm-3"):
        ingest(engine, st=state(NOW), host=host)
    later = NOW + timedelta(seconds=400)
    with caplog.at_level("INFO", logger="splitwatch.alerts"):
        first = {a.labels["host"] for a in fired(engine, cfg, "AgentSilent", later)}
        assert len(first) == 2
        fired(engine, cfg, "AgentSilent", later + timedelta(seconds=1))
        assert caplog.text.count("alert rule AgentSilent found 2 label sets, its most per evaluation") == 1
        # One of them reports again: its alert resolves, and the third host's fires.
        back = sorted(first)[0]
        ingest(engine, st=state(later), host=back, at=later)
        firing = fired(engine, cfg, "AgentSilent", later + timedelta(seconds=2))
        assert {a.labels["host"] for a in firing} == {"kvm-1", "kvm-2", "kvm-3"} - {back}


def test_a_rule_at_its_most_resolves_nothing_it_did_not_find_until_it_finds_fewer(
    engine: Engine, cfg: Settings, at_most: Callable[[int], None]
) -> None:
    # Scaled down: a rule opening at most 2 alerts, hosts found in the order they were first seen.
    at_most(2)
    t1, t2, t3 = (NOW + timedelta(seconds=s) for s in (400, 800, 1200))
    ingest(engine, st=state(NOW), host="kvm-a")  # first seen: found first once silent
    for host in ("kvm-b", "kvm-c", "kvm-d"):
        ingest(engine, st=state(NOW), host=host)
    ingest(engine, st=state(t1), host="kvm-a", at=t1)  # kvm-a still reports at t1
    assert {a.labels["host"] for a in fired(engine, cfg, "AgentSilent", t1)} == {"kvm-b", "kvm-c"}
    # kvm-a goes silent too: the first two found are now kvm-a and kvm-b. kvm-c is still silent,
    # so its alert must not resolve (that would tell the pager kvm-c is back); and the rule has
    # its most open, so kvm-a waits for room.
    assert {a.labels["host"] for a in fired(engine, cfg, "AgentSilent", t2)} == {"kvm-b", "kvm-c"}
    assert [a for a in alerts(engine, "AgentSilent") if a.status == "resolved"] == []
    # All but kvm-d report again: the rule finds fewer than its most, and what cleared resolves.
    for host in ("kvm-a", "kvm-b", "kvm-c"):
        ingest(engine, st=state(t3), host=host, at=t3)
    assert {a.labels["host"] for a in fired(engine, cfg, "AgentSilent", t3)} == {"kvm-d"}
    resolved = {a.labels["host"] for a in alerts(engine, "AgentSilent") if a.status == "resolved"}
    assert resolved == {"kvm-b", "kvm-c"}


def test_a_threshold_rule_at_its_most_keeps_what_still_holds_instead_of_flapping_at_the_edge(
    engine: Engine, cfg: Settings, at_most: Callable[[int], None]
) -> None:
    # Scaled down: a rule opening at most 2 alerts, three guests over its threshold. Which two
    # are the biggest changes; an alert whose guest is still over the threshold must not resolve
    # (and fire again when the order turns back): that is a pager storm in a fleet-wide event.
    at_most(2)
    run(engine, cfg)
    add_rule(engine, window_s=600, threshold=3)
    only_rule(engine, "busy")
    add_webhook(engine)
    ingest(engine, events(4, guest="vm-b", at=NOW - timedelta(minutes=6)))
    ingest(engine, events(5, guest="vm-a") + events(3, guest="vm-c"))

    def firing(at: datetime) -> set[str]:
        run(engine, cfg, at)
        return {a.labels["guest"] for a in alerts(engine, "busy") if a.status == "firing"}

    assert firing(NOW) == {"vm-a", "vm-b"}  # the two biggest: 5 and 4
    ingest(engine, events(10, guest="vm-c", at=NOW + timedelta(minutes=1)))
    # vm-c (13) and vm-a (5) are now the biggest; vm-b's 4 still holds, so it stays and vm-c waits.
    for seconds in (60, 61, 62):
        assert firing(NOW + timedelta(seconds=seconds)) == {"vm-a", "vm-b"}
    assert notices(engine) == [("firing", "busy"), ("firing", "busy")]
    # vm-b's events leave the window: it resolves, and vm-c takes its place.
    assert firing(NOW + timedelta(minutes=6)) == {"vm-a", "vm-c"}
    assert [a.labels["guest"] for a in alerts(engine, "busy") if a.status == "resolved"] == ["vm-b"]
    assert sorted(notices(engine)[2:]) == [("firing", "busy"), ("resolved", "busy")]


def test_a_gap_rule_at_its_most_asks_again_about_the_hosts_it_did_not_find(
    engine: Engine, cfg: Settings, at_most: Callable[[int], None]
) -> None:
    # The same for counted losses: a host whose losses still reach the threshold keeps its alert.
    at_most(1)
    run(engine, cfg)
    only_rule(engine, "EventsLost")
    ingest(engine, gaps=[gap(1, 150)], host="kvm-1")
    assert [a.labels["host"] for a in fired(engine, cfg, "EventsLost")] == ["kvm-1"]
    ingest(engine, gaps=[gap(1, 200)], host="kvm-2")  # more lost: found first now
    firing = fired(engine, cfg, "EventsLost", NOW + timedelta(seconds=1))
    assert [a.labels["host"] for a in firing] == ["kvm-1"]
    assert [a for a in alerts(engine, "EventsLost") if a.status == "resolved"] == []


def test_agent_silent_does_not_count_the_time_the_backend_could_not_hear(
    engine: Engine, cfg: Settings
) -> None:
    # The backend (or its database) was down for 10 minutes: no batch was stored and nothing was
    # evaluated. Every host then looks silent, but for the 10 minutes nobody could hear them: an
    # AgentSilent per host of the fleet, caused by us, was a pager storm after every outage.
    slow = cfg.model_copy(update={"alert_interval": 120.0})  # evaluations 2 min apart are no break
    down, back = NOW, NOW + timedelta(minutes=10)
    ingest(engine, st=state(down - timedelta(minutes=4)), host="kvm-quiet", at=down - timedelta(minutes=4))
    ingest(engine, st=state(down), host="kvm-busy", at=down)

    def firing(at: datetime) -> set[str]:
        run(engine, slow, at)
        return {a.labels["host"] for a in alerts(engine, "AgentSilent") if a.status == "firing"}

    assert firing(down) == set()
    assert firing(back) == set()  # 10 and 14 minutes without a report, 0 and 4 of them heard
    assert breaks(engine) == [Break(down, back)]
    # kvm-quiet was silent 4 minutes before the break: 1 minute more and it is over the window.
    assert firing(back + timedelta(seconds=61)) == {"kvm-quiet"}
    # kvm-busy reported until the break: one window after the backend is back.
    assert firing(back + timedelta(seconds=299)) == {"kvm-quiet"}
    assert firing(back + timedelta(seconds=301)) == {"kvm-quiet", "kvm-busy"}


def test_a_flapping_database_two_outages_are_both_left_out(engine: Engine, cfg: Settings) -> None:
    # The database went away for 5 minutes, came back for 1, went away for 5 more (a failover
    # flapping). A host that reported until the first was heard for 1 minute of its 11.
    slow = cfg.model_copy(update={"alert_interval": 60.0})  # the lease's time: 3 minutes
    ingest(engine, st=state(NOW), host="kvm-1", at=NOW)
    run(engine, slow, NOW)
    for minutes in (5, 6, 11):
        run(engine, slow, NOW + timedelta(minutes=minutes))
    assert breaks(engine) == [
        Break(NOW, NOW + timedelta(minutes=5)),
        Break(NOW + timedelta(minutes=6), NOW + timedelta(minutes=11)),
    ]
    assert [a for a in alerts(engine, "AgentSilent") if a.status == "firing"] == []
    # 4 more quiet minutes heard, evaluated each minute: 5 in all, not yet over the window.
    for minutes in (12, 13, 14, 15):
        run(engine, slow, NOW + timedelta(minutes=minutes))
    assert [a for a in alerts(engine, "AgentSilent") if a.status == "firing"] == []
    run(engine, slow, NOW + timedelta(minutes=15, seconds=2))
    assert [a.labels["host"] for a in alerts(engine, "AgentSilent") if a.status == "firing"] == ["kvm-1"]


def test_an_evaluation_failing_while_the_database_answers_is_no_break(engine: Engine, cfg: Settings) -> None:
    # A bug in a rule fails every evaluation for 10 minutes while ingest goes on: the rounds
    # still reached the database, so nothing excuses a host that went quiet meanwhile.
    slow = cfg.model_copy(update={"alert_interval": 120.0})
    ingest(engine, st=state(NOW), host="kvm-quiet", at=NOW)
    run(engine, slow, NOW)
    for minutes in (2, 4, 6, 8):  # the rounds that failed after hearing from the database
        hear(engine, slow, NOW + timedelta(minutes=minutes))
    run(engine, slow, NOW + timedelta(minutes=10))
    assert breaks(engine) == []
    firing = [a.labels["host"] for a in alerts(engine, "AgentSilent") if a.status == "firing"]
    assert firing == ["kvm-quiet"]  # 10 minutes quiet, all of them heard


def test_a_graceful_restart_is_a_break_too_and_one_process_taking_over_from_another_is_not(
    engine: Engine, cfg: Settings
) -> None:
    slow = cfg.model_copy(update={"alert_interval": 120.0})
    ingest(engine, st=state(NOW), host="kvm-1")
    run(engine, slow, NOW, holder=A)
    with engine.begin() as conn:
        release_lease(conn, A)  # a stop hands the lease over at once, and keeps its last renewal
    run(engine, slow, NOW + timedelta(minutes=10), holder=B)
    assert breaks(engine) == [Break(NOW, NOW + timedelta(minutes=10))]
    assert [a for a in alerts(engine, "AgentSilent") if a.status == "firing"] == []
    # B kept evaluating; another process taking over within the lease's time is no break.
    run(engine, slow, NOW + timedelta(minutes=11), holder=B)
    with engine.begin() as conn:
        release_lease(conn, B)
    run(engine, slow, NOW + timedelta(minutes=12), holder="process-c")
    assert breaks(engine) == [Break(NOW, NOW + timedelta(minutes=10))]  # no new one
