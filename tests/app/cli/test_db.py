"""`splitwatch db upgrade` from an installed package, URL from the flag or the environment."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from app.store.engine import make_engine
from app.store.schema_check import schema_status
from tests.app.cli.test_serve import run


def test_db_upgrade_brings_an_empty_database_to_head(db_url: str) -> None:
    result = run("db", "upgrade", "--database-url", db_url)
    assert result.returncode == 0, result.stderr
    assert "is at 2026_12_01_backend_break" in result.stdout
    engine = make_engine(db_url)
    try:
        assert schema_status(engine).ok
        assert "event" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_db_upgrade_reads_splitwatch_database_url_and_runs_from_any_directory(
    db_url: str, tmp_path: object
) -> None:
    result = run("db", "upgrade", env={"SPLITWATCH_DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    assert db_url in result.stdout


def test_db_upgrade_of_an_unreachable_database_fails_with_a_sentence() -> None:
    result = run("db", "upgrade", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "failed" in result.stderr and "check the URL" in result.stderr
    assert "Traceback" not in result.stderr
