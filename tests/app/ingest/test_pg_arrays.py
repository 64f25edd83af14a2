"""The write statements' array parameters with a fixed type (app/ingest/pg_arrays.py) read back
from PostgreSQL as the values psycopg's own list dumping sends, cast as the statements cast them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine

from app.ingest.pg_arrays import BoolArray, Int8Array, PgArray, TextArray, TimestamptzArray

INT64 = 2**63 - 1
AT = datetime(2026, 12, 1, 4, 0, 0, 123456, tzinfo=UTC)

CASES: list[tuple[type[PgArray], str, list[Any]]] = [
    (Int8Array, "INTEGER", [0, 1, 2**31 - 1, 7]),
    (Int8Array, "INTEGER", [3, None, 5]),
    (Int8Array, "INTEGER", [None, None]),
    (Int8Array, "BIGINT", [INT64, 0, 2**40]),
    (Int8Array, "SMALLINT", [1, 2]),
    (Int8Array, "INTEGER", []),
    (TextArray, "VARCHAR(16)", ["kernel", "", 'é\u2028 {x,"y"}', None]),
    (TextArray, "TEXT", ["null", "NULL"]),
    (TextArray, "JSON", ['{"a": [1, 2]}', "null"]),
    (TimestamptzArray, "TIMESTAMP WITH TIME ZONE", [AT, AT.astimezone(timezone(timedelta(hours=-7))), None]),
    (TimestamptzArray, "TIMESTAMP WITH TIME ZONE", [datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]),
    (BoolArray, "BOOLEAN", [True, False, None]),
]


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
@pytest.mark.parametrize(("cls", "sql_type", "values"), CASES)
def test_a_typed_array_reads_back_as_a_plain_list_does(
    engine: Engine, cls: type[PgArray], sql_type: str, values: list[Any]
) -> None:
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        read: list[Any] = []
        for param in (list(values), cls(values)):
            # As the write statements take them: binary, cast to the column's type, unnested.
            cursor.execute(
                f"SELECT x::TEXT FROM unnest(%(x)b::{sql_type}[]) WITH ORDINALITY AS u(x, n) ORDER BY n",
                {"x": param},
            )
            read.append([r[0] for r in cursor.fetchall()])
        cursor.close()
    assert read[1] == read[0]
    assert len(read[1]) == len(values)
