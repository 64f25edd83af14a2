"""An outage's notices reach a webhook one after another, as fast as the receiver answers, not
one per poll of the sender (app/alerts/outbox.py): at one a second, a 1,000-host outage took
~17 minutes to reach the receiver, and a critical alert written behind it waited as long.
Real database, real evaluator and writer, a real receiver on 127.0.0.1; the sender's poll is
set to an hour, so only the sender's own wake-ups can deliver more than the first notice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select

from app.alerts import outbox
from app.alerts.outbox import Sender
from app.ingest.writer import make_writer
from app.settings import Settings
from app.store import alerting as store
from app.store.tables import webhook_delivery
from tests.app.alerts.conftest import POLL_BOUND_S, Receiver
from tests.app.alerts.test_evaluate import NOW, ingest, run
from tests.app.ingest.payloads import state

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SILENT = 60


class Leading:
    def held(self) -> bool:
        return True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def test_an_outage_reaches_the_receiver_without_waiting_a_poll_per_notice(
    engine: Engine, settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = settings.model_copy(
        update={
            "webhook_allow_private": True,
            "public_url": "https://sw.example.com",
            "alert_interval": 3600.0,
        }
    )
    monkeypatch.setattr(outbox, "SENDER_POLL_S", 3600.0)
    hook = {"url": receiver.url, "format": "alertmanager", "secret": "whsec_" + "A" * 32, "match": {}}
    with engine.begin() as conn:
        store.insert_webhook(conn, {**hook, "enabled": True}, NOW)
    before = NOW - timedelta(seconds=400)  # the notices are due now, not in the future
    for i in range(SILENT):
        ingest(engine, st=state(before), host=f"kvm-{i:03d}", at=before)
    run(engine, cfg, NOW)
    with engine.connect() as conn:
        pending = conn.execute(
            select(func.count()).select_from(webhook_delivery).where(webhook_delivery.c.status == "pending")
        ).scalar()
    assert pending == SILENT

    async def deliver_all() -> bool:
        writer = make_writer(engine)
        writer.start()
        stop, wake = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(Sender(engine, writer, cfg, Leading()).run(stop, wake))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POLL_BOUND_S  # liveness only: old code waits an hour per notice
        while len(receiver.requests) < SILENT and loop.time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        writer.stop()
        return len(receiver.requests) == SILENT

    assert asyncio.run(deliver_all()), f"{len(receiver.requests)} of {SILENT} notices delivered"
    hosts = [json.loads(r.body)["alerts"][0]["labels"]["host"] for r in receiver.requests]
    assert sorted(hosts) == [f"kvm-{i:03d}" for i in range(SILENT)]  # each once
    with engine.connect() as conn:
        statuses = conn.execute(
            select(webhook_delivery.c.status, func.count()).group_by(webhook_delivery.c.status)
        ).all()
    assert dict(statuses) == {"delivered": SILENT}
