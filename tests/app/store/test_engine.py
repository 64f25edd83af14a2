"""Engines: SQLite pragmas, PostgreSQL through psycopg 3, bad URLs explained."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from app.store.engine import DatabaseUrlError, make_engine, normalize_url


def test_sqlite_runs_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
    finally:
        engine.dispose()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10000, "synchronous": 1}


def test_sqlite_transaction_rolls_back_as_a_whole(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError("abort")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_postgresql_urls_are_rewritten_to_psycopg_3(url: str, expected: str) -> None:
    assert normalize_url(url) == expected
    make_engine(url).dispose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u@h/db", "supports sqlite:/// and postgresql://"),
        ("postgresql+psycopg2://u@h/db", "psycopg 3"),
        ("not a url", "cannot be parsed"),
    ],
)
def test_unsupported_url_is_refused_with_what_to_write(url: str, says: str) -> None:
    with pytest.raises(DatabaseUrlError, match=says.replace("+", r"\+")):
        make_engine(url)
