"""GET /api/v1/events: the raw observations, newest first, keyset-paginated; `format=csv` for all.

JSON answers one page and `next_cursor` (app/store/cursor.py). CSV answers every event of the
filter in one streamed download, same columns as the JSON items (guest = guest name), read
page by page with a short connection each (app/store/events.iter_all_events), so a large
export holds no transaction open while the client reads. Text cells a spreadsheet would run as
a formula are neutralised (csv_cell, issue 14).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter

from app.api.models import (
    ActionFilter,
    Event,
    EventPage,
    GuestFilter,
    HostFilter,
    KindFilter,
    RangeDep,
    SourceFilter,
    time_position,
)
from app.deps import ConnDep, EngineDep, ViewerDep
from app.errors import error_responses
from app.store.events import EVENT_COLUMNS, EventRow, Filters, iter_all_events, list_events, resolve_filters
from app.store.series import range_totals

router = APIRouter(prefix="/api/v1", tags=["events"])

_CSV_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "description": "One page as JSON, or with `format=csv` every event of the filter as CSV.",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}
_EVENT_JSON = TypeAdapter(Event)


@router.get(
    "/events",
    operation_id="list_events",
    response_model=EventPage,
    responses={**_CSV_RESPONSE, **error_responses(401, 403, 422)},
    summary="Events in the range, newest first (time, then id, descending)",
)
def get_events(
    _viewer: ViewerDep,
    conn: ConnDep,
    engine: EngineDep,
    time_range: RangeDep,
    host: HostFilter = None,
    guest: GuestFilter = None,
    kind: KindFilter = None,
    action: ActionFilter = None,
    source: SourceFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Events per page (JSON only).")] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="The `next_cursor` of the previous page, unchanged."),
    ] = None,
    format: Annotated[
        Literal["json", "csv"], Query(description="`csv`: every event of the filter, not one page.")
    ] = "json",
) -> EventPage | StreamingResponse:
    after = time_position(cursor) if format == "json" else None
    filters = Filters(
        host=host,
        guest=guest,
        kind=kind.value if kind else None,
        action=action.value if action else None,
        source=source.value if source else None,
    )
    resolved = resolve_filters(conn, filters)
    if format == "csv":
        rows = iter_all_events(engine, resolved, since=time_range.since, until=time_range.until)
        return StreamingResponse(
            _csv_lines(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="splitwatch-events.csv"'},
        )
    page = list_events(
        conn, resolved, since=time_range.since, until=time_range.until, limit=limit, after=after
    )
    since, until = time_range.since, time_range.until
    traps = range_totals(conn, resolved, since=since, until=until, by=())
    records = range_totals(conn, resolved, since=since, until=until, by=(), measure="events")
    return EventPage.model_validate(
        {
            "items": page.items,
            "next_cursor": page.next_cursor,
            "traps_total": sum(traps.values()),
            "records_total": sum(records.values()),
        }
    )


# OWASP, "CSV Injection": a cell a spreadsheet would evaluate starts with one of these.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value as a CSV cell a spreadsheet shows as text (issue 14).

    COMM and guest names come from the hosts: `=cmd|' /C calc'!A0` as a guest name would run
    when the export is opened in Excel. OWASP's remedy: prefix such a text cell with a single
    quote. Numbers are written as numbers (a count of -1 cannot occur; ints are never quoted).
    """
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_lines(rows: Iterator[EventRow]) -> Iterator[str]:
    """Header, then one line per event; values as the JSON shows them (times ISO 8601 Z),
    text that a spreadsheet would take for a formula prefixed with `'` (csv_cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EVENT_COLUMNS)
    batch = 0
    for row in rows:
        item = _EVENT_JSON.dump_python(_EVENT_JSON.validate_python(row, from_attributes=True), mode="json")
        writer.writerow([csv_cell(item[c]) for c in EVENT_COLUMNS])
        batch += 1
        if batch == 500:  # a chunk per few hundred rows: fewer, larger writes to the socket
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            batch = 0
    yield buffer.getvalue()
