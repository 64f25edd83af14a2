"""MSR bit decoding (docs/agent.md "MSRs"): the three bits, little-endian u64, nothing else."""

from __future__ import annotations

import pytest

from agent.errors import ParseError
from agent.kernel import msr


def test_msr_indexes_are_the_ones_in_the_design_table() -> None:
    assert (msr.MSR_TEST_CTRL, msr.MSR_IA32_CORE_CAPS, msr.MSR_IA32_DEBUGCTL) == (0x33, 0xCF, 0x1D9)


def test_a_pread_of_8_bytes_is_a_little_endian_u64() -> None:
    assert msr.parse_msr_value(bytes([0, 0, 0, 0x20, 0, 0, 0, 0])) == 1 << 29
    assert msr.parse_msr_value(b"\xff" * 8) == 2**64 - 1


@pytest.mark.parametrize("data", [b"", b"\x00" * 4, b"\x00" * 9])
def test_anything_but_8_bytes_is_not_an_msr_value(data: bytes) -> None:
    with pytest.raises(ParseError, match="8 bytes"):
        msr.parse_msr_value(data)


BITS = [
    # (name, decoder, value, expected)
    ("TEST_CTRL bit 29 set: detection on", msr.sld_on, 1 << 29, True),
    ("TEST_CTRL bit 29 clear: detection off", msr.sld_on, 0, False),
    ("TEST_CTRL other bits do not count", msr.sld_on, (1 << 31) | (1 << 28) | (1 << 30), False),
    ("TEST_CTRL bit 29 among others", msr.sld_on, (1 << 29) | (1 << 31), True),
    ("CORE_CAPS bit 5 set: supported", msr.sld_supported, 1 << 5, True),
    ("CORE_CAPS bit 5 clear: not supported", msr.sld_supported, (1 << 4) | (1 << 6), False),
    ("DEBUGCTL bit 2 set: bus-lock detection on", msr.bld_on, 1 << 2, True),
    ("DEBUGCTL bit 2 clear, LBR bit 0 set: off", msr.bld_on, 1, False),
]


@pytest.mark.parametrize(("decoder", "value", "expected"), [b[1:] for b in BITS], ids=[b[0] for b in BITS])
def test_each_bit_means_what_the_design_table_says(decoder: object, value: int, expected: bool) -> None:
    assert callable(decoder)
    assert decoder(value) is expected
