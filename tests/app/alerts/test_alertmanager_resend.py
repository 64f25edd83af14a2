"""The minute's re-post of the firing alerts to an Alertmanager API target (app/alerts/outbox.py)
covers every one of them, however many fire: an alert left out of it is one Alertmanager resolves
by itself after its resolve_timeout while it still fires here. A mass outage opens an AgentSilent
per host, more than one post holds. Real database, real evaluator, a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine

from app.alerts.outbox import Sender
from app.settings import Settings
from app.store import alerting as store
from tests.app.alerts.conftest import Receiver
from tests.app.alerts.test_evaluate import NOW, ingest, run
from tests.app.ingest.payloads import state

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SILENT = 1000  # the most AgentSilent alerts one evaluation opens (MAX_FINDINGS_PER_RULE)
DRIFTING = 5


@pytest.fixture
def am(settings: Settings) -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def test_every_firing_alert_is_re_posted_to_alertmanager_past_a_thousand(
    engine: Engine, settings: Settings, am: Receiver
) -> None:
    cfg = settings.model_copy(update={"webhook_allow_private": True, "public_url": "https://sw.example.com"})
    target = {"url": am.url, "format": "alertmanager_api", "secret": "", "match": {}, "enabled": True}
    with engine.begin() as conn:
        store.insert_webhook(conn, target, NOW)
    for i in range(SILENT):
        ingest(engine, st=state(NOW), host=f"kvm-{i:04d}")
    later = NOW + timedelta(seconds=399)  # the drifting hosts still report: not silent
    for i in range(DRIFTING):
        ingest(engine, st=state(later, verdict="drift", reason="cpu 2 off"), host=f"drift-{i}", at=later)
    run(engine, cfg, NOW + timedelta(seconds=400))

    async def resend() -> int:
        async with httpx.AsyncClient() as client:
            return await Sender(engine, None, cfg, None).resend_to_alertmanager(client)

    assert asyncio.run(resend()) == SILENT + DRIFTING
    posted = [a["labels"] for body in am.bodies() for a in body]
    assert len(am.requests) == 2 and all(r.path == "/hook/api/v2/alerts" for r in am.requests)
    assert sorted(x["host"] for x in posted) == sorted(
        [f"kvm-{i:04d}" for i in range(SILENT)] + [f"drift-{i}" for i in range(DRIFTING)]
    )
    assert {x["alertname"] for x in posted} == {"AgentSilent", "HostInconsistent"}
