"""The lists ranked by events (/hosts and /guests with sort=events): a page of the keys with the
most events in a range, keyset-paged on (events desc, id). Pure: totals in, a page out."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import cast

from app.store.cursor import NameCursor


def busiest(
    totals: Mapping[tuple[object, ...], int],
    keep: Callable[[int], bool],
    after: NameCursor | None,
    limit: int,
) -> tuple[list[tuple[int, int]], bool]:
    """(id, events) of the page after `after`: the keys with events that `keep` keeps, most first
    (then by id, the order they were first stored in); and whether more follow the page."""
    ranked: Iterable[tuple[int, int]] = (
        (-count, cast(int, key))  # the keys are host or guest ids, integers as stored
        for (key,), count in totals.items()
        if count > 0 and keep(cast(int, key))
    )
    if after is not None and after.events is not None and after.id is not None:
        position = (-after.events, after.id)
        ranked = (r for r in ranked if r > position)
    # The page's first limit + 1 of every ranked key (~100,000 guests): the same as sorting them
    # all and slicing (heapq's contract), without sorting the ones past the page.
    page = heapq.nsmallest(limit + 1, ranked)
    return [(key, -neg) for neg, key in page[:limit]], len(page) > limit
