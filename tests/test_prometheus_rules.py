"""deploy/prometheus/splitwatch-rules.yml: valid for promtool, unit-tested, and written over
series /metrics really exports.

`promtool test rules` runs deploy/prometheus/splitwatch-rules.test.yml: each alert fires on the
series shape it is meant for (a first kill out of nothing, two backends exporting the same
database, a Prometheus that just started) and stays quiet otherwise. The last test scrapes a
real backend, so renaming a metric or a label breaks the rules here, not in production.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.settings import Settings
from tests.app.conftest import Server, Tokens, auth, upgrade
from tests.app.fill import Filler, ev, lost, state
from tests.conftest import require_promtool

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = RULES_DIR / "splitwatch-rules.yml"
RULES_TEST = RULES_DIR / "splitwatch-rules.test.yml"

# The alerts docs/alerting.md promises to Prometheus users, named like the built-in rules.
ALERTS = {
    "GuestKilled",
    "HostInconsistent",
    "AgentSilent",
    "EventsLost",
    "ForgedKernelLog",
    "NewOffender",
    "SplitwatchIngestErrors",
    "SplitwatchIngestOverloaded",
    "SplitwatchDatabaseDown",
    "SplitwatchWebhookFailing",
    "SplitwatchOutboxStuck",
}


def rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules_passes() -> None:
    promtool = require_promtool()
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    promtool = require_promtool()
    # Run from the rules' directory: the test file names the rules file relative to itself.
    run = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_has_a_severity_summary_description_and_a_unit_test() -> None:
    alerts = {str(r["alert"]): r for r in rules() if "alert" in r}
    assert set(alerts) == ALERTS
    tested = {
        case["alertname"]
        for group in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a test that expects it to fire, not only to stay quiet
    }
    assert tested == ALERTS
    for name, rule in alerts.items():
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("critical", "warning", "info"), name
        assert isinstance(annotations, dict) and annotations["summary"] and annotations["description"], name


def test_host_inconsistent_reads_one_recording_rule_that_is_the_one_place_to_switch() -> None:
    # Issue 16: the host status rule's needs_action, read in one expression only.
    by_name = {str(r.get("alert") or r.get("record")): r for r in rules()}
    assert by_name["HostInconsistent"]["expr"] == "splitwatch:host_inconsistent == 1"
    needs_action = "splitwatch_host_needs_action"
    readers = [name for name, r in by_name.items() if needs_action in str(r["expr"])]
    assert readers == ["splitwatch:host_inconsistent"]


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Family sample names -> label names, scraped from a real backend with one host's data and
    one webhook that was sent a test notice (so the delivery counters have their labels)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('rules') / 'splitwatch.db'}"
    upgrade(url)
    server = Server(Settings(database_url=url, webhook_allow_private=True))
    server.start()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    tokens = Tokens(url)
    try:
        admin = auth(tokens.admin())
        hook = httpx.post(
            f"{server.url}/api/v1/webhooks",
            json={"url": f"http://127.0.0.1:{receiver.server_address[1]}/", "format": "native"},
            headers=admin,
        )
        assert hook.status_code == 201, hook.text
        sent = httpx.post(f"{server.url}/api/v1/webhooks/{hook.json()['id']}/test", headers=admin, timeout=30)
        assert sent.status_code == 200, sent.text
        fill = Filler(server.url, tokens)
        now = dt.datetime.now(dt.UTC)
        try:
            fill.send(
                "kvm-1",
                state=state(now, mode="fatal", cpus=2),
                events=[ev(now, guest="db-7", action="sigbus")],
                gaps=[lost(3, reason="forged")],
            )
        finally:
            fill.close()
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
    finally:
        server.stop()
        receiver.shutdown()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_series_and_label_the_rules_read_is_exported_by_metrics(
    exposition: dict[str, set[str]],
) -> None:
    exprs = "\n".join(str(r["expr"]) for r in rules())
    used = set(re.findall(r"\b(splitwatch_[a-z_]+)\b", exprs))
    assert used, "no splitwatch_ series in the rules"
    missing = sorted(name for name in used if name not in exposition)
    assert not missing, f"the rules read series /metrics does not export: {missing}"
    for name, matchers in re.findall(r"\b(splitwatch_[a-z_]+)\{([^}]*)\}", exprs):
        for label in re.findall(r"([a-z_]+)\s*[!=]~?", matchers):
            assert label in exposition[name], f"{name} has no label {label!r}"
    # By-clauses name labels the series carry (instance and job come from Prometheus).
    for clause in re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", exprs):
        for label in (x.strip() for x in clause.split(",") if x.strip()):
            known = any(label in labels for labels in exposition.values())
            assert label in {"instance", "job"} or known, f"no series has a label {label!r}"
