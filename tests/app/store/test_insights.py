"""app/store/insights.py: the last trap of each offender from the rollups, and the state spans."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from app.store.insights import read_hosts, read_offenders, state_spans
from tests.app.conftest import Server, Tokens
from tests.app.fill import HOUR, MINUTE, SECOND, T0, Filler, ev, state


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def test_last_trap_is_found_in_partial_and_whole_hours_and_to_the_second_when_looked_up(
    fill: Filler, engine: Engine
) -> None:
    since, until = T0 - 30 * MINUTE, T0 + 2 * HOUR + 45 * MINUTE + 30 * SECOND  # 11:30 .. 14:45:30
    fill.send(
        "kvm-1",
        state=state(T0 - 2 * HOUR),
        events=[
            ev(T0 - 20 * MINUTE + 10 * SECOND, guest="lead", count=1),  # 11:40:10, the leading partial hour
            ev(T0 + 10 * MINUTE, guest="trail", count=1),
            ev(T0 + 2 * HOUR + 40 * MINUTE + 20 * SECOND, guest="trail", count=1),  # 14:40:20, trailing
            ev(T0 + 2 * HOUR + 46 * MINUTE, guest="trail", count=1),  # after `until`
            ev(T0 + HOUR + 5 * MINUTE + 5 * SECOND, guest="whole", count=1),
            ev(T0 + HOUR + 59 * MINUTE + 59 * SECOND, guest="whole", count=1),  # 13:59:59, a whole hour
        ],
    )
    with engine.connect() as conn:
        hosts, _ = read_hosts(conn, None)
        looked_up = {
            o.guest: o.last_trap_at for o in read_offenders(conn, hosts, since=since, until=until, exact=3)
        }
        minutes = {o.guest: o for o in read_offenders(conn, hosts, since=since, until=until, exact=0)}
    assert looked_up == {
        "lead": T0 - 20 * MINUTE + 10 * SECOND,
        "trail": T0 + 2 * HOUR + 40 * MINUTE + 20 * SECOND,
        "whole": T0 + HOUR + 59 * MINUTE + 59 * SECOND,
    }
    # Without a lookup, the host's newest is still exact; the others are their last minute.
    assert minutes["trail"].last_trap_at == T0 + 2 * HOUR + 40 * MINUTE + 20 * SECOND
    assert minutes["whole"].last_trap_at == T0 + HOUR + 59 * MINUTE
    assert minutes["lead"].last_trap_at == T0 - 20 * MINUTE
    assert minutes["whole"].comm is None and minutes["trail"].comm == "CPU 0/KVM"
    assert minutes["trail"].sightings == 2  # the line after `until` is not in the window


def test_state_spans_cut_the_window_only_where_kernel_mode_or_mitigate_changed(
    fill: Filler, engine: Engine
) -> None:
    fill.send("kvm-1", state=state(T0 - HOUR, mitigate=1))
    for i in range(5):  # cores flip in warn mode: new host_state rows, same mode and mitigate
        fill.send("kvm-1", state=state(T0 + i * MINUTE, mitigate=1, off=[i % 2]))
    fill.send("kvm-1", state=state(T0 + HOUR, mitigate=0))
    fill.send("kvm-1", state=state(T0 + 2 * HOUR, mode="fatal", mitigate=0))
    fill.send("kvm-2")  # no state ever
    with engine.connect() as conn:
        hosts, _ = read_hosts(conn, None)
        spans = state_spans(conn, [h.id for h in hosts], T0, T0 + 3 * HOUR)
    by_name = {h.name: spans[h.id] for h in hosts}
    assert [(s.start, s.end, s.mode, s.mitigate) for s in by_name["kvm-1"]] == [
        (T0, T0 + HOUR, "warn", 1),
        (T0 + HOUR, T0 + 2 * HOUR, "warn", 0),
        (T0 + 2 * HOUR, T0 + 3 * HOUR, "fatal", 0),
    ]
    assert [(s.start, s.end, s.mode) for s in by_name["kvm-2"]] == [(T0, T0 + 3 * HOUR, None)]
