"""Alembic environment: the target is app.store.tables.metadata.

SQLite alters tables by copying them (render_as_batch); PostgreSQL alters in place. A caller
may hand a live connection in `config.attributes["connection"]` (tests, `db upgrade`).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from app.retention.partitions import include_name, include_object
from app.store.engine import make_engine
from app.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # PostgreSQL's day partitions of event and its partition-keyed unique key (#13).
        include_name=include_name,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
