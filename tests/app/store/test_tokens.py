"""Tokens are random, stored as sha256, verified only while not revoked."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import Engine, select

from app.store.tables import token
from app.store.tokens import TokenError, create_token, find_token, revoke_token

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_created_token_verifies_and_only_its_hash_is_stored(engine: Engine) -> None:
    with engine.begin() as conn:
        raw, token_id = create_token(conn, "agent", "kvm-1", "rack 4")
    with engine.connect() as conn:
        stored = conn.execute(select(token.c.hash)).scalar()
        info = find_token(conn, raw)
    assert stored == hashlib.sha256(raw.encode()).hexdigest()
    assert info is not None and (info.id, info.role, info.host_name, info.label) == (
        token_id,
        "agent",
        "kvm-1",
        "rack 4",
    )


def test_two_tokens_are_never_the_same(engine: Engine) -> None:
    with engine.begin() as conn:
        assert create_token(conn, "viewer")[0] != create_token(conn, "viewer")[0]


def test_revoked_or_unknown_token_does_not_verify(engine: Engine) -> None:
    with engine.begin() as conn:
        raw, token_id = create_token(conn, "admin")
        assert revoke_token(conn, token_id)
        assert not revoke_token(conn, token_id)
    with engine.connect() as conn:
        assert find_token(conn, raw) is None
        assert find_token(conn, "sw_unknown") is None


@pytest.mark.parametrize(("role", "host"), [("agent", None), ("viewer", "h"), ("root", None)])
def test_token_requests_that_make_no_sense_are_refused(engine: Engine, role: str, host: str | None) -> None:
    with pytest.raises(TokenError), engine.begin() as conn:
        create_token(conn, role, host)
