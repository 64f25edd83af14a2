"""FastAPI dependencies as Annotated aliases, one import for every router.

SettingsDep   the app's Settings
EngineDep     the app's Engine
ConnDep       a Core Connection for this request (read-only use; closed, and any
              transaction rolled back, when the request ends). Writes go through
              WriterDep so SQLite keeps one writer. It authenticates first (issue 14):
              whatever the order of a route's parameters, a request without a valid token
              is refused before it takes a connection, and the token lookup has returned
              its own connection by then. A route using ConnDep therefore needs a token.
WriterDep     the app's writer (app/ingest/writer.py): `await writer.run(fn)` runs
              fn(conn) in a write transaction
PrincipalDep  any valid token (resolved on the event loop: app/auth.py)
ViewerDep     a viewer or admin token (reads)
AdminDep      an admin token
AgentDep      an agent token: the value is the host name it may write
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine
from starlette.types import Scope

from app.auth import Authenticator, Principal, require_admin, require_agent, require_read
from app.ingest.writer import Writer
from app.settings import Settings

# Dependencies that only read app.state or check a role are `async`: FastAPI would run a plain
# `def` in the threadpool, a thread hop per request for nothing.
_bearer = HTTPBearer(auto_error=False, description="A splitwatch token: `splitwatch token create`")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_writer(request: Request) -> Writer:
    writer: Writer = request.app.state.writer
    return writer


async def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    auth: Authenticator = request.app.state.auth
    return await auth.authenticate_async(credentials.credentials if credentials is not None else None)


async def authenticate_agent(request: Request) -> str:
    """AgentDep's value computed by direct calls, for a route served without FastAPI's
    dependency solving (app/api/ingest.py): the same steps, the same errors, the same order.
    The header is read as `_bearer` reads it (bearer_credentials), without the Headers
    mapping and the credentials model built for every request (#13: a few µs of the event
    loop's time per ingest request)."""
    auth: Authenticator = request.app.state.auth
    principal = await auth.authenticate_async(bearer_credentials(_authorization(request.scope)))
    return require_agent(principal)


def _authorization(scope: Scope) -> str | None:
    """The first Authorization header, as Starlette's `request.headers.get` gives it."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


def bearer_credentials(authorization: str | None) -> str | None:
    """The token of an Authorization header, or None: what `_bearer` (FastAPI's HTTPBearer
    with auto_error off) answers, as its credentials, for the same header."""
    if not authorization:
        return None
    scheme, _, param = authorization.partition(" ")
    credentials = param.strip()
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


async def get_conn(
    request: Request, _principal: Annotated[Principal, Depends(get_principal)]
) -> AsyncIterator[Connection]:
    # A request waits for a read slot as a coroutine, BEFORE it takes a connection: there are
    # no more slots than connections, so the pool never makes a thread wait, and a request that
    # holds a connection never waits for a thread that a connection-waiter holds (with a
    # connection taken in one threadpool hop and the route run in the next, a burst of readers
    # took every connection and then every thread, and all waited out the pool timeout).
    slots: anyio.CapacityLimiter = request.app.state.read_slots
    engine: Engine = request.app.state.engine
    async with slots:
        conn = await anyio.to_thread.run_sync(engine.connect)
        try:
            yield conn
        finally:
            # Its own limiter, as FastAPI does for a dependency's exit: returning a connection
            # never waits for a busy threadpool; shielded, so a cancelled request (the client
            # hung up) still returns it to the pool.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=anyio.CapacityLimiter(1))


async def get_viewer(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    return require_read(principal)


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    return require_admin(principal)


async def get_agent_host(principal: Annotated[Principal, Depends(get_principal)]) -> str:
    return require_agent(principal)


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ConnDep = Annotated[Connection, Depends(get_conn)]
WriterDep = Annotated[Writer, Depends(get_writer)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
ViewerDep = Annotated[Principal, Depends(get_viewer)]
AdminDep = Annotated[Principal, Depends(get_admin)]
AgentDep = Annotated[str, Depends(get_agent_host)]
