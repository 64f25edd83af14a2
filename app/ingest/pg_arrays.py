"""Array parameters of the PostgreSQL write statements, dumped with a fixed type (#13).

The write statements take one Python list per column (`unnest(%(x)b::type[])`, write.py). For
a plain list, psycopg finds the element type anew at every execution: it scans the list for
its types (and, for ints, its max and min, to pick int2, int4 or int8), looks the element's
dumper up and makes an array dumper for it; then it dumps each element through that. With the
C implementation, that lookup and the per-element loop in psycopg's Python array dumper were
most of psycopg's own Python work in the steady state (docs/benchmarks.md, "Seventh pass:
psycopg's per-statement cost"). A list subclass per element type, with a dumper that has its
array type fixed, skips the lookup (psycopg's array dumper does not `upgrade` one whose oid is
set), and a dump written for one dimension skips the rest.

Each statement casts its arrays to the column's type as before (`::INTEGER[]`, `::VARCHAR(64)[]`),
so the values stored are the same: ints go as int8 and are cast down, as the int2 or int4
psycopg chose were cast up; strings go as text, as before; None is an array NULL, as before.
The statements' parameter types no longer vary with the values (an array of small ints was
int2[], a list of only None went as text), and psycopg keys its prepared statements by query and
types: one per statement, whatever the values.
"""

import functools
import struct
from collections.abc import Callable, Iterable
from itertools import chain, repeat
from typing import Any

import psycopg
from psycopg import postgres
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import JSON, Boolean, Column, DateTime, Integer, String

_NULL = b"\xff\xff\xff\xff"
_len = struct.Struct("!i").pack
_head = struct.Struct("!iiIii").pack  # ndim, has null, element oid; the dimension's length, lower bound
_empty = struct.Struct("!iiI").pack


class PgArray(list[Any]):
    """A list sent as a PostgreSQL array of a fixed element type (its subclass's)."""


class Int8Array(PgArray):
    pass


class TextArray(PgArray):
    pass


class TimestamptzArray(PgArray):
    pass


class BoolArray(PgArray):
    pass


class _FixedListDumper(ListBinaryDumper):
    """psycopg's binary list dumper with its type set (no per-execution lookup), for one-
    dimensional lists; each element through the element type's dumper (C with psycopg-binary)."""

    def dump(self, obj: list[Any]) -> bytes:
        if not obj:
            return _empty(0, 0, self.element_oid)
        dump: Callable[[Any], bytes] = self.sub_dumper.dump  # type: ignore[union-attr,assignment]  # set from element_oid
        data: list[Any] = [b""]
        append = data.append
        hasnull = 0
        for item in obj:
            if item is None:
                hasnull = 1
                append(_NULL)
            else:
                b = dump(item)
                append(_len(len(b)))
                append(b)
        data[0] = _head(1, hasnull, self.element_oid, len(obj), 1)
        return b"".join(data)


@functools.lru_cache(maxsize=256)
def _int8_elements(n: int) -> Callable[..., bytes]:
    return struct.Struct("!" + "iq" * n).pack


class _Int8ListDumper(_FixedListDumper):
    """int8 elements packed in one struct call when there is no NULL (half the time of a dump
    call per element: ints are most of the write statements' arrays)."""

    def dump(self, obj: list[Any]) -> bytes:
        if not obj or None in obj:
            return super().dump(obj)
        n = len(obj)
        body = _int8_elements(n)(*chain.from_iterable(zip(repeat(8), obj)))
        return _head(1, 0, self.element_oid, n, 1) + body


def _dumper(element: str, base: type[_FixedListDumper] = _FixedListDumper) -> type[_FixedListDumper]:
    info = postgres.types[element]
    attrs = {"oid": info.array_oid, "element_oid": info.oid}
    return type(f"{element.capitalize()}ArrayDumper", (base,), attrs)


# Registered globally, before the engine's first connection copies psycopg's adapters; only
# these classes are affected.
psycopg.adapters.register_dumper(Int8Array, _dumper("int8", _Int8ListDumper))
psycopg.adapters.register_dumper(TextArray, _dumper("text"))
psycopg.adapters.register_dumper(TimestamptzArray, _dumper("timestamptz"))
psycopg.adapters.register_dumper(BoolArray, _dumper("bool"))


@functools.cache  # per column: the guests' statement asks for 16 at every execution
def array_for(column: Column[Any]) -> Callable[[Iterable[Any]], PgArray]:
    """The PgArray class that sends `column`'s values (JSON travels as text, see write.py)."""
    type_ = getattr(column.type, "impl_instance", column.type)  # a TypeDecorator's (UtcDateTime)
    if isinstance(type_, Boolean):
        return BoolArray
    if isinstance(type_, Integer):
        return Int8Array
    if isinstance(type_, DateTime):
        return TimestamptzArray
    if isinstance(type_, String | JSON):
        return TextArray
    raise TypeError(f"no array type for {column}")  # pragma: no cover - a new column's type
