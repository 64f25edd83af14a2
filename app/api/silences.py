"""/api/v1/silences: matchers and an expiry; a silenced alert sends nothing (issue 12).
Viewers read; admins create and expire (DELETE ends a silence now and keeps it on record)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import Connection

from app.api.alert_models import Silence, SilenceCreate, SilenceList
from app.api.models import EARLIEST, LATEST
from app.deps import AdminDep, ConnDep, ViewerDep, WriterDep
from app.errors import InvalidInput, NotFound, error_responses
from app.store import alerting as store

router = APIRouter(prefix="/api/v1", tags=["alerts"])

SilenceId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _not_found(silence_id: int) -> NotFound:
    return NotFound(
        f"silence {silence_id} does not exist: GET /api/v1/silences lists them", code="silence_not_found"
    )


def _utc(at: dt.datetime) -> dt.datetime:
    at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    return min(max(at, EARLIEST), LATEST)


@router.get(
    "/silences",
    operation_id="list_silences",
    response_model=SilenceList,
    responses=error_responses(401, 403, 422),
    summary="Silences, newest first",
)
def list_silences(
    conn: ConnDep,
    _viewer: ViewerDep,
    active: Annotated[
        bool | None, Query(description="true: only those in force now; false: only the others.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SilenceList:
    items = store.list_silences(conn, active=active, limit=limit, now=dt.datetime.now(dt.UTC))
    return SilenceList.model_validate({"items": items})


@router.get(
    "/silences/{silence_id}",
    operation_id="get_silence",
    response_model=Silence,
    responses=error_responses(401, 403, 404, 422),
    summary="One silence",
)
def get_silence(silence_id: SilenceId, conn: ConnDep, _viewer: ViewerDep) -> Silence:
    view = store.get_silence(conn, silence_id, dt.datetime.now(dt.UTC))
    if view is None:
        raise _not_found(silence_id)
    return Silence.model_validate(view)


@router.post(
    "/silences",
    operation_id="create_silence",
    response_model=Silence,
    status_code=201,
    responses=error_responses(400, 401, 403, 422),
    summary="Silence the alerts whose labels match, until ends_at (admin)",
)
async def create_silence(body: SilenceCreate, writer: WriterDep, admin: AdminDep) -> Silence:
    now = dt.datetime.now(dt.UTC)
    starts = _utc(body.starts_at) if body.starts_at is not None else now
    if (body.ends_at is None) == (body.duration is None):
        raise InvalidInput(
            'give exactly one of ends_at and duration (e.g. "duration": "2h")', code="invalid_silence"
        )
    ends = (
        _utc(body.ends_at) if body.ends_at is not None else starts + dt.timedelta(seconds=body.duration or 0)
    )
    if ends <= starts or ends <= now:
        raise InvalidInput(
            f"the silence would end at {ends.isoformat()}, not after it starts and not in the future: "
            "give a later ends_at or a positive duration",
            code="invalid_silence",
        )
    values = {
        "matchers": body.matchers,
        "starts_at": starts,
        "ends_at": ends,
        "created_by": f"token #{admin.token_id}",
        "comment": body.comment,
        "created_at": now,
    }

    def _create(conn: Connection) -> dict[str, object] | None:
        return store.get_silence(conn, store.insert_silence(conn, values), now)

    view = await writer.run(_create)
    return Silence.model_validate(view)


@router.delete(
    "/silences/{silence_id}",
    operation_id="expire_silence",
    response_model=Silence,
    responses=error_responses(401, 403, 404, 422),
    summary="Expire a silence now (it stays on record) (admin)",
)
async def expire_silence(silence_id: SilenceId, writer: WriterDep, _admin: AdminDep) -> Silence:
    now = dt.datetime.now(dt.UTC)

    def _expire(conn: Connection) -> dict[str, object] | None:
        if not store.expire_silence(conn, silence_id, now):
            return None
        return store.get_silence(conn, silence_id, now)

    view = await writer.run(_expire)
    if view is None:
        raise _not_found(silence_id)
    return Silence.model_validate(view)
