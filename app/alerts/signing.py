"""Standard Webhooks signatures (https://www.standardwebhooks.com), made by the
`standardwebhooks` library: the headers a receiver verifies with
`standardwebhooks.Webhook(secret).verify(body, headers)`.

    webhook-id         the delivery's msg_id: the same on every retry, so receivers dedupe
    webhook-timestamp  unix seconds of this attempt
    webhook-signature  v1,<base64 HMAC-SHA256 of "id.timestamp.body"> keyed by the secret

Secrets are `whsec_<base64 of 24 random bytes>`, made here when the admin gives none.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import secrets

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
# Standard Webhooks recommends 24 to 64 random bytes.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign (None when it can)."""
    if not secret.startswith(SECRET_PREFIX):
        return "the secret must start with whsec_ followed by base64 (omit it to have one generated)"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return "the part after whsec_ is not valid base64 (omit the secret to have one generated)"
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return (
            f"the secret holds {len(key)} bytes: use {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes "
            "(omit it to have one generated)"
        )
    return None


def new_msg_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def signed_headers(secret: str, msg_id: str, body: str, at: dt.datetime) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=at.astimezone(dt.UTC), data=body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
