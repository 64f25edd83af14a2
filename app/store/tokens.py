"""API tokens: created once, shown once, stored as their sha256.

A token is "sw_" + 43 url-safe characters (256 random bits): random and high-entropy, so one
sha256 (no slow KDF) is the right hash, and a lookup is one indexed equality. Roles:
`agent` (writes the one host named in `host_name`), `viewer` (reads), `admin` (reads, and
changes rules, webhooks and tokens), `enroll` (#15: only trades itself at POST /api/v1/enroll
for an agent token of the enrolling host; limited by `host_glob`, `expires_at`, `max_uses`).
Any token may carry `expires_at`. Revoked tokens stay in the table (revoked_at) so a label
keeps its history.

Creation in bulk (`create_agent_tokens`, `splitwatch token create --hosts-file`) is one
executemany in the caller's transaction: 10,000 hosts cost one commit, not 10,000 processes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, and_, any_, bindparam, column, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from app.store.tables import host, token

ROLES = ("agent", "viewer", "admin", "enroll")
PREFIX = "sw_"
NAME_MAX = 255
# An enrollment token without --expires lives this long (kubeadm's bootstrap tokens: 24 h).
DEFAULT_ENROLL_TTL = timedelta(hours=24)
MAX_TTL = timedelta(days=3650)
LIST_MAX = 10_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


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
    expires_at: datetime | None = None
    host_glob: str | None = None
    max_uses: int | None = None
    uses: int = 0
    machine_id: str | None = None
    enrolled_by: int | None = None
    # Agent tokens, in lists: when the host last reported (None: never, e.g. enrolled only).
    host_last_seen_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `7d`, `2w` or plain seconds -> timedelta; TokenError otherwise."""
    m = _DURATION.match(text)
    if m is None or int(m.group(1)) == 0:
        raise TokenError(
            f"expiry {text!r} is not a duration: write a positive number with s, m, h, d or w (e.g. 7d)"
        )
    ttl = timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])
    if ttl > MAX_TTL:
        raise TokenError(f"expiry {text!r} is over ten years: pick a shorter one (e.g. 365d)")
    return ttl


def check_host_name(name: str, what: str = "host name") -> None:
    if not name or len(name) > NAME_MAX or _CONTROL.search(name) or name != name.strip():
        raise TokenError(
            f"{what} {name[:60]!r} is not a hostname: 1 to {NAME_MAX} characters, no spaces at the "
            "ends, no control characters (the agent reports proc/sys/kernel/hostname)"
        )


def check_request(
    role: str,
    host_name: str | None,
    *,
    host_glob: str | None = None,
    max_uses: int | None = None,
) -> None:
    if role not in ROLES:
        raise TokenError(f"role {role!r} is not one of {', '.join(ROLES)}: pick one of them")
    if role == "agent" and not host_name:
        raise TokenError(
            "an agent token writes exactly one host: give its name with --host NAME "
            "(the hostname the agent reports, proc/sys/kernel/hostname)"
        )
    if role != "agent" and host_name:
        raise TokenError(f"--host applies to agent tokens only, not to a {role} token: leave it out")
    if host_name is not None:
        check_host_name(host_name)
    if role != "enroll" and (host_glob is not None or max_uses is not None):
        raise TokenError(
            f"--host-glob and --max-uses apply to enrollment tokens only (--role enroll), "
            f"not to a {role} token: leave them out"
        )
    if host_glob is not None and (not host_glob or len(host_glob) > NAME_MAX or _CONTROL.search(host_glob)):
        raise TokenError(
            f"host glob {host_glob[:60]!r} is not a pattern: 1 to {NAME_MAX} characters such as 'kvm-*'"
        )
    if max_uses is not None and not 1 <= max_uses <= 2**31 - 1:
        raise TokenError(f"max uses {max_uses} is not a positive number: pass 1 or more")


