"""/metrics behind one port with `serve --workers 2` (issue 17): a scrape reaches whichever
worker accepts it, and the ingest counters must still be the whole server's, never going back,
or Prometheus sees a counter reset on every scrape that lands on the other worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.app.conftest import Tokens, auth, free_port
from tests.app.ingest.payloads import events, payload

SPLITWATCH = str(Path(sys.executable).with_name("splitwatch"))
COUNTERS = (
    ("splitwatch_ingest_requests_total", (("status", "200"),)),
    ("splitwatch_ingest_events_total", (("result", "accepted"),)),
    ("splitwatch_ingest_duration_seconds_count", ()),
    ("splitwatch_ingest_batch_events_count", ()),
)


def scrape(url: str) -> dict[str, float]:
    # A new connection per scrape, as Prometheus after an idle interval: the kernel hands it to
    # either worker.
    text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=30).text
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return {name: found.get((name, labels), 0.0) for name, labels in COUNTERS}


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_ingest_counters_are_the_servers_total_on_every_scrape_of_two_workers(
    migrated_db_url: str, tmp_path: Path
) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_99999.db").write_bytes(b"left by an earlier run")  # serve empties it first
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [SPLITWATCH, "serve", "--port", str(port), "--workers", "2", "--database-url", migrated_db_url],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)},
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            pytest.fail("serve --workers 2 did not become ready")
        token = Tokens(migrated_db_url).agent()
        headers = {**auth(token), "Content-Type": "application/json", "Connection": "close"}
        previous = scrape(url)
        assert previous == {name: 0.0 for name, _ in COUNTERS}
        history = [previous]
        for i in range(40):
            batch = payload(events(i * 5, 5)).to_json()
            answer = httpx.post(f"{url}/api/v1/ingest", content=batch, headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            now = scrape(url)
            history.append(now)
            # Every scrape, whichever worker answers it, counts every request so far.
            assert now == {
                "splitwatch_ingest_requests_total": i + 1,
                "splitwatch_ingest_events_total": (i + 1) * 5,
                "splitwatch_ingest_duration_seconds_count": i + 1,
                "splitwatch_ingest_batch_events_count": i + 1,
            }, history
        workers = {p.name.split("_")[-1] for p in shared.glob("counter_*.db")}
        assert len(workers) == 2, f"one worker took every request ({workers}): the test proved nothing"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert not list(shared.glob("*_99999.db"))
