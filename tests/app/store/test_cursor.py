"""Keyset cursors: opaque, round-trip exactly, and refuse what this server never gave out."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from app.store.cursor import Cursor, CursorError, decode_cursor, encode_cursor

AT = dt.datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=dt.UTC)


def test_cursor_round_trips_time_to_the_microsecond_and_id() -> None:
    assert decode_cursor(encode_cursor(AT, 987654321)) == Cursor(AT, 987654321)


def test_cursor_of_a_non_utc_time_decodes_to_the_same_instant_in_utc() -> None:
    paris = AT.astimezone(dt.timezone(dt.timedelta(hours=1)))
    decoded = decode_cursor(encode_cursor(paris, 1))
    assert decoded.time == AT and decoded.time.utcoffset() == dt.timedelta(0)


def test_cursor_is_url_safe_without_padding() -> None:
    token = encode_cursor(AT, 2**62)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a cursor!",
        "%%%%",
        "x" * 500,
        _b64("2|2026-11-24T12:00:00+00:00|5"),  # another format version
        _b64("1|2026-11-24T12:00:00|5"),  # naive time
        _b64("1|yesterday|5"),
        _b64("1|2026-11-24T12:00:00+00:00|-1"),
        _b64("1|2026-11-24T12:00:00+00:00|99999999999999999999999"),
        _b64("1|2026-11-24T12:00:00+00:00"),
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
    ],
)
def test_cursor_not_given_out_by_this_server_is_refused_with_a_remedy(token: str) -> None:
    with pytest.raises(CursorError, match="omit cursor to start from the newest"):
        decode_cursor(token)
