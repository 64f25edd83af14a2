"""`splitwatch token create|list|revoke`: the token alone on the last line, stored hashed."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.store.engine import make_engine
from app.store.tables import token
from app.store.tokens import find_token, hash_token
from tests.app.cli.test_serve import run

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_agent_token_is_printed_alone_on_the_last_line_and_stored_only_as_its_hash(
    migrated_db_url: str,
) -> None:
    result = run("token", "create", "--role", "agent", "--host", "kvm-17", "--database-url", migrated_db_url)
    assert result.returncode == 0, result.stderr
    raw = result.stdout.splitlines()[-1]
    assert raw.startswith("sw_") and " " not in raw and len(raw) > 40
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(token.c.hash, token.c.role, token.c.host_name)).one()
            found = find_token(conn, raw)
    finally:
        engine.dispose()
    assert tuple(stored) == (hash_token(raw), "agent", "kvm-17")
    assert raw not in stored.hash
    assert found is not None and found.host_name == "kvm-17"


def test_agent_token_without_host_is_refused_with_the_flag_to_add(migrated_db_url: str) -> None:
    result = run("token", "create", "--role", "agent", "--database-url", migrated_db_url)
    assert result.returncode == 2
    assert "--host NAME" in result.stderr


def test_unknown_role_is_refused_naming_the_roles(migrated_db_url: str) -> None:
    result = run("token", "create", "--role", "root", "--database-url", migrated_db_url)
    assert result.returncode == 2
    assert "agent, viewer, admin" in result.stderr


def test_viewer_token_with_a_host_is_refused(migrated_db_url: str) -> None:
    result = run("token", "create", "--role", "viewer", "--host", "x", "--database-url", migrated_db_url)
    assert result.returncode == 2
    assert "agent tokens only" in result.stderr


def test_token_create_on_an_unmigrated_database_says_to_upgrade(db_url: str) -> None:
    result = run("token", "create", "--role", "viewer", "--database-url", db_url)
    assert result.returncode == 1
    assert "splitwatch db upgrade" in result.stderr


def test_revoked_token_no_longer_verifies_and_is_listed_as_revoked(migrated_db_url: str) -> None:
    raw = run("token", "create", "--role", "viewer", "--label", "grafana", "--database-url", migrated_db_url)
    token_line = raw.stdout.splitlines()[-1]
    listed = run("token", "list", "--database-url", migrated_db_url)
    assert "#1\tviewer\t-\tgrafana\tused never\tlive" in listed.stdout
    assert token_line not in listed.stdout
    assert run("token", "revoke", "1", "--database-url", migrated_db_url).returncode == 0
    assert "revoked" in run("token", "list", "--database-url", migrated_db_url).stdout
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            assert find_token(conn, token_line) is None
    finally:
        engine.dispose()
    again = run("token", "revoke", "1", "--database-url", migrated_db_url)
    assert again.returncode == 1 and "token list" in again.stderr
