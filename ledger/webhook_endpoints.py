"""Webhook endpoints: where the business's other systems (CRM, email marketing) want the
integration events POSTed, and which ones.

An endpoint holds its URL, its filter and a description; never a secret. Its signing
secret is derived from a key of the node's settings and the endpoint's id when needed
(``commands.webhook_signing``), so that neither the event store nor a projection table
holds anything that could forge a delivery.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.errors import DomainError

# `*` (every type), `invoice.*` (every invoice event) or one type, `invoice.paid`.
_EVENT_TYPE = re.compile(r"^(\*|[a-z_]+\.(\*|[a-z_]+))$")
MAX_URL_LENGTH = 2000


class InvalidWebhookEndpoint(DomainError):
    code = "invalid_webhook_endpoint"


class WebhookEndpointAlreadyRegistered(InvalidWebhookEndpoint):
    code = "webhook_endpoint_already_registered"


def check_url(url: str) -> None:
    """An absolute http(s) URL with a host, and no credentials in it: they would be
    stored in the event store, readable by every auditor."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018  # raises ValueError for a port that is not one
    except ValueError as error:
        raise InvalidWebhookEndpoint(f"{url!r} is not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidWebhookEndpoint(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookEndpoint("a webhook URL may not carry a user name or password")
    if parts.fragment or len(url) > MAX_URL_LENGTH or any(c.isspace() for c in url):
        raise InvalidWebhookEndpoint(f"{url!r} has a fragment, spaces or is too long")
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return  # a name, not an address
    # No receiver lives at these; the cloud's instance metadata (169.254.169.254) does.
    if address.is_link_local or address.is_unspecified or address.is_multicast:
        raise InvalidWebhookEndpoint(f"{hostname} is not an address a receiver can have")


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """The filter, sorted and without repeats: ``*``, ``<aggregate>.*`` or types."""
    if not event_types:
        raise InvalidWebhookEndpoint("give the event types to send, or ['*'] for all")
    for kind in event_types:
        if not _EVENT_TYPE.match(kind):
            raise InvalidWebhookEndpoint(
                f"{kind!r} is not an event type (invoice.paid), a family (invoice.*) or *"
            )
    return sorted(set(event_types))


def matches(event_types: Sequence[str], event_type: str) -> bool:
    """Whether a filter takes an integration event of type ``event_type``."""
    family = event_type.partition(".")[0]
    return any(kind in ("*", event_type, f"{family}.*") for kind in event_types)


class WebhookEndpoint(Aggregate):
    """A registered receiver of integration events; disabled for good once disabled."""

    # State set by the events' apply(); under TYPE_CHECKING because eventsourcing would
    # turn class annotations into constructor fields.
    if TYPE_CHECKING:
        url: str
        event_types: list[str]
        description: str
        disabled: bool

    class Registered(Aggregate.Created):
        url: str
        event_types: list[str]
        description: str

        def apply(self, endpoint: WebhookEndpoint) -> None:
            endpoint.url = self.url
            endpoint.event_types = list(self.event_types)
            endpoint.description = self.description
            endpoint.disabled = False

    class Disabled(Aggregate.Event):
        def apply(self, endpoint: WebhookEndpoint) -> None:
            endpoint.disabled = True

    @classmethod
    def register(
        cls,
        endpoint_id: UUID,
        url: str,
        event_types: Sequence[str],
        description: str,
        at: datetime,
    ) -> WebhookEndpoint:
        check_url(url)
        return cls._create(
            cls.Registered,
            id=endpoint_id,
            timestamp=at,
            url=url,
            event_types=check_event_types(event_types),
            description=description,
        )

    def disable(self, at: datetime) -> None:
        """Stops deliveries to it; disabling it again changes nothing."""
        if not self.disabled:
            self.trigger_event(self.Disabled, timestamp=max(at, self.modified_on))
