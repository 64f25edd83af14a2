"""Liveness and readiness, no token: /healthz (the process answers) and /readyz (the
database answers and is at the migration head; else 503 with the reason)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from app.deps import EngineDep
from app.errors import NotReady, error_responses
from app.store.schema_check import schema_status

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    revision: str


@router.get("/healthz", operation_id="healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", operation_id="readyz", response_model=Ready, responses=error_responses(503))
async def readyz(engine: EngineDep) -> Ready:
    status = await run_in_threadpool(schema_status, engine)
    if not status.ok:
        raise NotReady(status.message, code="database_not_ready")
    return Ready(status="ready", revision=status.head)
