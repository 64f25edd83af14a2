"""The token cache hits in steady state and revocation still reaches every process (#13).

A live token's lookup is remembered for token_cache_ttl_s (300 s), an unknown token's for
token_negative_ttl_s (10 s); each process polls the database every token_revocation_poll_s
(5 s) for the remembered tokens that are no longer live. "Another process" here is a second
engine and Authenticator on the same database (SQLite file, PostgreSQL database); the poll is
driven by hand (`poll_once`) except where the app's own poller is the subject.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, delete, insert, make_url, update
from sqlalchemy.exc import DBAPIError

from app.auth import Authenticator, Principal
from app.errors import Unauthorized
from app.settings import Settings
from app.store.engine import make_engine
from app.store.tables import token
from app.store.tokens import create_token, hash_token, new_token, rekey_host, revoke_token
from tests.app.conftest import Server, assert_error, auth


@pytest.fixture
def other(migrated_db_url: str) -> Iterator[Engine]:
    """A second engine on the same database: another process or replica."""
    eng = make_engine(migrated_db_url)
    yield eng
    eng.dispose()


def _auth(engine: Engine, negative_ttl_s: float = 10.0, revocation_poll_s: float = 5.0) -> Authenticator:
    """What create_app makes with the default settings (300 s for a live token)."""
    return Authenticator(engine, negative_ttl_s=negative_ttl_s, revocation_poll_s=revocation_poll_s)


def _create(
    engine: Engine, role: str = "agent", host: str | None = "host-1", expires_at: datetime | None = None
) -> tuple[str, int]:
    with engine.begin() as conn:
        return create_token(conn, role, host, expires_at=expires_at)


def _refused(a: Authenticator, raw: str) -> bool:
    try:
        a.authenticate(raw)
    except Unauthorized:
        return True
    return False


def test_a_token_revoked_by_another_process_stops_working_there_after_one_poll(
    engine: Engine, other: Engine
) -> None:
    here, there = _auth(engine), _auth(other)
    raw, token_id = _create(engine)
    kept, _ = _create(engine, host="host-2")
    for a in (here, there):
        assert a.authenticate(raw) == Principal(token_id, "agent", "host-1")
        a.authenticate(kept)

    with other.begin() as conn:
        assert revoke_token(conn, token_id)
    there.forget()  # what DELETE /api/v1/tokens/{id} does in the process that revoked
    assert _refused(there, raw)
    # Here it is still remembered as live (300 s): the poll, not a lookup, is what ends it.
    assert not _refused(here, raw)

    assert here.poll_once() == 1
    assert _refused(here, raw)
    assert here.authenticate(kept).host_name == "host-2"  # the others stay remembered
    assert here.poll_once() == 0


def test_the_event_loop_path_honours_a_poll_too(engine: Engine, other: Engine) -> None:
    here = _auth(engine)
    raw, token_id = _create(engine, role="viewer", host=None)
    assert asyncio.run(here.authenticate_async(raw)).role == "viewer"
    with other.begin() as conn:
        revoke_token(conn, token_id)
    assert here.poll_once() == 1
    with pytest.raises(Unauthorized):
        asyncio.run(here.authenticate_async(raw))


def test_a_rekey_elsewhere_ends_the_old_token_and_the_new_one_works(engine: Engine, other: Engine) -> None:
    here = _auth(engine)
    old, _ = _create(engine)
    here.authenticate(old)
    with other.begin() as conn:
        new = rekey_host(conn, "host-1").token
    here.poll_once()
    assert _refused(here, old)
    assert here.authenticate(new).host_name == "host-1"


def test_a_token_expired_or_deleted_in_the_database_is_forgotten_at_the_next_poll(
    engine: Engine, other: Engine
) -> None:
    here = _auth(engine)
    expiring, expiring_id = _create(engine)
    deleted, deleted_id = _create(engine, host="host-2")
    kept, _ = _create(engine, host="host-3")
    for raw in (expiring, deleted, kept):
        here.authenticate(raw)
    with other.begin() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(update(token).where(token.c.id == expiring_id).values(expires_at=past))
        conn.execute(delete(token).where(token.c.id == deleted_id))  # by hand: no code path does
    assert here.poll_once() == 2
    assert _refused(here, expiring)
    assert _refused(here, deleted)
    assert here.authenticate(kept).host_name == "host-3"


def test_an_expiring_token_is_not_served_from_the_cache_past_its_expiry(engine: Engine) -> None:
    here = _auth(engine, revocation_poll_s=0)  # no poll: only the cache's own expiry acts
    expires_at = datetime.now(UTC) + timedelta(seconds=1)
    raw, _ = _create(engine, role="viewer", host=None, expires_at=expires_at)
    assert here.authenticate(raw).role == "viewer"  # remembered, for at most 1 s not 300
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
    assert _refused(here, raw)


def test_an_unknown_token_is_remembered_briefly_a_live_one_long(engine: Engine, other: Engine) -> None:
    here = _auth(engine, negative_ttl_s=0.3, revocation_poll_s=0)
    raw = new_token()
    assert _refused(here, raw)
    # Another process creates exactly this token (as if its creation raced the first use).
    with other.begin() as conn:
        conn.execute(insert(token).values(hash=hash_token(raw), role="viewer", created_at=datetime.now(UTC)))
    assert _refused(here, raw)  # still the remembered "unknown"
    time.sleep(0.35)
    assert here.authenticate(raw).role == "viewer"
    # Revoked elsewhere, with no poll: the positive answer outlives the negative TTL many times.
    with other.begin() as conn:
        conn.execute(
            update(token).where(token.c.hash == hash_token(raw)).values(revoked_at=datetime.now(UTC))
        )
    time.sleep(0.35)
    assert here.authenticate(raw).role == "viewer"


@contextmanager
def _unreachable(url: str) -> Iterator[None]:
    """The database goes away for new connections and the ones pooled (as in a failover)."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        assert path is not None
        os.replace(path, path + ".away")
        try:
            os.mkdir(path)  # a directory: SQLite cannot open it ("unable to open database file")
            try:
                yield
            finally:
                os.rmdir(path)
        finally:
            os.replace(path + ".away", path)
        return
    from tests.app.api.test_outage import Outage

    outage = Outage(url)
    outage.begin()
    try:
        yield
    finally:
        outage.end()


