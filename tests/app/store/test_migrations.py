"""Migrations create exactly app/store/tables.py, from an empty database, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.retention.partitions import include_name, include_object
from app.store.engine import make_engine
from app.store.schema_check import head_revision, schema_status
from app.store.tables import metadata
from tests.app.conftest import upgrade


def test_upgrade_from_empty_creates_every_table_and_matches_the_metadata(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert set(metadata.tables) <= set(inspect(conn).get_table_names())
            # The comparison skips PostgreSQL's day partitions of event and event's unique key
            # there (it holds the partition key): the partitioning tests below check those.
            context = MigrationContext.configure(
                conn,
                opts={"compare_type": True, "include_name": include_name, "include_object": include_object},
            )
            diffs = compare_metadata(context, metadata)
        assert diffs == []
    finally:
        engine.dispose()


def test_upgrade_twice_is_harmless_and_leaves_the_database_at_head(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        status = schema_status(engine)
        assert status.ok and status.current == head_revision()
    finally:
        engine.dispose()


def test_empty_database_is_reported_behind_with_the_command_to_run(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        status = schema_status(engine)
    finally:
        engine.dispose()
    assert not status.ok
    assert "is at revision none" in status.message
    assert head_revision() in status.message
    assert "splitwatch db upgrade" in status.message


def test_unreachable_database_is_reported_not_raised() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")
    try:
        status = schema_status(engine)
    finally:
        engine.dispose()
    assert not status.ok
    assert "cannot be reached" in status.message
