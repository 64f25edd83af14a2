"""The backend's own outage is no host's silence, in every view (#13).

While every `serve` process, or the database, is down, no batch is stored: afterwards every host
looks silent for the outage's length. The evaluator loop of the first process back sees the break
(no process reached the database for longer than the lease's time) and writes it down; the status
rule behind the host list, the summary's Silent card and /metrics (which Prometheus's AgentSilent
reads) leaves it out, as the built-in AgentSilent already did.

The outage is real: the server stops, and the time that passes while it is down is written into
the rows that time moves (the hosts' last report, the lease's renewal and hearing), as the tests of the
status rule already move `last_seen_at`.
"""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import Engine, Table, select, update

from app.settings import Settings
from app.store.backend_break import recent_breaks
from app.store.engine import make_engine
from app.store.tables import alert_lease, backend_break, host
from tests.app.alerts.conftest import poll
from tests.app.conftest import Server, Tokens
from tests.app.fill import T0, Filler, state
from tests.app.test_metrics import key, samples

RANGE = {"since": "2026-11-24T12:00:00Z", "until": "2026-11-24T15:00:00Z"}
OUTAGE = dt.timedelta(minutes=10)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


def lease_taken(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(alert_lease).where(alert_lease.c.name == "alerting")).first() is not None


def earlier(engine: Engine, table: Table, columns: tuple[str, ...], by: dt.timedelta, **where: str) -> None:
    """Move the times in `columns` back by `by` (SQLite keeps times as text: no SQL arithmetic).
    Read, then written in a transaction of UPDATEs alone: one that read first could not wait for
    a running server's writer on SQLite (a read transaction cannot become a write one)."""
    key = next(iter(table.primary_key.columns))
    query = select(key, *(table.c[c] for c in columns))
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    with engine.begin() as conn:
        for row in rows:
            moved = {c: row._mapping[c] - by for c in columns if row._mapping[c] is not None}
            if moved:
                conn.execute(update(table).where(key == row[0]).values(**moved))


def down_for(settings: Settings, server: Server, outage: dt.timedelta, quiet_before: dict[str, int]) -> None:
    """Stop the server, let `outage` pass while it is down, start it again. Hosts named in
    `quiet_before` had already stopped reporting that many minutes before the outage began."""
    engine = make_engine(settings.database_url)
    poll(lambda: lease_taken(engine), "the server's first evaluation")
    server.stop()
    # Everything that happened before the outage happened `outage` earlier than the clock says.
    earlier(engine, alert_lease, ("renewed_at", "expires_at", "heard_at"), outage)
    earlier(engine, host, ("last_seen_at",), outage)
    for name, minutes in quiet_before.items():
        earlier(engine, host, ("last_seen_at",), dt.timedelta(minutes=minutes), name=name)
    server.start()

    def recorded() -> bool:
        with engine.connect() as conn:
            return recent_breaks(conn, dt.datetime.now(dt.UTC)) != ()

    poll(recorded, "the first evaluation after the outage records the break")
    engine.dispose()


def statuses(client: httpx.Client) -> dict[str, tuple[str, str]]:
    response = client.get("/api/v1/hosts", params=RANGE)
    assert response.status_code == 200, response.text
    return {h["name"]: (h["status"], h["reason"]) for h in response.json()["items"]}


def test_after_the_backends_outage_hosts_that_reported_until_it_are_not_silent(
    fill: Filler, server: Server, settings: Settings, viewer_client: httpx.Client, client: httpx.Client
) -> None:
    for name in ("kvm-busy", "kvm-quiet", "kvm-gone"):
        fill.send(name, state=state(T0))
    # Down for 10 minutes. kvm-quiet had said nothing for 4 minutes before, kvm-gone for 6.
    down_for(settings, server, OUTAGE, {"kvm-quiet": 4, "kvm-gone": 6})

    # 10, 14 and 16 minutes without a report; of those, 0, 4 and 6 the backend could hear.
    listed = statuses(viewer_client)
    assert {name: s for name, (s, _reason) in listed.items()} == {
        "kvm-busy": "consistent",
        "kvm-quiet": "consistent",
        "kvm-gone": "silent",
    }
    assert "not counting splitwatch's own outage from" in listed["kvm-gone"][1]
    silent = viewer_client.get("/api/v1/hosts", params={**RANGE, "status": "silent"}).json()["items"]
    assert [h["name"] for h in silent] == ["kvm-gone"]
    summary = viewer_client.get("/api/v1/summary", params=RANGE).json()
    assert summary["hosts_silent"] == 1

    # /metrics, which Prometheus's AgentSilent reads, says the same; the last report is the real one.
    got = samples(client)
    assert {k[1] for k in got if k[0] == "splitwatch_host_status"} == {
        key("x", host="kvm-busy", status="consistent")[1],
        key("x", host="kvm-quiet", status="consistent")[1],
        key("x", host="kvm-gone", status="silent")[1],
    }
    last_busy = got[key("splitwatch_host_last_seen_timestamp_seconds", host="kvm-busy")]
    assert dt.datetime.now(dt.UTC).timestamp() - last_busy > OUTAGE.total_seconds()


def test_the_break_counts_once_the_hosts_stay_quiet_after_the_backend_is_back(
    fill: Filler, server: Server, settings: Settings, viewer_client: httpx.Client
) -> None:
    fill.send("kvm-quiet", state=state(T0))
    fill.send("kvm-gone", state=state(T0))
    down_for(settings, server, OUTAGE, {"kvm-quiet": 4, "kvm-gone": 6})
    assert statuses(viewer_client)["kvm-quiet"][0] == "consistent"
    # Two more minutes without a word after the backend is back: 4 + 2 heard minutes, over 5.
    engine = make_engine(settings.database_url)
    earlier(engine, host, ("last_seen_at",), 2 * MINUTE)
    earlier(engine, backend_break, ("down_at", "back_at"), 2 * MINUTE)
    engine.dispose()
    assert statuses(viewer_client)["kvm-quiet"][0] == "silent"
