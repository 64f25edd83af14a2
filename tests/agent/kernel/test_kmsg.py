"""parse_record: one /dev/kmsg record as the kernel writes it (Documentation/ABI/testing/dev-kmsg)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ParseError
from agent.kernel.kmsg import KmsgRecord, parse_record

PREFIX = "x86/split lock detection: "

RECORDS = [
    pytest.param(
        b"4,1842,688792264,-;x86/split lock detection: #AC: osu!.exe/11382 took a split_lock trap"
        b" at address: 0x7aa6806d\n",
        KmsgRecord(
            4,
            0,
            4,
            1842,
            688792264,
            "-",
            PREFIX + "#AC: osu!.exe/11382 took a split_lock trap at address: 0x7aa6806d",
        ),
        id="6.x-took-split-lock",
    ),
    pytest.param(
        b"6,2,0,-;x86/split lock detection: #AC: crashing the kernel on kernel split_locks and warning"
        b" on user-space split_locks\n",
        KmsgRecord(
            6,
            0,
            6,
            2,
            0,
            "-",
            PREFIX + "#AC: crashing the kernel on kernel split_locks and warning on user-space split_locks",
        ),
        id="5.13+-boot-mode-line",
    ),
    pytest.param(
        b"4,339,5140900,-,caller=T1;split_lock_warn: 1 callbacks suppressed\n",
        KmsgRecord(4, 0, 4, 339, 5140900, "-", "split_lock_warn: 1 callbacks suppressed"),
        id="caller-id-field-is-ignored",
    ),
    pytest.param(
        b"6,800,12000000,-;usb 1-1: new high-speed USB device number 2 using xhci_hcd\n"
        b" SUBSYSTEM=usb\n DEVICE=c189:1\n",
        KmsgRecord(
            6,
            0,
            6,
            800,
            12000000,
            "-",
            "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
            ("SUBSYSTEM=usb", "DEVICE=c189:1"),
        ),
        id="continuation-lines",
    ),
    pytest.param(
        b"12,901,13000000,-;x86/split lock detection: #AC: evil/1 took a split_lock trap at address: 0x1\n",
        KmsgRecord(
            12,
            1,
            4,
            901,
            13000000,
            "-",
            PREFIX + "#AC: evil/1 took a split_lock trap at address: 0x1",
        ),
        id="facility-1-written-by-a-process",
    ),
    pytest.param(
        b"4,5,6,c;partial",
        KmsgRecord(4, 0, 4, 5, 6, "c", "partial"),
        id="pre-4.9-continuation-flag-no-newline",
    ),
    pytest.param(
        b"4,7,8,-;#AC: a\\x5cb\\x09c/12 took a split_lock trap at address: 0x1\n",
        KmsgRecord(4, 0, 4, 7, 8, "-", "#AC: a\\b\tc/12 took a split_lock trap at address: 0x1"),
        id="escaped-bytes-are-unescaped",
    ),
    pytest.param(
        b"4,7,8,-;comm \\xff\\xfe\\x00end\n",
        KmsgRecord(4, 0, 4, 7, 8, "-", "comm \ufffd\ufffdend"),
        id="escaped-invalid-utf8-and-nul",
    ),
    pytest.param(
        "4,9,10,-;semicolon; inside text\n",
        KmsgRecord(4, 0, 4, 9, 10, "-", "semicolon; inside text"),
        id="str-input-and-semicolon-in-text",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), RECORDS)
def test_record_parses_into_its_fields(raw: bytes | str, expected: KmsgRecord) -> None:
    assert parse_record(raw) == expected


MALFORMED = [
    pytest.param(b"", id="empty"),
    pytest.param(b"hello world\n", id="no-header"),
    pytest.param(b"4,1,2;no flag\n", id="three-fields"),
    pytest.param(b"x,1,2,-;text\n", id="prio-not-a-number"),
    pytest.param(b"4,-1,2,-;text\n", id="negative-seq"),
    pytest.param(b"4,1,99999999999999999999,-;text\n", id="usec-over-u64"),
    pytest.param(b"4,9223372036854775808,1,-;text\n", id="seq-over-signed-64-bit"),
    pytest.param(b"4,1,2,-;text\nnot a continuation\n", id="second-line-without-space"),
    pytest.param(b"4,1,2,-;te\0xt\n", id="raw-nul-byte"),
    pytest.param(b"4,1,2,-;" + b"A" * 9000 + b"\n", id="longer-than-a-kernel-record"),
    pytest.param("4,1,2,-;\ud800", id="lone-surrogate-str"),
    pytest.param("４,1,2,-;fullwidth digit", id="non-ascii-digit"),
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_record_raises_parse_error(raw: bytes | str) -> None:
    with pytest.raises(ParseError):
        parse_record(raw)


def test_facility_0_is_the_kernel_and_other_facilities_are_not() -> None:
    assert parse_record(b"4,1,2,-;x\n").is_kernel
    assert not parse_record(b"14,1,2,-;x\n").is_kernel


@given(st.binary(max_size=300))
def test_parse_record_raises_only_parse_error_on_any_bytes(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_record(raw)


@given(st.text(max_size=300))
def test_parse_record_raises_only_parse_error_on_any_text(raw: str) -> None:
    with contextlib.suppress(ParseError):
        parse_record(raw)


@given(
    st.integers(0, 2047),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**64 - 1),
    st.text(max_size=200).filter(lambda t: "\n" not in t and "\0" not in t),
)
def test_well_formed_header_always_parses(prio: int, seq: int, usec: int, text: str) -> None:
    record = parse_record(f"{prio},{seq},{usec},-;{text}\n".encode(errors="replace"))
    assert (record.facility, record.level, record.seq, record.usec) == (prio >> 3, prio & 7, seq, usec)
