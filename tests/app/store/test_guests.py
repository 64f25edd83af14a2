"""app/store/guests.py: guest views, the host filter, and which half of memory a trap hit."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from app.store.guests import address_space, get_guest, list_guests
from tests.app.conftest import Server, Tokens
from tests.app.fill import HOUR, SECOND, T0, Filler, ev


@pytest.mark.parametrize(
    ("address", "space"),
    [
        ("0x401a2b", "guest-user"),
        ("0x7ffd12345678", "guest-user"),  # top of the 47-bit user half
        ("0xffffffff8104c2a1", "guest-kernel"),  # kernel text, 4-level paging
        ("0xff11000012345678", "guest-kernel"),  # direct map, 5-level paging
        ("0x8000000000000000", "guest-kernel"),
        ("0x7fffffffffffffff", "guest-user"),
        ("0xzz", "guest-user"),
    ],
)
def test_canonical_upper_half_is_guest_kernel_and_the_rest_guest_user(address: str, space: str) -> None:
    assert address_space(address) == space


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def test_host_filter_keeps_guests_last_seen_there_even_without_events_in_range(
    fill: Filler, engine: Engine
) -> None:
    fill.send("h1", events=[ev(T0 - 5 * HOUR, guest="parked")])  # last seen on h1, long ago
    fill.send("h2", events=[ev(T0, guest="moved")])
    fill.send("h1", events=[ev(T0, guest="moved")])
    fill.send("h2", events=[ev(T0 + SECOND, guest="elsewhere")])
    with engine.connect() as conn:
        on_h1 = list_guests(conn, since=T0, until=T0 + HOUR, host_name="h1").items
    assert sorted(g.name for g in on_h1) == ["moved", "parked"]
    moved = next(g for g in on_h1 if g.name == "moved")
    assert (moved.events, moved.hosts) == (2, ["h1", "h2"])


def test_top_addresses_rank_by_count_and_cap_at_ten(fill: Filler, engine: Engine) -> None:
    fill.send("h1", events=[ev(T0, guest="vm", address=f"0x{1000 + n:x}", count=n + 1) for n in range(12)])
    with engine.connect() as conn:
        detail = get_guest(conn, "vm", since=T0, until=T0 + HOUR)
    assert detail is not None
    assert [a.count for a in detail.top_addresses] == list(range(12, 2, -1))
