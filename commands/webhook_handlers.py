"""Handlers of the webhook endpoint commands, and the signing secret that a
registration's reply reveals.

The secret is added to the reply, never to the answer the command record keeps: it is
derived again for every reply (a repeated command id gets it too), from the node's key
(see ``commands.webhook_signing``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from commands import schemas as s
from commands.accounts import Outcome, derived_id
from commands.settings import Settings
from commands.webhook_signing import WebhookSigningKeyMissing, endpoint_secret
from ledger.application import Ledger
from ledger.errors import NotFound
from ledger.webhook_endpoints import WebhookEndpoint, WebhookEndpointAlreadyRegistered


def endpoint_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "endpoint_id": str(endpoint.id),
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "description": endpoint.description,
        "enabled": not endpoint.disabled,
    }


def webhook_endpoint(ledger: Ledger, endpoint_id: UUID) -> WebhookEndpoint:
    found = ledger.load_many([endpoint_id]).get(endpoint_id)
    if not isinstance(found, WebhookEndpoint):
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return found


def register_webhook(cmd: s.RegisterWebhook, ledger: Ledger, now: datetime) -> Outcome:
    endpoint_id = cmd.endpoint_id or derived_id("webhook_endpoint", cmd.command_id)
    if ledger.exists(endpoint_id):
        raise WebhookEndpointAlreadyRegistered(f"{endpoint_id} is already registered")
    endpoint = WebhookEndpoint.register(endpoint_id, cmd.url, cmd.event_types, cmd.description, now)
    return Outcome(endpoint_view(endpoint), (endpoint,))


def disable_webhook(cmd: s.DisableWebhook, ledger: Ledger, now: datetime) -> Outcome:
    endpoint = webhook_endpoint(ledger, cmd.endpoint_id)
    endpoint.disable(now)
    return Outcome(endpoint_view(endpoint), (endpoint,))


def with_signing_secret(result: dict[str, Any]) -> dict[str, Any]:
    """A registration's answer as replied: with the endpoint's signing secret, or null
    while the node has no ``SUBLEDGER_WEBHOOK_SIGNING_KEY`` (deliveries then wait for
    it, and ``subledger webhooks secret`` shows the secret once it is set)."""
    try:
        secret: str | None = endpoint_secret(
            Settings().webhook_signing_key, UUID(result["endpoint_id"])
        )
    except WebhookSigningKeyMissing:
        secret = None
    return result | {"signing_secret": secret}


WEBHOOK_HANDLERS: dict[type[s.Command], Callable[[Any, Ledger, datetime], Outcome]] = {
    s.RegisterWebhook: register_webhook,
    s.DisableWebhook: disable_webhook,
}
# What a reply adds to the recorded answer of a command, by command class.
REVEALED: dict[type[s.Command], Callable[[dict[str, Any]], dict[str, Any]]] = {
    s.RegisterWebhook: with_signing_secret,
}
