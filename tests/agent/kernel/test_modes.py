"""Modes and actions: the tables of docs/agent.md "Modes and actions", row by row, by kernel era."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ParseError
from agent.kernel.modes import (
    UNKNOWN_KERNEL,
    derive_action,
    parse_cmdline_mode,
    parse_kernel_release,
)
from agent.payload import Action, Kind, Mode

UBUNTU = "BOOT_IMAGE=/vmlinuz-6.8.0-49-generic root=/dev/mapper/vg0-root ro quiet"

CMDLINE_CASES = [
    # (name, cmdline, kernel, expected)
    ("absent gives the default warn", UBUNTU, (6, 8), (Mode.WARN, None)),
    ("empty cmdline gives warn", "", (6, 8), (Mode.WARN, None)),
    ("off", f"{UBUNTU} split_lock_detect=off", (6, 8), (Mode.OFF, None)),
    ("warn", f"{UBUNTU} split_lock_detect=warn", (6, 8), (Mode.WARN, None)),
    ("fatal", f"{UBUNTU} split_lock_detect=fatal intel_iommu=on", (6, 8), (Mode.FATAL, None)),
    ("ratelimit:10", f"{UBUNTU} split_lock_detect=ratelimit:10", (6, 8), (Mode.RATELIMIT, 10)),
    ("ratelimit:1 is the minimum", "split_lock_detect=ratelimit:1", (5, 14), (Mode.RATELIMIT, 1)),
    ("ratelimit:1000 is the maximum", "split_lock_detect=ratelimit:1000", (6, 8), (Mode.RATELIMIT, 1000)),
    ("ratelimit:0 is out of range: warn", "split_lock_detect=ratelimit:0", (6, 8), (Mode.WARN, None)),
    ("ratelimit:1001 is out of range: warn", "split_lock_detect=ratelimit:1001", (6, 8), (Mode.WARN, None)),
    ("ratelimit:-5 is out of range: warn", "split_lock_detect=ratelimit:-5", (6, 8), (Mode.WARN, None)),
    ("ratelimit:abc is invalid: warn", "split_lock_detect=ratelimit:abc", (6, 8), (Mode.WARN, None)),
    (
        "sscanf takes leading digits: ratelimit:5x is 5",
        "split_lock_detect=ratelimit:5x",
        (6, 8),
        (Mode.RATELIMIT, 5),
    ),
    (
        "bare ratelimit: is the kernel's never-limiting quirk",
        "split_lock_detect=ratelimit:",
        (6, 8),
        (Mode.RATELIMIT, None),
    ),
    (
        "ratelimit on 5.12 does not exist yet: warn",
        "split_lock_detect=ratelimit:10",
        (5, 12),
        (Mode.WARN, None),
    ),
    (
        "ratelimit on 5.13 does not exist yet (5.14+): warn",
        "split_lock_detect=ratelimit:10",
        (5, 13),
        (Mode.WARN, None),
    ),
    ("ratelimit on 5.14 exists", "split_lock_detect=ratelimit:10", (5, 14), (Mode.RATELIMIT, 10)),
    ("invalid value falls back to warn", "split_lock_detect=yes", (6, 8), (Mode.WARN, None)),
    ("a prefix of a valid value is invalid", "split_lock_detect=of", (6, 8), (Mode.WARN, None)),
    ("a valid value with a tail is invalid", "split_lock_detect=offx", (6, 8), (Mode.WARN, None)),
    ("values are case sensitive", "split_lock_detect=FATAL", (6, 8), (Mode.WARN, None)),
    ("empty value is invalid", "split_lock_detect=", (6, 8), (Mode.WARN, None)),
    ("the last occurrence wins", "split_lock_detect=fatal split_lock_detect=off", (6, 8), (Mode.OFF, None)),
    (
        "the last occurrence wins even if invalid",
        "split_lock_detect=fatal split_lock_detect=x",
        (6, 8),
        (Mode.WARN, None),
    ),
    ("a longer option name is not ours", "xsplit_lock_detect=fatal", (6, 8), (Mode.WARN, None)),
    ("the bare word without = is not a value", "split_lock_detect fatal", (6, 8), (Mode.WARN, None)),
    (
        "tabs and the trailing newline separate words",
        "ro\tsplit_lock_detect=fatal\n",
        (6, 8),
        (Mode.FATAL, None),
    ),
    (
        "unknown kernel assumes ratelimit exists",
        "split_lock_detect=ratelimit:7",
        UNKNOWN_KERNEL,
        (Mode.RATELIMIT, 7),
    ),
]


@pytest.mark.parametrize(
    ("cmdline", "kernel", "expected"),
    [c[1:] for c in CMDLINE_CASES],
    ids=[c[0] for c in CMDLINE_CASES],
)
def test_cmdline_mode_is_read_as_the_kernel_reads_it(
    cmdline: str, kernel: tuple[int, int], expected: tuple[Mode, int | None]
) -> None:
    assert parse_cmdline_mode(cmdline, kernel=kernel) == expected


def test_cmdline_mode_without_a_kernel_assumes_a_current_one() -> None:
    assert parse_cmdline_mode("split_lock_detect=ratelimit:20") == (Mode.RATELIMIT, 20)


def test_ratelimit_beyond_the_kernels_19_byte_buffer_is_cut_as_the_kernel_cuts_it() -> None:
    # arg[20]: "ratelimit:" + 9 zeros fills the buffer; the 1 after them is never seen, so 0: warn.
    assert parse_cmdline_mode("split_lock_detect=ratelimit:0000000001") == (Mode.WARN, None)


RELEASES = [
    ("6.8.0-49-generic", (6, 8)),
    ("5.15.0-1053-azure", (5, 15)),
    ("5.4.0", (5, 4)),
    ("6.1.112+", (6, 1)),
    ("4.18.0-553.el8_10.x86_64", (4, 18)),
    ("6.18.44-fc-v782\n", (6, 18)),
    ("5.19", (5, 19)),
]


@pytest.mark.parametrize(("release", "expected"), RELEASES, ids=[r for r, _ in RELEASES])
def test_kernel_release_gives_major_and_minor(release: str, expected: tuple[int, int]) -> None:
    assert parse_kernel_release(release) == expected


@pytest.mark.parametrize("release", ["", "linux", "6", "v6.8"])
def test_kernel_release_without_major_minor_is_a_parse_error_naming_osrelease(release: str) -> None:
    with pytest.raises(ParseError, match="osrelease"):
        parse_kernel_release(release)


SL, BL = Kind.SPLIT_LOCK, Kind.BUS_LOCK
W, F, OFF, R = Mode.WARN, Mode.FATAL, Mode.OFF, Mode.RATELIMIT

ACTION_CASES = [
    # (name, kind, verb, mode, mitigate, kernel, guest, action)
    # warn mode: warn or throttle by era and split_lock_mitigate
    ("warn mode mitigate 0 on 6.8 warns", SL, "took", W, 0, (6, 8), False, Action.WARN),
    ("warn mode mitigate 1 on 6.8 throttles", SL, "took", W, 1, (6, 8), False, Action.THROTTLE),
    ("warn mode on 5.18 warns whatever mitigate says", SL, "took", W, 1, (5, 18), False, Action.WARN),
    ("warn mode mitigate 1 on 5.19 throttles", SL, "took", W, 1, (5, 19), False, Action.THROTTLE),
    ("warn mode without the sysctl on 5.15 warns", SL, "took", W, None, (5, 15), False, Action.WARN),
    (
        "warn mode without the sysctl on 5.19 throttles (misery before the sysctl)",
        SL,
        "took",
        W,
        None,
        (5, 19),
        False,
        Action.THROTTLE,
    ),
    ("warn mode on 5.7 warns", SL, "took", W, None, (5, 7), False, Action.WARN),
    ("warn mode vCPU took on 6.8 throttles like a task", SL, "took", W, 1, (6, 8), True, Action.THROTTLE),
    ("warn mode vCPU took with mitigate 0 warns", SL, "took", W, 0, (6, 8), True, Action.WARN),
    ("warn mode on an unknown kernel is unknown", SL, "took", W, 1, UNKNOWN_KERNEL, False, Action.UNKNOWN),
    ("warn mode with mitigate 2 is not a kernel: unknown", SL, "took", W, 2, (6, 8), False, Action.UNKNOWN),
    # fatal mode: sigbus
    (
        "fatal mode task gets sigbus via alignment check",
        SL,
        "alignment_check",
        F,
        1,
        (6, 8),
        False,
        Action.SIGBUS,
    ),
    ("fatal mode task on 5.12 gets sigbus", SL, "alignment_check", F, None, (5, 12), False, Action.SIGBUS),
    ("fatal mode KVM guest gets sigbus", SL, "fatal", F, 1, (6, 8), True, Action.SIGBUS),
    ("fatal line of an unresolved thread is still sigbus", SL, "fatal", F, 1, (6, 8), False, Action.SIGBUS),
    (
        "alignment check of a task that set EFLAGS.AC in warn mode is sigbus",
        SL,
        "alignment_check",
        W,
        1,
        (6, 8),
        False,
        Action.SIGBUS,
    ),
    # bogus: a guest #AC the host cannot handle in its mode
    ("bogus guest trap in off mode is sigbus", SL, "bogus", OFF, 1, (6, 8), True, Action.SIGBUS),
    ("bogus guest trap in ratelimit mode is sigbus", SL, "bogus", R, 1, (6, 8), True, Action.SIGBUS),
    # bus locks
    ("bus lock in ratelimit mode is ratelimited", BL, "took", R, 1, (6, 8), False, Action.RATELIMIT),
    (
        "bus lock in ratelimit mode on 5.14 is ratelimited",
        BL,
        "took",
        R,
        None,
        (5, 14),
        False,
        Action.RATELIMIT,
    ),
    ("bus lock in warn mode warns (no misery for bus locks)", BL, "took", W, 1, (6, 8), False, Action.WARN),
    (
        "bus lock took in fatal mode contradicts the kernel: unknown",
        BL,
        "took",
        F,
        1,
        (6, 8),
        False,
        Action.UNKNOWN,
    ),
    ("bus lock in off mode cannot trap: unknown", BL, "took", OFF, 1, (6, 8), False, Action.UNKNOWN),
    # tracefs probes
    (
        "split_lock_warn probe with mitigate 1 on 6.8 throttles",
        SL,
        "split_lock_warn",
        W,
        1,
        (6, 8),
        False,
        Action.THROTTLE,
    ),
    ("split_lock_warn probe with mitigate 0 warns", SL, "split_lock_warn", W, 0, (6, 8), False, Action.WARN),
    (
        "guest probe in warn mode throttles on 6.8",
        SL,
        "handle_guest_split_lock",
        W,
        1,
        (6, 8),
        True,
        Action.THROTTLE,
    ),
    (
        "guest probe in warn mode on 5.18 warns",
        SL,
        "handle_guest_split_lock",
        W,
        1,
        (5, 18),
        True,
        Action.WARN,
    ),
    ("guest probe in fatal mode is sigbus", SL, "handle_guest_split_lock", F, 1, (6, 8), True, Action.SIGBUS),
    (
        "guest probe in off mode is sigbus (bogus)",
        SL,
        "handle_guest_split_lock",
        OFF,
        1,
        (6, 8),
        True,
        Action.SIGBUS,
    ),
    (
        "bus lock probe in ratelimit mode is ratelimited",
        BL,
        "handle_bus_lock",
        R,
        1,
        (6, 8),
        False,
        Action.RATELIMIT,
    ),
    ("bus lock probe in warn mode warns", BL, "handle_bus_lock", W, 1, (6, 8), False, Action.WARN),
    (
        "bus lock probe in fatal mode is sigbus (no line is printed)",
        BL,
        "handle_bus_lock",
        F,
        1,
        (6, 8),
        False,
        Action.SIGBUS,
    ),
    ("reflected guest #AC is reflect", SL, "reflect", W, 1, (6, 8), True, Action.REFLECT),
    ("kernel split lock is oops", SL, "oops", W, 1, (6, 8), False, Action.OOPS),
    # contradictions and unknown verbs
    (
        "split lock took in fatal mode contradicts the kernel: unknown",
        SL,
        "took",
        F,
        1,
        (6, 8),
        False,
        Action.UNKNOWN,
    ),
    (
        "split lock took in ratelimit mode (#AC off) is unknown",
        SL,
        "took",
        R,
        1,
        (6, 8),
        False,
        Action.UNKNOWN,
    ),
    ("split lock took in off mode is unknown", SL, "took", OFF, 1, (6, 8), False, Action.UNKNOWN),
    ("an unknown verb is unknown", SL, "sneezed", W, 1, (6, 8), False, Action.UNKNOWN),
    ("a bus lock cannot be fatal: unknown", BL, "fatal", F, 1, (6, 8), True, Action.UNKNOWN),
]


@pytest.mark.parametrize(
    ("kind", "verb", "mode", "mitigate", "kernel", "guest", "action"),
    [c[1:] for c in ACTION_CASES],
    ids=[c[0] for c in ACTION_CASES],
)
def test_action_follows_the_design_table(
    kind: Kind,
    verb: str,
    mode: Mode,
    mitigate: int | None,
    kernel: tuple[int, int],
    guest: bool,
    action: Action,
) -> None:
    assert derive_action(kind, verb, mode=mode, mitigate=mitigate, kernel=kernel, guest=guest) is action


def test_every_action_of_the_design_table_has_a_row() -> None:
    assert {c[-1] for c in ACTION_CASES} == set(Action)


def test_oops_is_never_derived_from_a_user_trap_line() -> None:
    for verb in ("took", "fatal", "bogus", "alignment_check"):
        for mode in Mode:
            for kind in Kind:
                action = derive_action(kind, verb, mode=mode, mitigate=1, kernel=(6, 8), guest=False)
                assert action is not Action.OOPS


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.sampled_from([(5, 7), (5, 12), (5, 13), (6, 8), UNKNOWN_KERNEL]))
def test_any_cmdline_gives_a_mode_and_a_rate_only_in_ratelimit_mode(
    cmdline: str, kernel: tuple[int, int]
) -> None:
    mode, ratelimit = parse_cmdline_mode(cmdline, kernel=kernel)
    assert mode in Mode
    if ratelimit is not None:
        assert mode is Mode.RATELIMIT and 1 <= ratelimit <= 1000


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_release_text_parses_or_raises_parse_error(release: str) -> None:
    try:
        major, minor = parse_kernel_release(release)
    except ParseError:
        return
    assert major >= 0 and minor >= 0