def default_expiry(role: str, expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None and role == "enroll":
        return now + DEFAULT_ENROLL_TTL
    return expires_at


def create_token(
    conn: Connection,
    role: str,
    host_name: str | None = None,
    label: str | None = None,
    now: datetime | None = None,
    *,
    expires_at: datetime | None = None,
    host_glob: str | None = None,
    max_uses: int | None = None,
    machine_id: str | None = None,
    enrolled_by: int | None = None,
) -> tuple[str, int]:
    """A new token (the only time it exists in clear) and its row id. An enrollment token
    without `expires_at` expires after DEFAULT_ENROLL_TTL."""
    check_request(role, host_name, host_glob=host_glob, max_uses=max_uses)
    now = now or datetime.now(UTC)
    raw = new_token()
    result = conn.execute(
        insert(token).values(
            hash=hash_token(raw),
            role=role,
            host_name=host_name,
            label=label,
            created_at=now,
            expires_at=default_expiry(role, expires_at, now),
            host_glob=host_glob,
            max_uses=max_uses,
            machine_id=machine_id,
            enrolled_by=enrolled_by,
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return raw, int(pk[0])


def read_hosts_file(lines: Iterable[str]) -> list[str]:
    """Host names, one a line: blank lines and `#` comments skipped; TokenError naming the line
    for a name that is not a hostname or that appears twice."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        try:
            check_host_name(name)
        except TokenError as exc:
            raise TokenError(f"line {number}: {exc}") from None
        if name in seen:
            raise TokenError(
                f"line {number}: host {name!r} is already on line {seen[name]}: list each host once"
            )
        seen[name] = number
        names.append(name)
    return names


def create_agent_tokens(
    conn: Connection, host_names: Sequence[str], label: str | None = None, now: datetime | None = None
) -> list[tuple[str, str]]:
    """One agent token per host, in one executemany; returns (host, token) in the given order."""
    for name in host_names:
        check_host_name(name)
    now = now or datetime.now(UTC)
    pairs = [(name, new_token()) for name in host_names]
    if pairs:
        conn.execute(
            insert(token),
            [
                {
                    "hash": hash_token(raw),
                    "role": "agent",
                    "host_name": name,
                    "label": label,
                    "created_at": now,
                }
                for name, raw in pairs
            ],
        )
    return pairs


_COLUMNS = (
    token.c.id,
    token.c.role,
    token.c.host_name,
    token.c.label,
    token.c.created_at,
    token.c.last_used_at,
    token.c.revoked_at,
    token.c.expires_at,
    token.c.host_glob,
    token.c.max_uses,
    token.c.uses,
    token.c.machine_id,
    token.c.enrolled_by,
)


def _info(row: object) -> TokenInfo:
    m = row._mapping  # type: ignore[attr-defined]
    return TokenInfo(**{c.name: m[c.name] for c in _COLUMNS}, host_last_seen_at=m.get("host_last_seen_at"))


def _live(now: datetime) -> ColumnElement[bool]:
    return and_(token.c.revoked_at.is_(None), or_(token.c.expires_at.is_(None), token.c.expires_at > now))


def find_token(conn: Connection, raw: str, now: datetime | None = None) -> TokenInfo | None:
    """The live (neither revoked nor expired) token `raw`, or None."""
    return find_token_by_hash(conn, hash_token(raw), now)


# Built once, parameters bound per call (as app/ingest/write._host_select): every
# authentication that misses app/auth.py's cache runs it, and constructing the statement and
# its cache key per call cost more CPU than SQLite's indexed lookup itself (bench/bench_auth.py).
_LIVE_AT_NOW = and_(
    token.c.revoked_at.is_(None), or_(token.c.expires_at.is_(None), token.c.expires_at > bindparam("now_"))
)
_FIND_BY_HASH = select(*_COLUMNS).where(token.c.hash == bindparam("digest_"), _LIVE_AT_NOW)
# Hashes per query of dead_token_hashes: one parameter each way (below), so only a bound on the
# size of one statement's work.
DEAD_HASHES_CHUNK = 2000


@functools.cache
def _dead_check(dialect: str) -> tuple[Any, Any]:
    """(the count of live rows, the live hashes) among the hashes bound as ONE text parameter
    `hashes_`: comma-separated, split by PostgreSQL (`= ANY(string_to_array(...))`); a JSON list
    through json_each on SQLite. Built once per dialect. An expanding IN of 500 values, rendered
    and parsed per query, cost ~3x the CPU of the whole poll, and psycopg's dumping of a list
    as an array still cost ~4 µs a hash (bench/bench_auth.py)."""
    if dialect == "postgresql":
        among = token.c.hash == any_(func.string_to_array(bindparam("hashes_", type_=String), ","))
    else:  # SQLite, the only other engine
        among = token.c.hash.in_(select(column("value")).select_from(func.json_each(bindparam("hashes_"))))
    count = select(func.count()).select_from(token).where(among, _LIVE_AT_NOW)
    return count, select(token.c.hash).where(among, _LIVE_AT_NOW)


def find_token_by_hash(conn: Connection, digest: str, now: datetime | None = None) -> TokenInfo | None:
    """The live token whose sha256 hex is `digest`, or None (app/auth.py hashes on the event loop)."""
    row = conn.execute(_FIND_BY_HASH, {"digest_": digest, "now_": now or datetime.now(UTC)}).first()
    return _info(row) if row is not None else None


def dead_token_hashes(conn: Connection, digests: Iterable[str], now: datetime | None = None) -> set[str]:
    """Of the tokens whose sha256 hex are `digests`, those with no live row: revoked, expired at
    `now`, or gone. One count per DEAD_HASHES_CHUNK hashes answers the usual case (all live) in
    one row; only a chunk that counts short is listed. app/auth.py forgets what it remembered
    for these. The hash is the token (unique; role and host are written only at creation)."""
    now = now or datetime.now(UTC)
    count_live, live_hashes = _dead_check(conn.dialect.name)
    wanted = sorted(set(digests))
    dead: set[str] = set()
    for start in range(0, len(wanted), DEAD_HASHES_CHUNK):
        chunk = wanted[start : start + DEAD_HASHES_CHUNK]
        # Hex digests: no comma, nothing JSON escapes.
        hashes = ",".join(chunk) if conn.dialect.name == "postgresql" else json.dumps(chunk)
        params = {"hashes_": hashes, "now_": now}
        if conn.execute(count_live, params).scalar_one() == len(chunk):
            continue
        dead.update(set(chunk) - set(conn.execute(live_hashes, params).scalars()))
    return dead


def find_any_token(conn: Connection, raw: str) -> TokenInfo | None:
    """The token `raw` whatever its state (enrollment says why it refuses one)."""
    row = conn.execute(select(*_COLUMNS).where(token.c.hash == hash_token(raw))).first()
    return _info(row) if row is not None else None


def list_tokens(
    conn: Connection,
    *,
    role: str | None = None,
    host_name: str | None = None,
    state: str = "all",
    reported: bool | None = None,
    before_id: int | None = None,
    limit: int = LIST_MAX,
    now: datetime | None = None,
) -> list[TokenInfo]:
    """Tokens, newest first, with the host's last report for agent tokens. `state`: all | live |
    revoked (revoked or expired); `reported`: agent tokens whose host has (True) or has never
    (False) reported; `before_id` is the keyset cursor (ids below it)."""
    now = now or datetime.now(UTC)
    query = (
        select(*_COLUMNS, host.c.last_seen_at.label("host_last_seen_at"))
        .select_from(token.outerjoin(host, and_(token.c.role == "agent", host.c.name == token.c.host_name)))
        .order_by(token.c.id.desc())
        .limit(max(1, min(limit, LIST_MAX)))
    )
    if role is not None:
        query = query.where(token.c.role == role)
    if host_name is not None:
        query = query.where(token.c.host_name == host_name)
    if state == "live":
        query = query.where(_live(now))
    elif state == "revoked":
        query = query.where(~_live(now))
    if reported is not None:
        query = query.where(token.c.role == "agent")
        query = query.where(host.c.id.is_not(None) if reported else host.c.id.is_(None))
    if before_id is not None:
        query = query.where(token.c.id < before_id)
    return [_info(r) for r in conn.execute(query)]


def get_token(conn: Connection, token_id: int) -> TokenInfo | None:
    """One token by id, as list_tokens shows it."""
    found = list_tokens(conn, before_id=token_id + 1, limit=1)
    return found[0] if found and found[0].id == token_id else None


def revoke_token(conn: Connection, token_id: int, now: datetime | None = None) -> bool:
    """Revoke by id; False when there is no live token with that id."""
    result = conn.execute(
        update(token)
        .where(token.c.id == token_id, token.c.revoked_at.is_(None))
        .values(revoked_at=now or datetime.now(UTC))
    )
    return result.rowcount == 1


def live_host_tokens(conn: Connection, host_name: str, now: datetime) -> list[TokenInfo]:
    """The live agent tokens of one host."""
    rows = conn.execute(
        select(*_COLUMNS)
        .where(token.c.host_name == host_name, token.c.role == "agent", _live(now))
        .order_by(token.c.id)
    )
    return [_info(r) for r in rows]


def revoke_host_tokens(conn: Connection, host_name: str, now: datetime | None = None) -> list[int]:
    """Revoke every live agent token of one host; the ids revoked (empty: it had none)."""
    now = now or datetime.now(UTC)
    ids = [t.id for t in live_host_tokens(conn, host_name, now)]
    if ids:
        conn.execute(update(token).where(token.c.id.in_(ids)).values(revoked_at=now))
    return ids


def host_known(conn: Connection, host_name: str) -> bool:
    """A host that reported, or that ever had an agent token (rekey refuses typos)."""
    if conn.execute(select(host.c.id).where(host.c.name == host_name)).first() is not None:
        return True
    found = conn.execute(
        select(token.c.id).where(token.c.host_name == host_name, token.c.role == "agent").limit(1)
    ).first()
    return found is not None


@dataclass(frozen=True, slots=True)
class Rekeyed:
    host_name: str
    token: str
    token_id: int
    revoked: list[int]


def rekey_host(conn: Connection, host_name: str, now: datetime | None = None) -> Rekeyed:
    """Revoke the host's live agent tokens and make it a new one, in one transaction. The new
    token keeps the machine id of the newest revoked one, so a later reinstall of that machine
    may still enroll again."""
    now = now or datetime.now(UTC)
    live = live_host_tokens(conn, host_name, now)
    machine_id = next((t.machine_id for t in reversed(live) if t.machine_id), None)
    revoked = revoke_host_tokens(conn, host_name, now)
    raw, token_id = create_token(
        conn, "agent", host_name, label="rekeyed by an admin", now=now, machine_id=machine_id
    )
    return Rekeyed(host_name, raw, token_id, revoked)


def touch_token(conn: Connection, token_id: int, at: datetime) -> None:
    conn.execute(update(token).where(token.c.id == token_id).values(last_used_at=at))
