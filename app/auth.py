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
- a lookup's answer is remembered per process, keyed by the token's hash, at most CACHE_MAX
  entries: a live token for `token_cache_ttl_s` (300 s; never past its `expires_at`), so an
  agent sending every 10 s costs one query per TTL, not one per request (#13); an unknown token
  for `token_negative_ttl_s` (10 s), so a flood repeating a bogus token costs one query per TTL
  and a token created by another process works within that time;
- a lookup that does query runs in a thread, LOOKUP_THREADS at a time (so distinct bogus
  tokens queue as coroutines, not as threads or connections), and returns its connection
  before the route takes one: a request holds at most one pooled connection at a time;
- a database that does not answer is a 503 with Retry-After (app/errors.py), never a 500.

Revocation (the contract an operator relies on):
- in the process that revoked (DELETE /api/v1/tokens/{id}, rekey): at once (`forget()`);
- in every other process and replica: within `token_revocation_poll_s` (5 s) plus one query's
  time. Each process runs one poller (`start()`/`stop()`, from the app's lifespan) that asks the
  database every interval which of the tokens it remembers are no longer live, and forgets them:
  a query per 2,000 remembered tokens per interval, none when it remembers none, never one per
  request.
- The poll re-checks the remembered tokens themselves (`dead_token_hashes`: of these hashes,
  which have no live row) rather than asking "revoked since the last poll": revoked_at is written
  with the revoking replica's clock and committed some time after it is taken, so a watermark on
  it misses a revocation whose clock lags ours or whose transaction commits after the poll read
  past it. Re-checking needs no clock agreement and also catches a token that expired, or whose
  row was deleted by hand. It costs one count per 2,000 remembered tokens per interval (an
  index probe per token in the database, one row back, the hashes sent as one parameter) while
  all are live; a chunk that counts short is listed to find which. (A token's role and host are
  written only at its creation, so a live hash still means the same principal.)
- A poll that fails (database down, pool exhausted) changes nothing and is retried at the next
  interval; the first failure of a streak logs a warning, the recovery an info line. While polls
  fail, a remembered token keeps working until its own TTL (`token_cache_ttl_s` after its
  lookup) and is then looked up again: a process that cannot reach the database honours a
  revocation made elsewhere at most `token_cache_ttl_s` late, and then answers 503 for that
  token until the database is back (it cannot tell live from revoked). That process cannot
  ingest anything in the meantime either (writes need the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
from sqlalchemy import Connection, Engine

from app.background import finish
from app.errors import Forbidden, Unauthorized
from app.store.tokens import PREFIX, dead_token_hashes, find_token_by_hash, hash_token, touch_token

log = logging.getLogger("splitwatch")

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
        cache_ttl_s: float = 300.0,
        negative_ttl_s: float = 10.0,
        revocation_poll_s: float = 5.0,
    ) -> None:
        self._engine = engine
        self._interval = touch_interval_s
        self._touch = touch or _direct_touch(engine)
        self._last_touch: dict[int, float] = {}
        self._lock = threading.Lock()
        self._ttl = cache_ttl_s
        self._negative_ttl = min(negative_ttl_s, cache_ttl_s)  # 0 TTL: nothing remembered at all
        self._poll_s = revocation_poll_s
        # token hash -> (monotonic expiry, the principal or None for "no such live token")
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # Bumped by forget(): a lookup that read the database before a forget() does not
        # remember its (maybe revoked) answer after it.
        self._generation = 0
        self._limiter: anyio.CapacityLimiter | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failed_in_a_row = 0
        self.polls = 0  # polls the database answered (tests, diagnostics)
        self.poll_failures = 0

    def forget(self) -> None:
        """Drop every remembered lookup (after a revocation made in this process)."""
        with self._lock:
            self._cache.clear()
            self._generation += 1

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
        generation = self._generation
        with self._engine.connect() as conn:
            info = find_token_by_hash(conn, digest)
        principal = (
            None if info is None else Principal(token_id=info.id, role=info.role, host_name=info.host_name)
        )
        ttl = self._ttl if info is not None else self._negative_ttl
        if info is not None and info.expires_at is not None:
            # An expiring token is not remembered past its expiry (#15).
            left = (_aware(info.expires_at) - datetime.now(UTC)).total_seconds()
            ttl = min(ttl, left)
        if ttl > 0:
            with self._lock:
                if generation != self._generation:
                    return principal  # forgotten while we looked: answer, remember nothing
                if len(self._cache) >= CACHE_MAX:
                    now = time.monotonic()
                    for key in [k for k, (expiry, _p) in self._cache.items() if expiry < now]:
                        del self._cache[key]
                    while len(self._cache) >= CACHE_MAX:  # the oldest entries go first
                        del self._cache[next(iter(self._cache))]
                self._cache[digest] = (time.monotonic() + ttl, principal)
        return principal

    # ------------------------------------------------------------------ revocation poller

    def poll_once(self) -> int | None:
        """Blocking: forget every remembered token that is no longer live in the database
        (revoked, expired or gone), and every expired entry. Returns how many live-token
        entries were forgotten, or None when the database did not answer (nothing changes, a
        warning is logged on the first failure of a streak); never raises for a database error."""
        with self._lock:
            remembered = {d: e for d, e in self._cache.items() if e[1] is not None}
        if not remembered:
            return 0
        try:
            with self._engine.connect() as conn:
                dead = dead_token_hashes(conn, remembered)
        except Exception as exc:  # any database failure: the next poll tries again
            self.poll_failures += 1
            self._failed_in_a_row += 1
            if self._failed_in_a_row == 1:
                # The driver's words: SQLAlchemy's own text repeats the statement and its parameters.
                log.warning(
                    "token revocation poll failed (%s): remembered tokens stay trusted for at most "
                    "%.0f s after their lookup while it keeps failing; retrying every %.0f s",
                    getattr(exc, "orig", None) or exc,
                    self._ttl,
                    self._poll_s,
                )
            return None
        if self._failed_in_a_row:
            log.info("token revocation poll answered again after %d failed polls", self._failed_in_a_row)
            self._failed_in_a_row = 0
        self.polls += 1
        now = time.monotonic()
        forgotten = 0
        with self._lock:
            for digest in dead:
                if self._cache.get(digest) is remembered[digest]:  # not looked up again meanwhile
                    del self._cache[digest]
                    forgotten += 1
            for key in [k for k, (expiry, _p) in self._cache.items() if expiry < now]:
                del self._cache[key]
        return forgotten

    @property
    def polling(self) -> bool:
        """The revocation poller runs (between the app's startup and shutdown)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the revocation poller on the running event loop (the app's lifespan); nothing
        when polling is off or nothing is remembered (`token_revocation_poll_s` or
        `token_cache_ttl_s` 0)."""
        if self._poll_s <= 0 or self._ttl <= 0:
            return
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._poll_loop(), name="splitwatch-token-revocation-poll")

    async def stop(self) -> None:
        """Stop the poller; a poll under way finishes first (one short query)."""
        self._stop.set()
        await finish(self._task, timeout=5)
        self._task = None

    async def _poll_loop(self) -> None:
        # On the event loop, its query in a worker thread (one at a time): the timer costs the
        # loop nothing, stop() ends it with the app (a daemon thread would outlive a stopped app
        # in tests and could hold a connection while the engine is disposed), and the loop
        # never waits for the database.
        limiter = anyio.CapacityLimiter(1)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._poll_s)
            if self._stop.is_set():
                return
            try:
                await anyio.to_thread.run_sync(self.poll_once, limiter=limiter)
            except Exception:  # a bug, not the database (poll_once keeps those): keep polling
                log.exception("token revocation poll crashed; retrying in %.0f s", self._poll_s)

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
