"""Inbound webhooks: what a provider's delivery means once its signature is checked.

Each adapter module has a verifier that checks a delivery's signature (and, where the
provider signs one, its timestamp) and reads it into a ``ProviderEvent``; the HTTP app
turns those into commands, idempotently by ``(gateway, event_id)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from ledger.money import Money

EventKind = Literal[
    "payment_succeeded",  # a charge we sent (maybe Pending) settled
    "payment_failed",  # a charge we sent (maybe Pending) failed
    "refund_succeeded",  # a refund, ours or one made in the provider's dashboard
    "dispute_opened",  # the payer disputed a charge (chargeback); the money is held
    "dispute_won",  # the dispute was decided for the business: the money stays
    "dispute_lost",  # decided for the payer: the money is gone
]


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A verified delivery, in our terms.

    ``charge_reference`` is the provider's id of the charge, the same id its adapter
    returns in ``Succeeded``/``Pending`` for that charge (so the ledger can find the
    invoice); ``idempotency_key`` is our key when the provider echoes it back (metadata,
    custom id, notes). ``object_reference`` is the provider's id of the refund or dispute.
    """

    gateway: str
    event_id: str
    kind: EventKind
    charge_reference: str | None
    idempotency_key: str | None = None
    object_reference: str | None = None
    amount: Money | None = None
    code: str | None = None  # a failure's or a dispute's reason, as the provider says
    message: str = ""


class WebhookRejected(Exception):
    """A delivery that is not provably the provider's: a bad or missing signature, a stale
    timestamp, a body that cannot be read. Answered 400, and never acted on."""


class WebhookVerifier(Protocol):
    """Checks and reads one provider's deliveries; ``name`` is the gateway's name."""

    name: str

    def verify(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> ProviderEvent | None:
        """The event a genuine delivery carries; None for a genuine one of a kind the
        ledger does not act on. Raises ``WebhookRejected`` otherwise. ``headers`` keys
        are lower case."""
        ...
