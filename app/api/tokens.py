"""Tokens over HTTP (#15): config management makes and revokes tokens without a shell on the
database host; an admin re-keys or revokes one host's agent token; any token asks who it is.

    POST   /api/v1/tokens               admin: a viewer, agent, admin or enroll token (shown once)
    GET    /api/v1/tokens               admin: newest first, never the secrets; keyset pages
    DELETE /api/v1/tokens/{id}          admin: revoke
    POST   /api/v1/hosts/{name}/token   admin: rekey (revoke the host's agent tokens, make one)
    DELETE /api/v1/hosts/{name}/token   admin: revoke the host's agent tokens
    GET    /api/v1/whoami               any token: its id, role and host (the dashboard shows
                                        the admin page only to an admin token)

Writes go through the app's writer (one SQLite writer).
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from app.api.models import NAME_MAX, NAME_PATTERN, NameInPath
from app.deps import AdminDep, ConnDep, PrincipalDep, WriterDep
from app.errors import InvalidInput, NotFound, error_responses
from app.store import tokens as store

router = APIRouter(prefix="/api/v1", tags=["tokens"])

Role = Literal["agent", "viewer", "admin", "enroll"]
PAGE_DEFAULT = 1000


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    host: str | None = Field(
        None, description="Agent tokens: the one host they write.", max_length=NAME_MAX, pattern=NAME_PATTERN
    )
    label: str | None = Field(None, description="A note: who or what uses it.", max_length=255)
    host_glob: str | None = Field(
        None,
        description="Enrollment tokens: host names that may enroll with it (shell glob, e.g. `kvm-*`).",
        max_length=NAME_MAX,
    )
    expires_in: str | None = Field(
        None,
        description="Lifetime: `90s`, `30m`, `12h`, `7d`, `2w`. Enrollment tokens default to 24h; "
        "other tokens do not expire unless given one.",
        max_length=32,
    )
    max_uses: int | None = Field(None, description="Enrollment tokens: how many hosts may enroll with it.")


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: int
    role: str
    host: str | None = Field(validation_alias="host_name")
    label: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    expires_at: dt.datetime | None
    host_glob: str | None
    max_uses: int | None
    uses: int = Field(description="Enrollment tokens: hosts enrolled with it so far.")
    machine_id: str | None = Field(description="Agent tokens issued by enrollment: the host's machine id.")
    enrolled_by: int | None = Field(
        description="Agent tokens issued by enrollment: the enrollment token's id."
    )
    host_last_seen_at: dt.datetime | None = Field(
        None, description="Agent tokens: the host's last report; null when it never reported."
    )


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown only in this answer, stored only as its hash.")
    replaced: list[int] = Field(default_factory=list, description="Tokens this one replaced (revoked).")


class TokenList(BaseModel):
    items: list[TokenOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )


class HostTokensRevoked(BaseModel):
    host: str
    revoked: list[int]


class WhoAmI(BaseModel):
    token_id: int
    role: str
    host: str | None


def created(conn: Connection, token_id: int, raw: str, replaced: list[int] | None = None) -> TokenCreated:
    """The answer for a token made in this transaction."""
    info = store.get_token(conn, token_id)
    assert info is not None, f"token #{token_id} vanished inside its own transaction"
    return TokenCreated(**TokenOut.model_validate(info).model_dump(), token=raw, replaced=replaced or [])


def _create(conn: Connection, body: TokenCreate, expires_at: dt.datetime | None) -> TokenCreated:
    raw, token_id = store.create_token(
        conn,
        body.role,
        body.host,
        body.label,
        expires_at=expires_at,
        host_glob=body.host_glob,
        max_uses=body.max_uses,
    )
    return created(conn, token_id, raw)


@router.post(
    "/tokens",
    operation_id="create_token",
    status_code=201,
    response_model=TokenCreated,
    responses=error_responses(400, 401, 403, 422),
    summary="Create a token (shown once in the answer, stored hashed)",
)
async def create_token(body: TokenCreate, _admin: AdminDep, writer: WriterDep) -> TokenCreated:
    now = dt.datetime.now(dt.UTC)
    try:
        store.check_request(body.role, body.host, host_glob=body.host_glob, max_uses=body.max_uses)
        expires_at = now + store.parse_duration(body.expires_in) if body.expires_in is not None else None
    except store.TokenError as exc:
        raise InvalidInput(str(exc), code="invalid_token_request") from None
    return await writer.run(partial(_create, body=body, expires_at=expires_at))


@router.get(
    "/tokens",
    operation_id="list_tokens",
    response_model=TokenList,
    responses=error_responses(401, 403, 422),
    summary="List tokens, newest first (never the tokens themselves)",
)
def list_tokens(
    conn: ConnDep,
    _admin: AdminDep,
    role: Annotated[Role | None, Query(description="Only tokens of this role.")] = None,
    host: Annotated[
        str | None,
        Query(
            description="Only agent tokens of this host.",
            min_length=1,
            max_length=NAME_MAX,
            pattern=NAME_PATTERN,
        ),
    ] = None,
    state: Annotated[
        Literal["all", "live", "revoked"], Query(description="live, revoked (or expired), or all.")
    ] = "all",
    reported: Annotated[
        bool | None,
        Query(description="Agent tokens whose host has reported (true) or never reported (false)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=store.LIST_MAX)] = PAGE_DEFAULT,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page.", max_length=20)
    ] = None,
) -> TokenList:
    before_id = None
    if cursor is not None:
        if not cursor.isdigit() or not 0 < int(cursor) < 2**31:
            raise InvalidInput(
                f"cursor {cursor!r} is not one this server gave out: pass next_cursor unchanged, or omit it",
                code="invalid_cursor",
            )
        before_id = int(cursor)
    items = store.list_tokens(
        conn, role=role, host_name=host, state=state, reported=reported, before_id=before_id, limit=limit + 1
    )
    more = len(items) > limit
    items = items[:limit]
    return TokenList(
        items=[TokenOut.model_validate(t) for t in items],
        next_cursor=str(items[-1].id) if more and items else None,
    )


@router.delete(
    "/tokens/{token_id}",
    operation_id="revoke_token",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
    summary="Revoke a token: it stops working at once",
)
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], _admin: AdminDep, writer: WriterDep, request: Request
) -> Response:
    if not await writer.run(partial(store.revoke_token, token_id=token_id)):
        raise NotFound(
            f"no live token #{token_id}: GET /api/v1/tokens lists them (it may be revoked already)",
            code="token_not_found",
        )
    _forget_lookups(request)
    return Response(status_code=204)


def _forget_lookups(request: Request) -> None:
    # This process drops its remembered token lookups at once; other processes at their next
    # revocation poll, SPLITWATCH_TOKEN_REVOCATION_POLL_S (app/auth.py).
    request.app.state.auth.forget()


def _rekey(conn: Connection, name: str) -> TokenCreated:
    if not store.host_known(conn, name):
        raise NotFound(
            f"host {name!r} has neither reported nor had an agent token: check the name, or create "
            "its first token with POST /api/v1/tokens (role agent)",
            code="host_not_found",
        )
    rekeyed = store.rekey_host(conn, name)
    return created(conn, rekeyed.token_id, rekeyed.token, rekeyed.revoked)


@router.post(
    "/hosts/{name}/token",
    operation_id="rekey_host",
    status_code=201,
    response_model=TokenCreated,
    responses=error_responses(401, 403, 404, 422),
    summary="Re-key one host: revoke its agent tokens and make a new one (shown once)",
)
async def rekey_host(name: NameInPath, _admin: AdminDep, writer: WriterDep, request: Request) -> TokenCreated:
    answer = await writer.run(partial(_rekey, name=name))
    _forget_lookups(request)
    return answer


@router.delete(
    "/hosts/{name}/token",
    operation_id="revoke_host_token",
    response_model=HostTokensRevoked,
    responses=error_responses(401, 403, 404, 422),
    summary="Revoke one host's agent tokens (it may then enroll again, as any machine)",
)
async def revoke_host_token(
    name: NameInPath, _admin: AdminDep, writer: WriterDep, request: Request
) -> HostTokensRevoked:
    revoked = await writer.run(partial(store.revoke_host_tokens, host_name=name))
    _forget_lookups(request)
    if not revoked:
        raise NotFound(
            f"host {name!r} has no live agent token: GET /api/v1/tokens?role=agent lists them",
            code="token_not_found",
        )
    return HostTokensRevoked(host=name, revoked=revoked)


@router.get(
    "/whoami",
    operation_id="whoami",
    response_model=WhoAmI,
    responses=error_responses(401, 403),
    summary="The token's own id, role and host",
)
def whoami(principal: PrincipalDep) -> WhoAmI:
    return WhoAmI(token_id=principal.token_id, role=principal.role, host=principal.host_name)
