"""Keyset cursors for newest-first lists: an opaque token for the last row a page showed.

A cursor is url-safe base64 (no padding) of `1|<time as ISO 8601 UTC>|<id>`: the position
(time desc, id desc) of the last row of the page. The next page starts strictly after it, so
rows inserted between two fetches never shift a page (no offset), and none of the rows that
existed is repeated or skipped. The leading `1` versions the format. Pure: no database.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass

_VERSION = "1"
_MAX_LENGTH = 200  # a real cursor is ~60 characters; anything far longer is not ours


class CursorError(ValueError):
    """A cursor this server did not give out (or one from an incompatible version)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    time: dt.datetime
    id: int


def encode_cursor(time: dt.datetime, row_id: int) -> str:
    if time.tzinfo is None:
        raise ValueError("cursor times must be timezone-aware")
    text = f"{_VERSION}|{time.astimezone(dt.UTC).isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The position in `token`, or CursorError with a sentence saying what to do."""
    remedy = "pass the next_cursor of a previous answer unchanged, or omit cursor to start from the newest"
    if not token or len(token) > _MAX_LENGTH:
        raise CursorError(f"cursor {token[:40]!r} is not a cursor this server gave out: {remedy}")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        text = raw.decode("ascii")
    except (binascii.Error, ValueError):
        raise CursorError(f"cursor {token[:40]!r} is not valid base64 text: {remedy}") from None
    parts = text.split("|")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise CursorError(f"cursor {token[:40]!r} is not a cursor this server gave out: {remedy}")
    try:
        time = dt.datetime.fromisoformat(parts[1])
        row_id = int(parts[2])
    except ValueError:
        raise CursorError(f"cursor {token[:40]!r} holds no valid position: {remedy}") from None
    if time.tzinfo is None or not (0 <= row_id < 2**63):
        raise CursorError(f"cursor {token[:40]!r} holds no valid position: {remedy}")
    try:
        return Cursor(time.astimezone(dt.UTC), row_id)
    except OverflowError:  # an offset that moves it past year 1 or 9999 (issue 14)
        raise CursorError(f"cursor {token[:40]!r} holds no valid position: {remedy}") from None


# ----------------------------------------------------------------------------- name lists

_NAME_VERSION = "n1"
MAX_NAME_CURSOR_LENGTH = 1400  # base64 of a 255-character name in UTF-8, with room to spare


@dataclass(frozen=True, slots=True)
class NameCursor:
    """The last row of a page of a list ordered by name, or ranked by events (then id)."""

    name: str = ""
    events: int | None = None  # ranked lists: the last row's events and id
    id: int | None = None


def encode_name_cursor(position: NameCursor) -> str:
    events = "" if position.events is None else str(position.events)
    row_id = "" if position.id is None else str(position.id)
    text = f"{_NAME_VERSION}|{events}|{row_id}|{position.name}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_name_cursor(token: str) -> NameCursor:
    """The position in `token`, or CursorError with a sentence saying what to do."""
    remedy = (
        "pass the next_cursor of a previous answer unchanged, or omit cursor to start from the first page"
    )
    if not token or len(token) > MAX_NAME_CURSOR_LENGTH:
        raise CursorError(f"cursor {token[:40]!r} is not a cursor this server gave out: {remedy}")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise CursorError(f"cursor {token[:40]!r} is not valid base64 text: {remedy}") from None
    parts = text.split("|", 3)
    if len(parts) != 4 or parts[0] != _NAME_VERSION:
        raise CursorError(f"cursor {token[:40]!r} is not a cursor this server gave out: {remedy}")
    _, events, row_id, name = parts
    try:
        position = NameCursor(name, int(events) if events else None, int(row_id) if row_id else None)
    except ValueError:
        raise CursorError(f"cursor {token[:40]!r} holds no valid position: {remedy}") from None
    if (position.events is None) != (position.id is None) or "\x00" in name:
        raise CursorError(f"cursor {token[:40]!r} holds no valid position: {remedy}")
    if position.id is not None and not (0 <= position.id < 2**63 and 0 <= (position.events or 0) < 2**63):
        raise CursorError(f"cursor {token[:40]!r} holds no valid position: {remedy}")
    return position
