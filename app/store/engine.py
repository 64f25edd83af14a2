"""Engines for SQLite and PostgreSQL, configured the way splitwatch relies on.

SQLite: WAL (readers never block the one writer), busy_timeout (a second process such as
`splitwatch token create` waits instead of failing), foreign keys on, synchronous NORMAL
(durable across a process crash; WAL keeps it consistent across power loss). The sqlite3
module's own implicit transactions are switched off and SQLAlchemy emits BEGIN itself, so a
transaction covers its SELECTs too; `IMMEDIATE` (execution option `sqlite_begin`) takes the
write lock up front, which the single writer uses so it never has to upgrade a read snapshot.

PostgreSQL: psycopg 3 (`postgresql+psycopg://`); `postgresql://` and `postgres://` are
rewritten to it. A pooled connection whose server process is gone (a restart, a failover,
pg_terminate_backend) is replaced on checkout, without a round trip: a terminated backend
sends its FATAL message and closes the socket, so an idle connection with anything to read is
dead (`_alive`). SQLAlchemy's pool_pre_ping sent an empty query instead, a round trip per
checkout: one per ingest request (#13). A connection silently cut by the network (no FIN
reaches us) fails its first statement, which SQLAlchemy takes as a disconnect and invalidates;
`pool_recycle` bounds how long such a connection can sit in the pool. psycopg prepares a
statement on the server after its 5th execution on a connection (`prepare_threshold`): the
statements of a request are built once (app/ingest/write.py), so their text repeats and from
then on PostgreSQL neither parses nor plans them again.

Pools (issue 14): `pool_options()` gives explicit sizes per engine, so a burst of readers waits
a bounded time for a connection (then the API answers 503 with Retry-After, app/errors.py)
instead of the library's defaults (5 + 10, 30 s, then a 500). SQLite connections are cheap
(a file handle), so there is one per threadpool thread; PostgreSQL's are server processes.
"""

from __future__ import annotations

import select
import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 10_000
# (pool_size, max_overflow) when the settings leave them unset: 12 is one per request that may
# read at once (threadpool_size 8 read slots, app/auth.LOOKUP_THREADS 4), so no reader waits
# for a connection; the overflow covers the SQLite writer and checkpointer, CSV pages.
SQLITE_POOL = (12, 12)
POSTGRES_POOL = (12, 8)
# Seconds a PostgreSQL connection is reused before the pool replaces it: an idle connection a
# firewall dropped without a FIN looks alive to `_alive`; this bounds how long it can stay.
POSTGRES_RECYCLE_S = 1800


class DatabaseUrlError(ValueError):
    """The database URL names no engine splitwatch supports."""


def normalize_url(url: str) -> str:
    """The URL with its driver made explicit (psycopg 3 for PostgreSQL)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(url: str) -> bool:
    return normalize_url(url).startswith("sqlite")


def pool_options(
    url: str, pool_size: int | None = None, max_overflow: int | None = None, timeout_s: float = 10.0
) -> dict[str, Any]:
    """create_engine keywords for the read pool of `url` (none for an in-memory SQLite)."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            return {}  # SingletonThreadPool: one connection per thread, no sizes
        size, overflow = SQLITE_POOL
    else:
        size, overflow = POSTGRES_POOL
    return {
        "pool_size": size if pool_size is None else pool_size,
        "max_overflow": overflow if max_overflow is None else max_overflow,
        "pool_timeout": timeout_s,
    }


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse text
        raise DatabaseUrlError(
            f"database URL {url!r} cannot be parsed ({exc}): use e.g. sqlite:///splitwatch.db "
            "or postgresql://user@host/db"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, **kwargs)
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise DatabaseUrlError(
                f"database URL {url!r} names driver {parsed.get_driver_name()!r}: "
                "splitwatch uses psycopg 3, write postgresql://... or postgresql+psycopg://..."
            )
        kwargs.setdefault("pool_recycle", POSTGRES_RECYCLE_S)
        engine = create_engine(url, **kwargs)
        if not kwargs.get("pool_pre_ping"):
            event.listen(engine, "checkout", _replace_dead)
        return engine
    raise DatabaseUrlError(
        f"database URL {url!r} names {backend!r}: splitwatch supports sqlite:/// and postgresql://"
    )


def _alive(dbapi_conn: Any) -> bool:
    """False when the idle psycopg connection's server process is gone; no round trip.

    Between transactions the server sends nothing unprompted (splitwatch does not LISTEN), so
    a socket with something to read holds a terminated backend's FATAL message or the end of
    the stream. A rare unprompted message (a NOTICE, a parameter change) costs a reconnect.
    """
    if dbapi_conn.closed:
        return False
    try:
        fd = dbapi_conn.pgconn.socket
    except Exception:  # psycopg raises when the connection is no longer usable
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return not poller.poll(0)


def _replace_dead(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    if not _alive(dbapi_conn):
        # The pool closes this connection and checks out a new one in its place.
        raise exc.DisconnectionError("the PostgreSQL connection was closed by the server")


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    connect_args = kwargs.pop("connect_args", {})
    # Connections move between the threadpool and the writer thread; each is used by one
    # thread at a time (the pool guarantees it).
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see "begin" below)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        statement = f"BEGIN {mode}".strip()
        # On the DB-API connection: exec_driver_sql's execution context cost the single
        # writer thread more CPU than the BEGIN itself, once per transaction (#13,
        # docs/benchmarks.md). Its errors are wrapped as SQLAlchemy would ("database is
        # locked" past the busy timeout: OperationalError, which the API answers with 503).
        try:
            conn.connection.dbapi_connection.execute(statement)
        except sqlite3.Error as err:
            raise exc.DBAPIError.instance(statement, (), err, sqlite3.Error) from err

    return engine
