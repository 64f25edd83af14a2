"""API tokens: created once, shown once, stored as their sha256.

A token is "sw_" + 43 url-safe characters (256 random bits). Roles: `agent` (writes the
one host named in `host_name`), `viewer` (reads), `admin` (reads, and changes rules and
webhooks). Revoked tokens stay in the table (revoked_at) so a label keeps its history.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from app.store.tables import token

ROLES = ("agent", "viewer", "admin")
PREFIX = "sw_"


class TokenError(ValueError):
    """A token request that cannot be honoured; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    role: str
    host_name: str | None
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def check_request(role: str, host_name: str | None) -> None:
    if role not in ROLES:
        raise TokenError(f"role {role!r} is not one of {', '.join(ROLES)}: pick one of them")
    if role == "agent" and not host_name:
        raise TokenError(
            "an agent token writes exactly one host: give its name with --host NAME "
            "(the hostname the agent reports, proc/sys/kernel/hostname)"
        )
    if role != "agent" and host_name:
        raise TokenError(f"--host applies to agent tokens only, not to a {role} token: leave it out")
    if host_name is not None and len(host_name) > 255:
        raise TokenError("host name is longer than 255 characters: use the host's real hostname")


def create_token(
    conn: Connection,
    role: str,
    host_name: str | None = None,
    label: str | None = None,
    now: datetime | None = None,
) -> tuple[str, int]:
    """A new token (the only time it exists in clear) and its row id."""
    check_request(role, host_name)
    raw = new_token()
    result = conn.execute(
        insert(token).values(
            hash=hash_token(raw),
            role=role,
            host_name=host_name,
            label=label,
            created_at=now or datetime.now(UTC),
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return raw, int(pk[0])


def _info(row: object) -> TokenInfo:
    m = row._mapping  # type: ignore[attr-defined]
    return TokenInfo(
        id=m["id"],
        role=m["role"],
        host_name=m["host_name"],
        label=m["label"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
    )


_COLUMNS = (
    token.c.id,
    token.c.role,
    token.c.host_name,
    token.c.label,
    token.c.created_at,
    token.c.last_used_at,
    token.c.revoked_at,
)


def find_token(conn: Connection, raw: str) -> TokenInfo | None:
    """The live (not revoked) token `raw`, or None."""
    return find_token_by_hash(conn, hash_token(raw))


def find_token_by_hash(conn: Connection, digest: str) -> TokenInfo | None:
    """The live (not revoked) token whose sha256 hex is `digest`, or None."""
    row = conn.execute(select(*_COLUMNS).where(token.c.hash == digest, token.c.revoked_at.is_(None))).first()
    return _info(row) if row is not None else None


def list_tokens(conn: Connection) -> list[TokenInfo]:
    return [_info(r) for r in conn.execute(select(*_COLUMNS).order_by(token.c.id))]


def revoke_token(conn: Connection, token_id: int, now: datetime | None = None) -> bool:
    """Revoke by id; False when there is no live token with that id."""
    result = conn.execute(
        update(token)
        .where(token.c.id == token_id, token.c.revoked_at.is_(None))
        .values(revoked_at=now or datetime.now(UTC))
    )
    return result.rowcount == 1


def touch_token(conn: Connection, token_id: int, at: datetime) -> None:
    conn.execute(update(token).where(token.c.id == token_id).values(last_used_at=at))
