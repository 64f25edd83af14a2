"""app/store/events.py: filters resolved to ids, keyset pages, and the all-pages iterator."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from app.store.cursor import Cursor
from app.store.events import EVENT_COLUMNS, Filters, Resolved, iter_all_events, list_events, resolve_filters
from tests.app.conftest import Server, Tokens
from tests.app.fill import HOUR, SECOND, T0, Filler, ev

SINCE, UNTIL = T0 - HOUR, T0 + HOUR


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def test_event_columns_are_the_api_fields_in_order() -> None:
    assert EVENT_COLUMNS == (
        "id", "host", "boot_id", "source", "seq", "time", "received_at", "kind", "comm",
        "tid", "tgid", "address", "count", "action", "guest", "vcpu", "vmm",
    )  # fmt: skip


def test_names_resolve_to_ids_and_host_in_parentheses_to_no_guest(fill: Filler, engine: Engine) -> None:
    fill.send("h1", events=[ev(T0, guest="vm1")])
    with engine.connect() as conn:
        resolved = resolve_filters(conn, Filters(host="h1", guest="vm1", kind="split_lock"))
        assert resolved.host_id is not None and resolved.guest_id not in (None, 0) and not resolved.nothing
        assert resolve_filters(conn, Filters(guest="(host)")).guest_id == 0
        assert resolve_filters(conn, Filters(host="h1", guest="vm-unknown")).nothing


def test_page_after_a_cursor_starts_strictly_after_it_breaking_time_ties_by_id(
    fill: Filler, engine: Engine
) -> None:
    fill.send("h1", events=[ev(T0, count=n) for n in range(1, 6)])  # five events at one instant
    with engine.connect() as conn:
        first = list_events(conn, Resolved(), since=SINCE, until=UNTIL, limit=2)
        assert [e.count for e in first.items] == [5, 4] and first.next_cursor is not None
        last = first.items[-1]
        rest = list_events(
            conn, Resolved(), since=SINCE, until=UNTIL, limit=10, after=Cursor(last.time, last.id)
        )
    assert [e.count for e in rest.items] == [3, 2, 1] and rest.next_cursor is None


def test_a_page_that_ends_exactly_at_the_last_event_gives_a_cursor_to_an_empty_page(
    fill: Filler, engine: Engine
) -> None:
    fill.send("h1", events=[ev(T0 + n * SECOND) for n in range(4)])
    with engine.connect() as conn:
        assert list_events(conn, Resolved(), since=SINCE, until=UNTIL, limit=4).next_cursor is None
        assert list_events(conn, Resolved(), since=SINCE, until=UNTIL, limit=3).next_cursor is not None


def test_iterating_all_events_crosses_page_boundaries_without_loss(fill: Filler, engine: Engine) -> None:
    fill.send("h1", events=[ev(T0 + (n // 2) * SECOND, count=n) for n in range(25)])
    rows = list(iter_all_events(engine, Resolved(), since=SINCE, until=UNTIL, page_size=4))
    assert sorted(r.count for r in rows) == list(range(25))
    assert [(r.time, r.id) for r in rows] == sorted(((r.time, r.id) for r in rows), reverse=True)


def test_nothing_resolved_lists_nothing(engine: Engine) -> None:
    with engine.connect() as conn:
        page = list_events(conn, Resolved(nothing=True), since=SINCE, until=UNTIL, limit=10)
    assert (page.items, page.next_cursor) == ([], None)
