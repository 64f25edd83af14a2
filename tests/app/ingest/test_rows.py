"""Payload → rows, without a database: dedup, guests and how they were killed, CPU counts, rollups."""

from __future__ import annotations

from datetime import timedelta

from agent.payload import Action, Mode
from app.ingest.rows import (
    build_rows,
    cpu_counts,
    rollup_rows,
    state_signature,
)
from app.ingest.schema import PayloadIn, StateIn, parse_payload
from tests.app.ingest.payloads import T0, event, payload, state


def parsed(*args: object, **kwargs: object) -> PayloadIn:
    return parse_payload(payload(*args, **kwargs).to_json().encode())  # type: ignore[arg-type]


def parsed_state(**kwargs: object) -> StateIn:
    p = parsed(st=state(**kwargs))  # type: ignore[arg-type]
    assert p.state is not None
    return p.state


def test_event_repeated_within_a_batch_is_kept_once_and_counted_as_received() -> None:
    rows = build_rows(parsed([event(1), event(2), event(1)]), T0)
    assert [e["seq"] for e in rows.events] == [1, 2]
    assert rows.received == 3


def test_events_carry_the_batch_boot_id_and_receive_time_and_their_guest_name_aside() -> None:
    rows = build_rows(parsed([event(1, guest="web"), event(2, guest=None)]), T0 + timedelta(hours=1))
    assert {e["boot_id"] for e in rows.events} == {"boot-1"}
    assert {e["received_at"] for e in rows.events} == {T0 + timedelta(hours=1)}
    assert rows.event_guests == ["web", None]
    assert rows.events[0]["vmm"] == "qemu" and rows.events[1]["vmm"] is None


def test_one_guest_row_per_name_spans_its_first_and_last_sighting() -> None:
    evs = [event(1, T0 + timedelta(seconds=30), guest="a"), event(2, T0, guest="a"), event(3, guest="b")]
    rows = build_rows(parsed(evs), T0)
    by_name = {g["name"]: g for g in rows.guests}
    assert [g["name"] for g in rows.guests] == ["a", "b"]
    assert by_name["a"]["first_seen_at"] == T0
    assert by_name["a"]["last_seen_at"] == T0 + timedelta(seconds=30)


def test_guest_killed_by_sigbus_gets_killed_at_and_sigbus_as_last_action() -> None:
    evs = [event(1, T0, guest="a"), event(2, T0 + timedelta(seconds=5), guest="a", action=Action.SIGBUS)]
    [guest] = build_rows(parsed(evs), T0).guests
    assert guest["killed_at"] == T0 + timedelta(seconds=5)
    assert guest["last_action"] == "sigbus"


def test_a_kill_is_labelled_how_it_was_known_and_older_agents_by_source() -> None:
    at = T0 + timedelta(seconds=5)
    inferred = parsed([event(1, at, guest="a", action=Action.SIGBUS)])
    inferred.events[0]["evidence"] = "vmm_exit"
    assert build_rows(inferred, T0).guests[0]["killed_by"] == "vmm_exit"
    [old_agent] = build_rows(parsed([event(2, at, guest="b", action=Action.SIGBUS)]), T0).guests
    assert old_agent["killed_by"] == "kernel_line"  # a kmsg event without evidence: the kernel's line


def test_guest_never_sigbused_has_no_killed_at() -> None:
    [guest] = build_rows(parsed([event(1, guest="a")]), T0).guests
    assert guest["killed_at"] is None


def test_cpu_counts_split_on_off_and_unreadable() -> None:
    st = parsed_state(sld_on=(True, False, True, None), errors={3: "cpu 3: EIO"})
    counts = cpu_counts(st.cpus)
    assert (counts.total, counts.on, counts.off, counts.error) == (4, 2, 1, 1)


def test_state_signature_ignores_test_ctrl_but_sees_per_cpu_detection_and_mode() -> None:
    def sig(**kwargs: object) -> tuple[object, ...]:
        verdict = str(kwargs.pop("verdict", "consistent"))
        st = parsed_state(**kwargs)  # type: ignore[arg-type]
        cpus = [c.model_dump() for c in st.cpus]
        return state_signature("b", "k", st.mode, st.ratelimit, st.mitigate, True, True, cpus, verdict)

    base = sig()
    assert sig(at=T0 + timedelta(minutes=5)) == base
    assert sig(sld_on=(True, False, True, True)) != base
    assert sig(mode=Mode.FATAL) != base
    assert sig(mitigate=0) != base
    assert sig(verdict="drift") != base  # a verdict change is a state change (#16)


def test_rollups_sum_counts_per_minute_and_hour_and_key() -> None:
    evs = [
        event(1, T0, count=2),
        event(2, T0 + timedelta(seconds=59), count=3),
        event(3, T0 + timedelta(seconds=60), count=1),  # next minute, on its edge
        event(4, T0 + timedelta(minutes=61), count=4),  # next hour
        event(5, T0, count=1, action=Action.THROTTLE),
    ]
    rows = build_rows(parsed(evs), T0)
    with_ids = [{**e, "guest_id": 7} for e in rows.events]
    minutes = {(r["bucket"], r["action"]): (r["count"], r["events"]) for r in rollup_rows(with_ids, 1, 60)}
    assert minutes == {
        (T0, "warn"): (5, 2),
        (T0, "throttle"): (1, 1),
        (T0 + timedelta(minutes=1), "warn"): (1, 1),
        (T0 + timedelta(minutes=61), "warn"): (4, 1),
    }
    hours = {(r["bucket"], r["action"]): r["count"] for r in rollup_rows(with_ids, 1, 3600)}
    assert hours == {(T0, "warn"): 6, (T0, "throttle"): 1, (T0 + timedelta(hours=1), "warn"): 4}


def test_rollup_keys_events_without_a_guest_as_guest_0() -> None:
    rows = build_rows(parsed([event(1, guest=None)]), T0)
    [row] = rollup_rows([{**e, "guest_id": None} for e in rows.events], 1, 60)
    assert row["guest_id"] == 0
