"""docs/alerting.md cannot drift: its receiver example runs, as written, against real HTTP.

The Python block after the `receiver.py` marker is written to a file and started as its own
process on 127.0.0.1; notices signed with `standardwebhooks` (the library splitwatch signs
with) and the doc's own example bodies are POSTed to it. A receiver that lets a forged or stale
notice through, or mangles either body format, fails here.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from app.alerts.bodies import Notice, render
from app.alerts.rules import fingerprint
from app.api.alert_models import Alert
from tests.app.conftest import free_port

DOC = Path(__file__).resolve().parents[1] / "docs" / "alerting.md"
# What the receiver prints for the doc's example alert, in either format.
KILLED_LINE = (
    "firing GuestKilled critical host=kvm-b guest=db-7 - "
    "guest db-7 on host kvm-b was killed by SIGBUS (1 fatal split lock(s) in 10m)"
)
SECRET = "whsec_" + base64.b64encode(b"splitwatch receiver test key!!!!").decode()


def doc_text() -> str:
    return DOC.read_text()


def receiver_code() -> str:
    match = re.search(r"<!-- receiver\.py[^>]*-->\n```python\n(.*?)\n```", doc_text(), re.S)
    assert match, "docs/alerting.md lost its receiver.py block (or its marker)"
    return match.group(1) + "\n"


def json_block(after_heading: str) -> dict[str, Any]:
    """The first ```json block under the heading `after_heading`."""
    text = doc_text()
    start = text.index(after_heading)
    match = re.search(r"```json\n(.*?)\n```", text[start:], re.S)
    assert match, f"no JSON example under {after_heading!r}"
    body: dict[str, Any] = json.loads(match.group(1))
    return body


@dataclass
class Receiver:
    url: str
    proc: subprocess.Popen[str]

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(self.url, content=body, headers={"Content-Type": "application/json", **headers})

    def output(self) -> list[str]:
        self.proc.terminate()
        out, err = self.proc.communicate(timeout=10)
        assert "Traceback" not in err, err
        return out.splitlines()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    script = tmp_path / "receiver.py"
    script.write_text(receiver_code())
    port = free_port()
    env = {**os.environ, "WEBHOOK_SECRET": SECRET, "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}/hook"
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                httpx.get(url, timeout=1)  # any answer (501 for GET) means it listens
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out, err = proc.communicate(timeout=5)
                    pytest.fail(f"the doc's receiver did not start:\n{out}\n{err}")
                time.sleep(0.05)
        yield Receiver(url, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def signed(body: bytes, msg_id: str, at: dt.datetime | None = None, secret: str = SECRET) -> dict[str, str]:
    at = at or dt.datetime.now(dt.UTC)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def test_receiver_accepts_a_signed_alertmanager_notice_and_prints_each_alert(receiver: Receiver) -> None:
    body = json.dumps(json_block("### Alertmanager format (v4)")).encode()
    answer = receiver.post(body, signed(body, "msg_1"))
    assert answer.status_code == 204, answer.text
    assert receiver.output() == [KILLED_LINE]


def test_receiver_reads_the_native_format_too(receiver: Receiver) -> None:
    body = json.dumps(json_block("### Native format")).encode()
    assert receiver.post(body, signed(body, "msg_2")).status_code == 204
    assert receiver.output() == [KILLED_LINE]


def test_receiver_refuses_a_tampered_body_a_wrong_secret_a_stale_timestamp_and_no_signature(
    receiver: Receiver,
) -> None:
    body = json.dumps(json_block("### Alertmanager format (v4)")).encode()
    tampered = body.replace(b'"firing"', b'"resolved"')
    other_secret = "whsec_" + base64.b64encode(b"someone else's key, 32 bytes!!!").decode()
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    attempts = {
        "tampered body": (tampered, signed(body, "msg_3")),
        "other secret": (body, signed(body, "msg_4", secret=other_secret)),
        "stale timestamp": (body, signed(body, "msg_5", at=stale)),
        "no headers": (body, {}),
        "malformed signature": (body, {**signed(body, "msg_6"), "webhook-signature": "v1"}),
    }
    for what, (sent, headers) in attempts.items():
        answer = receiver.post(sent, headers)
        assert answer.status_code == 401, (what, answer.status_code, answer.text)
    assert receiver.output() == [], "a refused notice must not be acted on"


def test_receiver_acts_once_on_a_notice_retried_with_the_same_webhook_id(receiver: Receiver) -> None:
    body = json.dumps(json_block("### Alertmanager format (v4)")).encode()
    for _ in range(3):
        assert receiver.post(body, signed(body, "msg_7")).status_code == 204
    assert len(receiver.output()) == 1


def test_signature_header_is_v1_base64_hmac_sha256_of_id_timestamp_body() -> None:
    # The doc states the scheme; check it by hand against the library, with the doc's key.
    import hashlib
    import hmac

    text = doc_text()
    secret = re.search(r"for `(whsec_[A-Za-z0-9+/=]+)`", text)
    assert secret, "the doc's example secret is gone"
    key = base64.b64decode(secret.group(1).removeprefix("whsec_"))
    body = b'{"version": "4"}'
    at = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
    by_hand = base64.b64encode(
        hmac.new(key, b"msg_8.%d.%s" % (int(at.timestamp()), body), hashlib.sha256).digest()
    )
    assert Webhook(secret.group(1)).sign("msg_8", at, body.decode()) == "v1," + by_hand.decode()


def _doc_notice() -> Notice:
    """The notice behind the doc's examples, read back from its Alertmanager body."""
    body = json_block("### Alertmanager format (v4)")
    (alert,) = body["alerts"]
    native = json_block("### Native format")["alert"]
    return Notice(
        alert_id=native["id"],
        rule=native["rule"],
        status=alert["status"],
        labels=alert["labels"],
        annotations=alert["annotations"],
        starts_at=dt.datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00")),
        ends_at=None,
        generator_url=alert["generatorURL"],
        fingerprint=alert["fingerprint"],
        value=native["value"],
    )


def test_the_docs_example_bodies_are_what_the_backend_sends() -> None:
    # Rendered by the backend's own code from the same alert: any field it adds, drops or
    # renames shows here. The fingerprint is the labels' own (Alertmanager's hash).
    notice = _doc_notice()
    assert fingerprint(notice.labels) == notice.fingerprint
    am = json_block("### Alertmanager format (v4)")
    assert am == json.loads(render("alertmanager", notice, str(am["receiver"]), str(am["externalURL"])))
    native = json_block("### Native format")
    assert native == json.loads(render("native", notice, "", str(native["external_url"])))
    listed = json_block("`GET /api/v1/alerts` lists alerts")["items"][0]
    assert listed["fingerprint"] == notice.fingerprint and listed["labels"] == notice.labels
    assert set(listed) == set(Alert.model_fields), "the GET /alerts example lacks or invents fields"
