"""parse_message: every split-lock and bus-lock message of kernels 5.7 to 6.19 (docs/kernel.md)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ParseError
from agent.kernel.splitlock import BootMode, Suppressed, Trap, parse_message
from agent.payload import Kind, Mode

P = "x86/split lock detection: "
SL, BL = Kind.SPLIT_LOCK, Kind.BUS_LOCK

TRAPS = [
    # Verbatim from a 6.x dmesg (github.com/NelloKudo/osu-winello issue 222).
    pytest.param(
        P + "#AC: osu!.exe/11382 took a split_lock trap at address: 0x7aa6806d",
        Trap(SL, "took", "osu!.exe", 11382, "0x7aa6806d"),
        id="took-user-task",
    ),
    # Verbatim from a 6.2 syslog (github.com/dosemu2/dosemu2 issue 1968).
    pytest.param(
        P + "#AC: dosemu.bin/3483 took a split_lock trap at address: 0x1795",
        Trap(SL, "took", "dosemu.bin", 3483, "0x1795"),
        id="took-low-address",
    ),
    pytest.param(
        P + "#AC: CPU 0/KVM/5677 took a split_lock trap at address: 0xffffffff8104b2a3",
        Trap(SL, "took", "CPU 0/KVM", 5677, "0xffffffff8104b2a3"),
        id="took-qemu-vcpu-comm-with-slash-and-space",
    ),
    pytest.param(
        P + "#AC: CJobMgr::m_Work/4242 took a split_lock trap at address: 0x7f3a1c2d",
        Trap(SL, "took", "CJobMgr::m_Work", 4242, "0x7f3a1c2d"),
        id="took-comm-with-colons",
    ),
    pytest.param(
        P + "#AC: a/1 took a b/77 took a split_lock trap at address: 0x10",
        Trap(SL, "took", "a/1 took a b", 77, "0x10"),
        id="comm-containing-the-verb-splits-on-the-last-slash",
    ),
    pytest.param(
        P + "#AC: CPU 1/KVM/9001 fatal split_lock trap at address: 0xffffffff81a0c4d2",
        Trap(SL, "fatal", "CPU 1/KVM", 9001, "0xffffffff81a0c4d2"),
        id="fatal-guest",
    ),
    pytest.param(
        P + "#AC: qemu-system-x86/9002 bogus split_lock trap at address: 0x4011b6",
        Trap(SL, "bogus", "qemu-system-x86", 9002, "0x4011b6"),
        id="bogus-guest",
    ),
    # Verbatim from a 5.15 dmesg (github.com/Trepan-Debuggers/remake issue 156).
    pytest.param(
        P + "#DB: remake/737636 took a bus_lock trap at address: 0x5555555645d6",
        Trap(BL, "took", "remake", 737636, "0x5555555645d6"),
        id="bus-lock",
    ),
    pytest.param(
        P + "#DB: fc_vcpu 0/31337 took a bus_lock trap at address: 0x401136",
        Trap(BL, "took", "fc_vcpu 0", 31337, "0x401136"),
        id="bus-lock-firecracker-vcpu",
    ),
    pytest.param(
        "traps: a.out[4242] trap alignment check ip:401136 sp:7ffd8c5e3f10 error:0 in a.out[401000+1000]",
        Trap(SL, "alignment_check", "a.out", 4242, "0x401136"),
        id="alignment-check-fatal-user-task",
    ),
    pytest.param(
        "traps: odd[x] name[77] trap alignment check ip:7f00 sp:7ffd error:0"
        " likely on CPU 3 (core 3, socket 0)",
        Trap(SL, "alignment_check", "odd[x] name", 77, "0x7f00"),
        id="alignment-check-comm-with-brackets",
    ),
    pytest.param(
        P + "#AC: x/1 took a split_lock trap at address: 0x00000000DEADBEEF",
        Trap(SL, "took", "x", 1, "0xdeadbeef"),
        id="address-normalised-to-lowercase-without-padding",
    ),
    pytest.param(
        P + "#AC: /12 took a split_lock trap at address: 0x1",
        Trap(SL, "took", "", 12, "0x1"),
        id="empty-comm",
    ),
]

SUPPRESSED = [
    # Verbatim from a 6.x dmesg (osu-winello issue 222).
    pytest.param(
        "split_lock_warn: 1 callbacks suppressed",
        Suppressed(SL, "split_lock_warn", 1),
        id="split_lock_warn-site",
    ),
    pytest.param(
        "handle_user_split_lock: 38 callbacks suppressed",
        Suppressed(SL, "handle_user_split_lock", 38),
        id="5.7-handle_user_split_lock-site",
    ),
    pytest.param(
        "handle_bus_lock: 120 callbacks suppressed", Suppressed(BL, "handle_bus_lock", 120), id="bus-lock"
    ),
]

BOOT = [
    pytest.param(P + "disabled", BootMode(Mode.OFF, None, False, None, P + "disabled"), id="off"),
    pytest.param(
        P + "warning about user-space split_locks",
        BootMode(Mode.WARN, None, True, None, P + "warning about user-space split_locks"),
        id="5.7-warn",
    ),
    pytest.param(
        P + "sending SIGBUS on user-space split_locks",
        BootMode(Mode.FATAL, None, True, None, P + "sending SIGBUS on user-space split_locks"),
        id="5.7-fatal",
    ),
    pytest.param(
        P + "MSR access failed: Disabled",
        BootMode(Mode.OFF, None, False, None, P + "MSR access failed: Disabled"),
        id="5.7-msr-access-failed",
    ),
    pytest.param(
        P + "#AC: crashing the kernel on kernel split_locks and warning on user-space split_locks",
        BootMode(
            Mode.WARN,
            None,
            True,
            None,
            P + "#AC: crashing the kernel on kernel split_locks and warning on user-space split_locks",
        ),
        id="5.13+-warn",
    ),
    pytest.param(
        P + "#AC: crashing the kernel on kernel split_locks and sending SIGBUS on user-space split_locks",
        BootMode(
            Mode.FATAL,
            None,
            True,
            None,
            P + "#AC: crashing the kernel on kernel split_locks and sending SIGBUS on user-space split_locks",
        ),
        id="5.13+-fatal",
    ),
    pytest.param(
        P + "#DB: warning on user-space bus_locks",
        BootMode(Mode.WARN, None, None, True, P + "#DB: warning on user-space bus_locks"),
        id="5.13+-bus-lock-warn",
    ),
    pytest.param(
        P + "#DB: sending SIGBUS on user-space bus_locks",
        BootMode(Mode.FATAL, None, None, True, P + "#DB: sending SIGBUS on user-space bus_locks"),
        id="5.13+-bus-lock-fatal",
    ),
    pytest.param(
        P + "#DB: setting system wide bus lock rate limit to 250/sec",
        BootMode(
            Mode.RATELIMIT, 250, False, True, P + "#DB: setting system wide bus lock rate limit to 250/sec"
        ),
        id="5.13+-ratelimit",
    ),
]


@pytest.mark.parametrize(("text", "expected"), TRAPS + SUPPRESSED + BOOT)
def test_kernel_message_parses_into_its_fact(text: str, expected: object) -> None:
    assert parse_message(text) == expected


NOT_OURS = [
    pytest.param("Linux version 6.8.0-49-generic (buildd@lcy02) #1 SMP", id="boot-banner"),
    pytest.param("x86/split lock detection: something new in 7.0", id="unknown-prefixed-text"),
    pytest.param("net_ratelimit: 3 callbacks suppressed", id="another-sites-rate-limit"),
    pytest.param("traps: a.out[12] general protection fault ip:401136 sp:7ffd error:0", id="gp-fault"),
    pytest.param("", id="empty"),
    pytest.param(P + "#AC: " + "x" * 2000 + "/1 took a split_lock trap at address: 0x1", id="very-long"),
]


@pytest.mark.parametrize("text", NOT_OURS)
def test_text_that_is_not_a_split_lock_message_is_none(text: str) -> None:
    assert parse_message(text) is None


BROKEN = [
    pytest.param(P + "#AC: comm/abc took a split_lock trap at address: 0x1", id="tid-not-a-number"),
    pytest.param(P + "#AC: comm/-5 took a split_lock trap at address: 0x1", id="tid-negative"),
    pytest.param(P + "#AC: comm/99999999 took a split_lock trap at address: 0x1", id="tid-over-pid-max"),
    pytest.param(P + "#AC: comm/١٢ took a split_lock trap at address: 0x1", id="tid-arabic-digits"),
    pytest.param(P + "#AC: comm/12 took a split_lock trap at address: 0xZZZ", id="address-not-hex"),
    pytest.param(P + "#AC: comm/12 took a split_lock trap at address: ", id="address-missing"),
    pytest.param(
        P + "#AC: comm/12 took a split_lock trap at address: 0x11112222333344445", id="address-over-64-bit"
    ),
    pytest.param(P + "#AC: " + "c" * 65 + "/1 took a split_lock trap at address: 0x1", id="comm-too-long"),
    pytest.param(P + "#AC: a\0b/1 took a split_lock trap at address: 0x1", id="comm-with-nul"),
    pytest.param(P + "#AC: no-slash took a split_lock trap at address: 0x1", id="no-comm-tid-slash"),
    pytest.param(P + "#DB: comm/12 took a split_lock trap at address: 0x1", id="db-with-split-lock"),
    pytest.param(P + "#DB: comm/12 fatal bus_lock trap at address: 0x1", id="fatal-bus-lock"),
    pytest.param("traps: comm[zz] trap alignment check ip:1 sp:2 error:0", id="alignment-tid-not-a-number"),
    pytest.param("traps: comm[12] trap alignment check ip:xyz sp:2 error:0", id="alignment-ip-not-hex"),
    pytest.param("split_lock_warn: many callbacks suppressed", id="suppressed-count-not-a-number"),
    pytest.param(P + "#DB: setting system wide bus lock rate limit to fast/sec", id="ratelimit-not-a-number"),
]


@pytest.mark.parametrize("text", BROKEN)
def test_split_lock_shaped_text_with_broken_fields_raises_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_message(text)


def test_trailing_newline_is_ignored() -> None:
    assert parse_message("split_lock_warn: 2 callbacks suppressed\n") == Suppressed(SL, "split_lock_warn", 2)


@given(st.text(max_size=400))
def test_parse_message_raises_only_parse_error_on_any_text(text: str) -> None:
    with contextlib.suppress(ParseError):
        parse_message(text)


@given(
    st.sampled_from([P + "#AC: ", P + "#DB: ", "traps: ", ""]),
    st.text(max_size=40),
    st.sampled_from(["/", "[", "/12 ", "]"]),
    st.text(max_size=40),
    st.sampled_from(
        [
            " took a split_lock trap at address: ",
            " fatal split_lock trap at address: ",
            " took a bus_lock trap at address: ",
            "] trap alignment check ip:",
            " callbacks suppressed",
        ]
    ),
    st.text(max_size=30),
)
def test_near_miss_messages_raise_only_parse_error(a: str, b: str, c: str, d: str, e: str, f: str) -> None:
    with contextlib.suppress(ParseError):
        parse_message(a + b + c + d + e + f)


@given(
    st.text(st.characters(blacklist_characters="\n\0"), max_size=15),
    st.integers(0, 4 * 1024 * 1024),
    st.integers(0, 2**64 - 1),
)
def test_any_comm_tid_and_address_round_trip(comm: str, tid: int, address: int) -> None:
    trap = parse_message(f"{P}#AC: {comm}/{tid} took a split_lock trap at address: {address:#x}")
    assert trap == Trap(SL, "took", comm, tid, f"{address:#x}")
