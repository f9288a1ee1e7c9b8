"""``webhook_endpoints``: every registered webhook endpoint, its filter and whether it is
still enabled, for the webhook follower and ``subledger webhooks status``. No secret:
none is stored anywhere (see ``ledger.webhook_endpoints``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ledger.webhook_endpoints import WebhookEndpoint
from projections.database import Database, Transaction
from projections.projection import Positioned, Projection
from projections.values import instant, read_uuid


@dataclass(frozen=True)
class EndpointRow:
    endpoint_id: UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool


class WebhookEndpoints(Projection):
    name = "webhook_endpoints"
    version = 1
    tables = ("webhook_endpoints",)
    schema = (
        """CREATE TABLE webhook_endpoints (
            endpoint_id UUID PRIMARY KEY,
            url TEXT NOT NULL,
            event_types TEXT NOT NULL,
            description TEXT NOT NULL,
            registered_at TIMESTAMPTZ NOT NULL,
            disabled_at TIMESTAMPTZ
        )""",
    )
    handles = frozenset({WebhookEndpoint.Registered, WebhookEndpoint.Disabled})

    def process(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        # Endpoints are few and rarely change: one statement per event is enough.
        for _, event in events:
            endpoint_id = str(event.originator_id)
            if isinstance(event, WebhookEndpoint.Registered):
                tx.execute(
                    "INSERT INTO webhook_endpoints (endpoint_id, url, event_types, "
                    "description, registered_at) VALUES (?, ?, ?, ?, ?)",
                    (
                        endpoint_id,
                        event.url,
                        json.dumps(event.event_types),
                        event.description,
                        instant(event.timestamp),
                    ),
                )
            else:
                tx.execute(
                    "UPDATE webhook_endpoints SET disabled_at = ? WHERE endpoint_id = ?",
                    (instant(event.timestamp), endpoint_id),
                )


def endpoints(database: Database) -> list[EndpointRow]:
    """Every endpoint, in the order they were registered."""
    rows = database.query(
        "SELECT endpoint_id, url, event_types, description, disabled_at "
        "FROM webhook_endpoints ORDER BY registered_at, endpoint_id"
    )
    return [_row(row) for row in rows]


def _row(row: tuple[Any, ...]) -> EndpointRow:
    endpoint_id, url, event_types, description, disabled_at = row
    return EndpointRow(
        read_uuid(endpoint_id), url, json.loads(event_types), description, disabled_at is None
    )
