"""Bearer tokens to principals: who is asking, and what they may do.

`Authorization: Bearer sw_...` → sha256 hex → a live `token` row → Principal(role, host).
No header, an unknown, revoked or expired token: 401 with `WWW-Authenticate: Bearer`. A role that
may not do this, an agent token of another host, or an enrollment token (#15: it only
enrolls, at POST /api/v1/enroll): 403.

last_used_at is written at most once per `token_touch_interval_s` per token and process, and
through the app's writer (on SQLite the single writer thread), so reads add no write each.

Authentication takes nothing scarce (issue 14: 14 concurrent requests with a bogus token used
to exhaust the connection pool and stall ingest):
- it runs on the event loop; a header that cannot be a splitwatch token is refused there, with
  no thread and no connection;
- a lookup's answer, found or not, is remembered for `token_cache_ttl_s` (keyed by the token's
  hash, at most CACHE_MAX entries), so a flood repeating a token costs one query per TTL;
  a revoked token therefore stops working at most that many seconds later (`forget()` drops
  the cache at once, for a revocation made in this process);
- a lookup that does query runs in a thread, LOOKUP_THREADS at a time (so distinct bogus
  tokens queue as coroutines, not as threads or connections), and returns its connection
  before the route takes one: a request holds at most one pooled connection at a time;
- a database that does not answer is a 503 with Retry-After (app/errors.py), never a 500.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
from sqlalchemy import Connection, Engine

from app.errors import Forbidden, Unauthorized
from app.store.tokens import PREFIX, find_token_by_hash, hash_token, touch_token

READ_ROLES = frozenset({"viewer", "admin"})
CACHE_MAX = 10_000
LOOKUP_THREADS = 4
# What app/store/tokens.new_token makes: "sw_" and url-safe base64.
_TOKEN_SHAPE = re.compile(rf"^{PREFIX}[A-Za-z0-9_-]{{16,197}}$")

Touch = Callable[[Callable[[Connection], None]], None]


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    role: str
    host_name: str | None  # agent tokens only


def _direct_touch(engine: Engine) -> Touch:
    def touch(fn: Callable[[Connection], None]) -> None:
        with engine.begin() as conn:
            fn(conn)

    return touch


def _unknown() -> Unauthorized:
    return Unauthorized(
        "token unknown, revoked or expired: create a new one with `splitwatch token create`",
        code="invalid_token",
    )


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite gives naive UTC


def _check_shape(raw: str | None) -> str:
    if not raw:
        raise Unauthorized(
            "no token: send `Authorization: Bearer <token>` (create one with "
            "`splitwatch token create --role viewer`)",
            code="missing_token",
        )
    if len(raw) > 200:
        raise Unauthorized(
            "token is not a splitwatch token (too long): check the header", code="invalid_token"
        )
    if not _TOKEN_SHAPE.match(raw):
        raise _unknown()
    return raw


class Authenticator:
    def __init__(
        self,
        engine: Engine,
        touch_interval_s: float = 60.0,
        touch: Touch | None = None,
        cache_ttl_s: float = 10.0,
    ) -> None:
        self._engine = engine
        self._interval = touch_interval_s
        self._touch = touch or _direct_touch(engine)
        self._last_touch: dict[int, float] = {}
        self._lock = threading.Lock()
        self._ttl = cache_ttl_s
        # token hash -> (monotonic expiry, the principal or None for "no such live token")
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._limiter: anyio.CapacityLimiter | None = None

    def forget(self) -> None:
        """Drop every remembered lookup (after a revocation made in this process)."""
        with self._lock:
            self._cache.clear()

    def authenticate(self, raw: str | None) -> Principal:
        """From a thread (blocking): the principal of `raw`, or Unauthorized."""
        digest = hash_token(_check_shape(raw))
        cached = self._cached(digest)
        principal = cached[1] if cached is not None else self._lookup(digest)
        return self._accept(principal)

    async def authenticate_async(self, raw: str | None) -> Principal:
        """On the event loop: the cache first; a lookup in one of LOOKUP_THREADS threads."""
        digest = hash_token(_check_shape(raw))
        cached = self._cached(digest)
        if cached is not None:
            return self._accept(cached[1])
        if self._limiter is None:  # created on the loop that uses it
            self._limiter = anyio.CapacityLimiter(LOOKUP_THREADS)
        principal = await anyio.to_thread.run_sync(self._lookup, digest, limiter=self._limiter)
        return self._accept(principal)

    def _cached(self, digest: str) -> tuple[float, Principal | None] | None:
        entry = self._cache.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry

    def _lookup(self, digest: str) -> Principal | None:
        # A second request with the same token may have filled the cache meanwhile.
        cached = self._cached(digest)
        if cached is not None:
            return cached[1]
        with self._engine.connect() as conn:
            info = find_token_by_hash(conn, digest)
        principal = (
            None if info is None else Principal(token_id=info.id, role=info.role, host_name=info.host_name)
        )
        if self._ttl > 0:
            ttl = self._ttl
            if info is not None and info.expires_at is not None:
                # An expiring token is not remembered past its expiry (#15).
                left = (_aware(info.expires_at) - datetime.now(UTC)).total_seconds()
                ttl = max(0.0, min(ttl, left))
            with self._lock:
                if len(self._cache) >= CACHE_MAX:
                    now = time.monotonic()
                    for key in [k for k, (expiry, _p) in self._cache.items() if expiry < now]:
                        del self._cache[key]
                    while len(self._cache) >= CACHE_MAX:  # the oldest entries go first
                        del self._cache[next(iter(self._cache))]
                self._cache[digest] = (time.monotonic() + ttl, principal)
        return principal

    def _accept(self, principal: Principal | None) -> Principal:
        if principal is None:
            raise _unknown()
        if principal.role == "enroll":
            # #15: an enrollment token is traded at POST /api/v1/enroll (app/api/enroll.py, its
            # own check) and authenticates nothing else: it reads and writes nothing.
            raise Forbidden(
                "an enrollment token only enrolls agents (POST /api/v1/enroll): use the agent token "
                "it gave, or a viewer or admin token",
                code="wrong_role",
            )
        self._maybe_touch(principal.token_id)
        return principal

    def _maybe_touch(self, token_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_touch.get(token_id)
            if last is not None and now - last < self._interval:
                return
            self._last_touch[token_id] = now
        at = datetime.now(UTC)
        self._touch(lambda conn: touch_token(conn, token_id, at))


def require_read(principal: Principal) -> Principal:
    if principal.role not in READ_ROLES:
        raise Forbidden(
            f"a {principal.role} token cannot read the API: use a viewer or admin token",
            code="wrong_role",
        )
    return principal


def require_admin(principal: Principal) -> Principal:
    if principal.role != "admin":
        raise Forbidden(
            f"a {principal.role} token cannot change settings: use an admin token "
            "(`splitwatch token create --role admin`)",
            code="wrong_role",
        )
    return principal


def require_agent(principal: Principal) -> str:
    if principal.role != "agent" or not principal.host_name:
        raise Forbidden(
            f"a {principal.role} token cannot send data: use an agent token "
            "(`splitwatch token create --role agent --host NAME`)",
            code="wrong_role",
        )
    return principal.host_name
