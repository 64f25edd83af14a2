"""Bearer tokens to principals: who is asking, and what they may do.

`Authorization: Bearer sw_...` → sha256 hex → a live `token` row → Principal(role, host).
No header, an unknown, revoked or expired token: 401 with `WWW-Authenticate: Bearer`. A role that
may not do this, an agent token of another host, or an enrollment token (#15: it only
enrolls, at POST /api/v1/enroll): 403.

last_used_at is written at most once per `token_touch_interval_s` per token and process, and
through the app's writer (on SQLite the single writer thread), so reads add no write each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from app.errors import Forbidden, Unauthorized
from app.store.tokens import find_token, touch_token

READ_ROLES = frozenset({"viewer", "admin"})

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


class Authenticator:
    def __init__(self, engine: Engine, touch_interval_s: float = 60.0, touch: Touch | None = None) -> None:
        self._engine = engine
        self._interval = touch_interval_s
        self._touch = touch or _direct_touch(engine)
        self._last_touch: dict[int, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, raw: str | None) -> Principal:
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
        with self._engine.connect() as conn:
            info = find_token(conn, raw)
        if info is None:
            raise Unauthorized(
                "token unknown, revoked or expired: create a new one with `splitwatch token create`",
                code="invalid_token",
            )
        if info.role == "enroll":
            # #15: an enrollment token is traded at POST /api/v1/enroll (app/api/enroll.py, its
            # own check) and authenticates nothing else: it reads and writes nothing.
            raise Forbidden(
                "an enrollment token only enrolls agents (POST /api/v1/enroll): use the agent token "
                "it gave, or a viewer or admin token",
                code="wrong_role",
            )
        self._maybe_touch(info.id)
        return Principal(token_id=info.id, role=info.role, host_name=info.host_name)

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
