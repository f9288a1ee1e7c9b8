"""Signing outbound webhooks, as the Standard Webhooks specification
(standardwebhooks.com) has it, so that receivers can verify them with its libraries.

Each endpoint's secret is ``whsec_`` + base64 of HMAC-SHA256(the node's key
``SUBLEDGER_WEBHOOK_SIGNING_KEY``, ``subledger:webhook-endpoint:<endpoint id>``): derived
whenever it is needed, never stored. The event store and the projection tables hold no
secret (an auditor reading them, or a leaked backup, cannot forge a delivery), and
rotating the node's key rotates every endpoint's secret at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from uuid import UUID

from pydantic import SecretStr

SECRET_PREFIX = "whsec_"


class WebhookSigningKeyMissing(RuntimeError):
    """No key to derive endpoint secrets from: nothing can be signed."""


def required(signing_key: SecretStr | None) -> SecretStr:
    """The node's key, or why there is none."""
    if signing_key is None or not signing_key.get_secret_value():
        raise WebhookSigningKeyMissing(
            "SUBLEDGER_WEBHOOK_SIGNING_KEY is not set: webhook deliveries cannot be signed "
            "and wait for it (set it to a long random value, e.g. `openssl rand -hex 32`)"
        )
    return signing_key


def endpoint_secret(signing_key: SecretStr | None, endpoint_id: UUID) -> str:
    """The endpoint's signing secret, as its receiver keeps it (``whsec_...``)."""
    digest = hmac.new(
        required(signing_key).get_secret_value().encode(),
        f"subledger:webhook-endpoint:{endpoint_id}".encode(),
        hashlib.sha256,
    ).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under the decoded secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, message_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt sent at ``at``."""
    timestamp = int(at.timestamp())
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
