"""GET /api/v1/alerts pages (#13): a mass outage fires an alert per host, more than one page holds,
so the list gives a cursor, and following it lists every alert once, newest first. Filtered by
host or guest, a page reads a bounded window of alerts and still says where to go on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Engine

from app.settings import Settings
from app.store import alerting as store
from tests.app.alerts.conftest import Alerting, poll, recent
from tests.app.alerts.test_evaluate import NOW, cfg, ingest, run  # noqa: F401 (cfg: a fixture)
from tests.app.conftest import assert_error
from tests.app.ingest.payloads import state


def walk(client: httpx.Client, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of /alerts with `params`, following next_cursor."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        r = client.get("/api/v1/alerts", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        pages.append(r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None or len(pages) > 50:
            return pages


def test_firing_alerts_of_many_hosts_page_with_a_cursor_each_once_newest_first(alerting: Alerting) -> None:
    alerting.disable_builtins()
    alerting.rule(name="busy-host", type="threshold", group_by="host", window="60s", threshold=1)
    hosts = [f"kvm-{i}" for i in range(5)]
    for host in hosts:
        alerting.ingest(host, at=recent())
    poll(lambda: len(alerting.alerts(status="firing")) == 5, "an alert firing for each of the 5 hosts")
    pages = walk(alerting.viewer, status="firing", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [a for p in pages for a in p]
    assert sorted(a["labels"]["host"] for a in listed) == hosts
    assert [a["id"] for a in listed] == sorted((a["id"] for a in listed), reverse=True)
    whole = alerting.viewer.get("/api/v1/alerts", params={"status": "firing", "limit": 5}).json()
    assert (len(whole["items"]), whole["next_cursor"]) == (5, None)  # all in one page: no cursor


def test_a_cursor_this_server_never_gave_is_422(alerting: Alerting) -> None:
    r = alerting.viewer.get("/api/v1/alerts", params={"cursor": "not-a-cursor"})
    assert assert_error(r, 422, "invalid_cursor")["details"][0]["field"] == "query.cursor"


def test_a_hosts_alert_older_than_the_filters_window_is_reached_through_the_cursor(
    engine: Engine,
    cfg: Settings,  # noqa: F811
) -> None:
    # 25 hosts go silent at once: an AgentSilent each. A page for the host whose alert is the
    # oldest, of limit 1, reads a window of 20 alerts (the newest): none of them is its, so the
    # page is empty, and its cursor leads to that alert rather than the list ending there.
    for i in range(25):
        ingest(engine, st=state(NOW), host=f"kvm-{i:02d}")
    at = NOW + timedelta(seconds=400)
    run(engine, cfg, at)

    def page(host: str | None, limit: int, before: int | None = None) -> store.AlertPage:
        with engine.connect() as conn:
            return store.list_alerts(
                conn, cfg, status="firing", rule=None, host=host, guest=None, since=None, limit=limit,
                now=at, before=before,
            )  # fmt: skip

    everything = page(None, 100)
    assert len(everything.items) == 25 and everything.next_before is None
    oldest = everything.items[-1]["labels"]["host"]
    pages: list[list[str]] = []
    before = None
    while len(pages) < 10:
        one = page(oldest, 1, before)
        pages.append([a["labels"]["host"] for a in one.items])
        before = one.next_before
        if before is None:
            break
    assert pages == [[], [oldest]]  # the first window held 20 alerts, none of them its
