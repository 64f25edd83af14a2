"""Standard Webhooks signatures: what a receiver verifies with the standardwebhooks library."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

import pytest
import standardwebhooks

from app.alerts.signing import new_secret, secret_problem, signed_headers


def test_generated_secret_is_whsec_base64_of_24_bytes_and_unique() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("whsec_")
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 24
    assert secret_problem(a) is None


def test_signature_verifies_with_the_library_and_is_hmac_of_id_timestamp_body() -> None:
    secret = new_secret()
    now = dt.datetime.now(dt.UTC)
    body = '{"status":"firing"}'
    headers = signed_headers(secret, "msg_1", body, now)
    assert standardwebhooks.Webhook(secret).verify(body, headers) == {"status": "firing"}
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, f"msg_1.{int(now.timestamp())}.{body}".encode(), hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


def test_tampered_body_or_other_secret_fails_verification() -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_1", "{}", dt.datetime.now(dt.UTC))
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify('{"x":1}', headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify("{}", headers)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("hunter2", "whsec_"),
        ("whsec_!!!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "5 bytes"),
    ],
)
def test_bad_secrets_say_why(secret: str, says: str) -> None:
    assert says in (secret_problem(secret) or "")
