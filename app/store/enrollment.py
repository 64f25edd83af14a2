"""Fleet enrollment (#15): an enrollment token traded for one host's own agent token.

`check_enrollment` is pure: it says why a token may not enroll a host name (revoked, expired,
exhausted, not an enrollment token, name outside its glob), as the ApiError the API answers.
`enroll` runs in one write transaction and is race-free:
  1. on PostgreSQL, a transaction-scoped advisory lock on the host name, so two machines
     claiming one name at once are serialised (SQLite's single writer already is);
  2. the name's live agent tokens: none -> a first enrollment; all carrying the caller's
     machine id -> a reinstall (they are revoked, a fresh one issued); else 409 with the
     admin's remedy;
  3. `UPDATE token SET uses = uses + 1 WHERE id = :id AND <live> AND uses < max_uses`: one row
     or nothing, so N concurrent enrollments against max_uses = M succeed exactly min(N, M)
     times; a refusal after this point rolls the use back with the transaction;
  4. the agent token, bound to the host name, with the machine id and the enrollment token id.

The machine id (/etc/machine-id) is not a secret (any local user can read it): it tells a
reinstall from a name clash, it does not prove identity. The enrollment token is the
credential; scope it with a glob, an expiry and a maximum number of uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from sqlalchemy import Connection, func, or_, select, update

from app.errors import ApiError, Conflict, Forbidden, Unauthorized
from app.store.tables import token
from app.store.tokens import (
    TokenInfo,
    create_token,
    find_any_token,
    live_host_tokens,
    revoke_host_tokens,
)

_NEW = "ask an admin for a new one (`splitwatch token create --role enroll`)"


@dataclass(frozen=True, slots=True)
class Enrolled:
    host_name: str
    token: str
    token_id: int
    replaced: list[int]  # agent tokens revoked by a reinstall's re-enrollment


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_enrollment(info: TokenInfo | None, host_name: str, now: datetime) -> TokenInfo:
    """The enrollment token if it may enroll `host_name` now; the refusal otherwise."""
    if info is None:
        raise Unauthorized(f"enrollment token unknown: check the token file, or {_NEW}", code="invalid_token")
    if info.role != "enroll":
        raise Forbidden(
            f"a {info.role} token cannot enroll hosts: use an enrollment token "
            "(`splitwatch token create --role enroll`)",
            code="wrong_role",
        )
    if info.revoked_at is not None:
        raise Unauthorized(
            f"enrollment token #{info.id} was revoked at {_stamp(info.revoked_at)}: {_NEW}",
            code="enroll_token_revoked",
        )
    if info.expires_at is not None and info.expires_at <= now:
        raise Unauthorized(
            f"enrollment token #{info.id} expired at {_stamp(info.expires_at)}: {_NEW}",
            code="enroll_token_expired",
        )
    if info.host_glob is not None and not fnmatchcase(host_name, info.host_glob):
        raise Forbidden(
            f"host name {host_name!r} does not match enrollment token #{info.id}'s pattern "
            f"{info.host_glob!r}: enroll it with a token made for its name, or fix the hostname",
            code="host_not_allowed",
        )
    if info.max_uses is not None and info.uses >= info.max_uses:
        raise _exhausted(info)
    return info


def _exhausted(info: TokenInfo) -> ApiError:
    return Forbidden(
        f"enrollment token #{info.id} has been used {info.max_uses} of {info.max_uses} times: "
        f"{_NEW} with a larger --max-uses",
        code="enroll_token_exhausted",
    )


def _lock_host_name(conn: Connection, host_name: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("splitwatch.enroll:" + host_name))))


def enroll(
    conn: Connection, raw: str, host_name: str, machine_id: str | None, now: datetime | None = None
) -> Enrolled:
    """Trade the enrollment token `raw` for an agent token of `host_name` (see the module doc)."""
    now = now or datetime.now(UTC)
    info = check_enrollment(find_any_token(conn, raw), host_name, now)
    _lock_host_name(conn, host_name)
    live = live_host_tokens(conn, host_name, now)
    if live and not (machine_id and all(t.machine_id == machine_id for t in live)):
        held = ", ".join(f"#{t.id}" for t in live[:5])
        raise Conflict(
            f"host name {host_name!r} is already enrolled (agent token {held}) by another machine: "
            f"if this machine replaces it, an admin revokes the old token (`splitwatch token revoke "
            f"--host {host_name}` or DELETE /api/v1/hosts/{host_name}/token) and this agent enrolls at "
            f"its next start, or re-keys it (`splitwatch token rekey {host_name}`) and installs the new "
            "token with --token; if two machines share the name, give one another hostname",
            code="host_already_enrolled",
        )
    used = conn.execute(
        update(token)
        .where(
            token.c.id == info.id,
            token.c.revoked_at.is_(None),
            or_(token.c.expires_at.is_(None), token.c.expires_at > now),
            or_(token.c.max_uses.is_(None), token.c.uses < token.c.max_uses),
        )
        .values(uses=token.c.uses + 1, last_used_at=now)
    )
    if used.rowcount != 1:
        # Another enrollment took the last use (or revoked it) since check_enrollment read it.
        raise _exhausted(info)
    replaced = revoke_host_tokens(conn, host_name, now) if live else []
    new, token_id = create_token(
        conn,
        "agent",
        host_name,
        label=f"enrolled with enrollment token #{info.id}",
        now=now,
        machine_id=machine_id,
        enrolled_by=info.id,
    )
    return Enrolled(host_name, new, token_id, replaced)