def test_with_the_database_unreachable_a_failed_poll_keeps_remembered_tokens(
    engine: Engine, migrated_db_url: str
) -> None:
    here = _auth(engine)
    raw, _ = _create(engine)
    unknown, _ = _create(engine, host="host-2")
    here.authenticate(raw)
    engine.dispose()  # no pooled connection survives the outage on either engine
    with _unreachable(migrated_db_url):
        assert here.poll_once() is None  # failed, and said so: nothing raised, nothing forgotten
        assert here.poll_failures == 1
        assert here.authenticate(raw).host_name == "host-1"
        with pytest.raises(DBAPIError):  # not remembered: the app answers 503 for it
            here.authenticate(unknown)
    assert here.poll_once() == 0  # the database is back: the poll answers again
    assert here.authenticate(unknown).host_name == "host-2"


def test_the_app_polls_from_startup_to_shutdown(settings: Settings, other: Engine) -> None:
    srv = Server(settings.model_copy(update={"token_revocation_poll_s": 0.2}))
    srv.start()
    try:
        assert srv.app.state.auth.polling
        raw, token_id = _create(other, role="viewer", host=None)
        with httpx.Client(base_url=srv.url, headers=auth(raw)) as c:
            assert c.get("/api/v1/hosts").status_code == 200  # remembered for 300 s
            with other.begin() as conn:
                revoke_token(conn, token_id)
            deadline = time.monotonic() + 20  # a poll every 0.2 s; generous for a loaded machine
            while c.get("/api/v1/hosts").status_code == 200:
                assert time.monotonic() < deadline, "the revocation was not polled in 20 s"
                time.sleep(0.05)
            assert_error(c.get("/api/v1/hosts"), 401, "invalid_token")
        assert srv.app.state.auth.polls >= 1
    finally:
        srv.stop()
    assert not srv.app.state.auth.polling


def test_polling_is_off_when_nothing_is_remembered(settings: Settings) -> None:
    srv = Server(settings.model_copy(update={"token_cache_ttl_s": 0}))
    srv.start()
    try:
        assert not srv.app.state.auth.polling
    finally:
        srv.stop()
