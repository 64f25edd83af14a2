"""POST /api/v1/enroll: an agent trades the fleet's enrollment token for its own agent token (#15).

Bearer enrollment token; body {"host", "boot_id", "machine_id"}; answer 201 with the agent
token bound to `host` (shown once: the agent keeps it 0600 in its state directory). Refusals
carry their reason: 401 unknown, revoked or expired; 403 not an enrollment token, exhausted,
or a host name outside the token's glob; 409 a name another machine holds (with the admin's
remedy). The token is checked on a read connection first, so a refused request never waits
for the writer; the write (app/store/enrollment.py) checks again, atomically.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool

from app.api.tokens import TokenCreated, created
from app.deps import EngineDep, WriterDep
from app.errors import Unauthorized, error_responses
from app.ingest.schema import BootId, HostName
from app.store import enrollment
from app.store.tokens import find_any_token

router = APIRouter(prefix="/api/v1", tags=["enroll"])

_bearer = HTTPBearer(
    auto_error=False, description="An enrollment token: `splitwatch token create --role enroll`"
)


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: HostName = Field(description="The hostname the agent reports (proc/sys/kernel/hostname).")
    boot_id: BootId = Field(description="proc/sys/kernel/random/boot_id.")
    machine_id: str | None = Field(
        None,
        description="/etc/machine-id (32 hex digits), when the host has one: a reinstall of the same "
        "machine may enroll again under its name.",
        pattern=r"^[0-9a-f]{32}$",
    )


def _precheck(engine: Engine, raw: str, host_name: str) -> None:
    with engine.connect() as conn:
        info = find_any_token(conn, raw)
    enrollment.check_enrollment(info, host_name, dt.datetime.now(dt.UTC))


def _enroll(conn: Connection, raw: str, body: EnrollRequest) -> TokenCreated:
    done = enrollment.enroll(conn, raw, body.host, body.machine_id)
    return created(conn, done.token_id, done.token, done.replaced)


@router.post(
    "/enroll",
    operation_id="enroll",
    status_code=201,
    response_model=TokenCreated,
    responses=error_responses(400, 401, 403, 409, 422),
    summary="Trade an enrollment token for this host's own agent token",
)
async def enroll(
    body: EnrollRequest,
    engine: EngineDep,
    writer: WriterDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenCreated:
    raw = credentials.credentials if credentials is not None else ""
    if not raw or len(raw) > 200:
        raise Unauthorized(
            "no enrollment token: send `Authorization: Bearer <enrollment token>` (an admin makes one "
            "with `splitwatch token create --role enroll`)",
            code="missing_token",
        )
    await run_in_threadpool(_precheck, engine, raw, body.host)
    return await writer.run(partial(_enroll, raw=raw, body=body))
