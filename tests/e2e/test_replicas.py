"""Past one machine (#13): two `splitwatch serve` processes, different ports, one PostgreSQL.

The API processes keep no state of their own, so any load balancer may send any request to
either: ingest through both (a batch resent through the other is stored once), the same
answers from both, and the work that must happen once — the alert evaluator and retention —
done by one lease holder at a time, which the other replaces when it dies.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.store.engine import make_engine
from tests.app.alerts.test_serve_processes import Serve
from tests.app.conftest import Tokens, _pg, _Postgres, auth, upgrade
from tests.app.fill import MINUTE, SECOND, Filler, ev, lost, state
from tests.e2e.conftest import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def database(_e2e_postgres: _Postgres) -> Iterator[str]:
    _pg(_e2e_postgres)
    url = _e2e_postgres.create()
    upgrade(url)
    yield url
    _e2e_postgres.drop(url)


@pytest.fixture
def replicas(database: str, tmp_path: Path) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    try:
        for _ in range(2):
            serve = Serve(database, tmp_path)
            # Behind a balancer every replica names the one public URL (links in alerts).
            serve.env["SPLITWATCH_PUBLIC_URL"] = "https://splitwatch.example"
            started.append(serve.start())
        yield started
    finally:
        for s in started:
            s.stop()


def leases(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT name, holder FROM alert_lease")).all())  # type: ignore[arg-type]
    finally:
        engine.dispose()


def holder_pid(holder: str) -> int:
    m = re.match(r"^[^:]*:(\d+):", holder)
    assert m, holder
    return int(m.group(1))


def get(base: str, path: str, token: str, **params: Any) -> Any:
    r = httpx.get(f"{base}{path}", params=params, headers=auth(token), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_two_replicas_share_ingest_answer_alike_and_run_one_evaluator(
    database: str, replicas: list[Serve]
) -> None:
    a, b = replicas
    tokens = Tokens(database)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - 10 * MINUTE
    via_a, via_b = Filler(a.url, tokens), Filler(b.url, tokens)
    # Each host's agent talks to whichever replica the balancer picks.
    events = [ev(now + i * SECOND, guest="vm-1") for i in range(20)]
    batch = via_a.payload("h1", state=state(now), events=events)
    assert via_a.post(batch).json() == {"accepted": 20, "duplicates": 0}
    # The same batch resent through the other replica (the first answer was lost): stored once.
    assert via_b.post(batch).json() == {"accepted": 0, "duplicates": 20}
    via_b.send("h2", state=state(now), events=[ev(now + i * SECOND, action="throttle") for i in range(15)])
    # h2's next batch through the other replica (its seq follows on from the first batch's 15).
    assert via_a.send("h2", events=[ev(now + MINUTE, guest="vm-2", count=4, seq=16)], gaps=[lost(3)]) == {
        "accepted": 1,
        "duplicates": 0,
    }
    via_a.close()
    via_b.close()

    viewer = tokens.viewer()
    window = {"since": (now - MINUTE).isoformat(), "until": (now + 5 * MINUTE).isoformat()}
    reads = [
        ("/api/v1/hosts", {}),
        ("/api/v1/hosts/h2", {}),
        ("/api/v1/guests", {}),
        ("/api/v1/events", {**window, "limit": 100}),
        ("/api/v1/gaps", window),
        ("/api/v1/series", {**window, "step": 60, "group_by": "host"}),
        ("/api/v1/summary", window),
    ]
    for path, params in reads:
        from_a, from_b = get(a.url, path, viewer, **params), get(b.url, path, viewer, **params)
        assert from_a == from_b, path
    series = get(a.url, "/api/v1/series", viewer, **window, step=3600, group_by="host")
    totals = {s["key"]: sum(p[1] for p in s["points"]) for s in series["series"]}
    assert totals == {"h1": 20, "h2": 19}

    # One evaluator and one retention runner across both processes, each a lease holder.
    pids = {a.proc.pid, b.proc.pid}  # type: ignore[union-attr]
    wait_until(lambda: {"alerting", "retention"} <= set(leases(database)), "both leases taken")
    first = leases(database)
    assert holder_pid(first["alerting"]) in pids and holder_pid(first["retention"]) in pids
    admin = tokens.admin()
    r = httpx.post(
        f"{b.url}/api/v1/alert-rules",
        headers=auth(admin),
        timeout=30,
        json={"name": "busy", "type": "threshold", "group_by": "host", "window": "1h", "threshold": 1},
    )
    assert r.status_code == 201, r.text

    def alerts(base: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = get(base, "/api/v1/alerts", admin, rule="busy")["items"]
        return items

    def evaluated_again(base: str) -> None:
        before = {x["fingerprint"]: x["last_evaluated_at"] for x in alerts(base)}
        wait_until(
            lambda: all(x["last_evaluated_at"] > before[x["fingerprint"]] for x in alerts(base)),
            "another evaluation",
        )

    wait_until(lambda: len([x for x in alerts(a.url) if x["status"] == "firing"]) == 2, "h1 and h2 firing")
    for _ in range(3):  # evaluations go on: the same single holder, still one alert per host
        evaluated_again(a.url)
        assert leases(database)["alerting"] == first["alerting"]
        assert leases(database)["retention"] == first["retention"]
    assert sorted(x["labels"]["host"] for x in alerts(a.url)) == ["h1", "h2"]
    # The same alerts from both (an evaluation may land between the two reads: its time aside).
    assert [{**x, "last_evaluated_at": None} for x in alerts(a.url)] == [
        {**x, "last_evaluated_at": None} for x in alerts(b.url)
    ]

    # The evaluator's process dies: the other takes the lease over and evaluates on.
    leader = a if holder_pid(first["alerting"]) == a.proc.pid else b  # type: ignore[union-attr]
    survivor = b if leader is a else a
    leader.kill()
    wait_until(
        lambda: holder_pid(leases(database)["alerting"]) == survivor.proc.pid,  # type: ignore[union-attr]
        "the surviving replica holds the alerting lease",
    )
    evaluated_again(survivor.url)
    assert sorted(x["labels"]["host"] for x in alerts(survivor.url)) == ["h1", "h2"]
