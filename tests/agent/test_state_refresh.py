"""The agent sends its host state only when it changed, when drift evidence needs every sample,
or every refresh interval (agent/state_refresh.py, #13)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from agent.payload import CpuState, Event, HostInfo, HostState, Kind, Mode, Payload, Source
from agent.state_refresh import StateRefresh

T0 = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
HOST = HostInfo("kvm-1", "boot-1", "6.8.0", "Intel Xeon", "0.1.0")


def sample(
    i: int, sld_on: tuple[bool | None, ...] = (True, True), mode: Mode = Mode.WARN, host: HostInfo = HOST
) -> list[Payload]:
    state = HostState(
        observed_at=T0 + timedelta(seconds=10 * i),
        mode=mode,
        ratelimit=None,
        mitigate=1,
        sld_supported=True,
        bld_supported=True,
        cpus=tuple(
            CpuState(c, None, None, None, "EIO")
            if on is None
            else CpuState(c, 0x20000000 if on else 0, on, True)  # TEST_CTRL bit 29
            for c, on in enumerate(sld_on)
        ),
    )
    trap = Event(Source.KMSG, i, state.observed_at, Kind.SPLIT_LOCK, "stress-ng", 7, 7, "0x10", 1, "warn")  # type: ignore[arg-type]
    return [Payload(host=host, state=state, events=(trap,))]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sent_states(refresh: StateRefresh, passes: list[list[Payload]], clock: Clock | None = None) -> list[bool]:
    out = []
    for p in passes:
        kept = refresh.filter(p)
        assert [x.events for x in kept] == [x.events for x in p]  # events always go
        out.append(kept[0].state is not None)
        if clock is not None:
            clock.now += 10
    return out


def test_the_first_pass_sends_the_state_and_unchanged_samples_after_it_do_not() -> None:
    clock = Clock()
    assert sent_states(StateRefresh(120, clock), [sample(i) for i in range(5)], clock) == [
        True, False, False, False, False,
    ]  # fmt: skip


def test_a_state_that_changed_is_sent_at_once() -> None:
    clock = Clock()
    passes = [sample(0), sample(1), sample(2, mode=Mode.FATAL), sample(3, mode=Mode.FATAL)]
    assert sent_states(StateRefresh(120, clock), passes, clock) == [True, False, True, False]


def test_a_new_boot_or_kernel_sends_the_state() -> None:
    clock = Clock()
    rebooted = replace(HOST, boot_id="boot-2")
    passes = [sample(0), sample(1, host=rebooted), sample(2, host=rebooted)]
    assert sent_states(StateRefresh(120, clock), passes, clock) == [True, True, False]


def test_the_state_is_sent_again_once_the_refresh_interval_passed() -> None:
    clock = Clock()
    refresh = StateRefresh(30, clock)  # passes every 10 s: a full state every third pass
    assert sent_states(refresh, [sample(i) for i in range(7)], clock) == [
        True, False, False, True, False, False, True,
    ]  # fmt: skip


def test_a_core_read_off_while_the_mode_says_on_is_sent_every_pass() -> None:
    # The backend counts samples of a core read off before it calls the host drifting.
    clock = Clock()
    off = [sample(i, sld_on=(True, False)) for i in range(4)]
    assert sent_states(StateRefresh(120, clock), off, clock) == [True, True, True, True]


def test_an_unreadable_core_while_the_mode_says_on_is_sent_every_pass() -> None:
    clock = Clock()
    unreadable = [sample(i, sld_on=(True, None)) for i in range(3)]
    assert sent_states(StateRefresh(120, clock), unreadable, clock) == [True, True, True]


def test_a_core_off_while_the_mode_is_off_is_an_unchanged_state() -> None:
    clock = Clock()
    off_mode = [sample(i, sld_on=(False, False), mode=Mode.OFF) for i in range(3)]
    assert sent_states(StateRefresh(120, clock), off_mode, clock) == [True, False, False]


def test_refresh_zero_sends_the_state_every_pass() -> None:
    clock = Clock()
    assert sent_states(StateRefresh(0, clock), [sample(i) for i in range(3)], clock) == [True, True, True]


def test_only_the_first_payload_of_a_pass_carries_state_and_a_pass_without_it_passes_through() -> None:
    refresh = StateRefresh(120, Clock())
    empty = [Payload(host=HOST, state=None)]
    assert refresh.filter(empty) == empty
    assert refresh.filter([]) == []
