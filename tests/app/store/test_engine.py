"""Engines: SQLite pragmas, PostgreSQL through psycopg 3, bad URLs explained."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import OperationalError

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


def test_sqlite_begin_immediate_on_a_locked_database_fails_as_sqlalchemy_operational_error(
    tmp_path: Path,
) -> None:
    """BEGIN runs on the DB-API connection; a lock held past the busy timeout must still surface
    as SQLAlchemy's OperationalError (the API answers it with 503), and the writer's next
    transaction must begin once the lock is gone."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    holder = make_engine(url)
    writer = make_engine(url, connect_args={"timeout": 0.05})
    try:
        with holder.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with writer.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout = 50")
            conn.commit()
            immediate = conn.execution_options(sqlite_begin="IMMEDIATE")
            with holder.connect() as locker:
                locker.execution_options(sqlite_begin="IMMEDIATE").begin()
                with pytest.raises(OperationalError, match="locked"):
                    immediate.begin()
                locker.rollback()
            with immediate.begin():
                immediate.execute(text("INSERT INTO t VALUES (1)"))
        with holder.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
    finally:
        writer.dispose()
        holder.dispose()


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


def _admin() -> Any:
    import psycopg

    from tests.conftest import PG_URL

    admin = make_url(PG_URL)
    return psycopg.connect(
        host=admin.host or "127.0.0.1", port=admin.port or 5432, user=admin.username or "postgres",
        dbname=admin.database or "postgres", autocommit=True,
    )  # fmt: skip


def _terminate_backends(database_url: str) -> int:
    """pg_terminate_backend on every connection to the database; returns once they are gone."""
    name = make_url(database_url).database
    with _admin() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
        # The signal is only sent: wait for the processes to exit, as a restart completes.
        for _ in range(500):
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(0.01)
    return len(rows)


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_pool_replaces_connections_whose_backend_was_terminated(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=2, max_overflow=0)
    try:
        with engine.connect() as a, engine.connect() as b:
            before = {
                a.execute(text("SELECT pg_backend_pid()")).scalar(),
                b.execute(text("SELECT pg_backend_pid()")).scalar(),
            }
        assert _terminate_backends(db_url) >= 2  # as a restart or a failover does
        for _ in range(3):  # every pooled connection was dead; each is replaced on checkout
            with engine.begin() as conn:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                assert conn.execute(text("SELECT 1")).scalar() == 1
            assert pid not in before
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_checkout_sends_nothing_to_the_server(db_url: str) -> None:
    """No ping per checkout (#13): the last statement the server saw is the previous use's."""
    engine = make_engine(db_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid() AS first_use")).scalar()
        with engine.connect() as conn, _admin() as admin:
            last = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            # What the pool sent when the first use ended; a ping would show here instead.
            assert last is not None and last[0] == "ROLLBACK"
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid
    finally:
        engine.dispose()
