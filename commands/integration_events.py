"""Integration events: what other systems (email marketing, CRM, the business's own site)
read about the ledger, made from its domain events and its lifecycle signals. Pure: no
I/O; the outbox publisher (``commands.outbox``) supplies what an event does not carry.

An integration event is ``{"type", "id", "customer_id", "occurred_at", "data"}`` (see
docs/events.md). A stored event gives the same integration event, and the same ``id``,
however often it is read, so that consumers can de-duplicate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, TypeGuard
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate
from typing_extensions import TypedDict

from ledger.catalog import Plan
from ledger.clock import ensure_utc
from ledger.coupons import Coupon
from ledger.customers import Customer, PaymentMethod
from ledger.idempotency import CommandRecord
from ledger.ids import as_uuid
from ledger.invoices import Invoice
from ledger.subscriptions import Subscription, SubscriptionStatus
from ledger.webhook_endpoints import WebhookEndpoint


class IntegrationEvent(TypedDict):
    """What ``subledger:events`` holds, as JSON in each entry's ``data`` (docs/events.md)."""

    type: str
    id: str
    customer_id: str | None
    occurred_at: str
    data: dict[str, Any]


# Names other billing systems made familiar (Stripe's, mostly); every other event is
# ``<aggregate>.<event>`` in snake case.
WELL_KNOWN: dict[type[Aggregate.Event], str] = {
    Customer.Registered: "customer.created",
    Customer.PaymentMethodAdded: "payment_method.attached",
    Subscription.Started: "subscription.created",
    Invoice.Issued: "invoice.created",
    Invoice.PaymentSucceeded: "invoice.paid",
    Invoice.Voided: "invoice.voided",
    Invoice.RefundSucceeded: "invoice.refunded",
    Plan.Registered: "plan.created",
    Coupon.Registered: "coupon.created",
}
# The fields of a stored event that the envelope carries (or that say nothing to others).
ENVELOPE_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic"}
)
# Never published: a gateway token is a credential to charge the customer.
WITHHELD: dict[type, frozenset[str]] = {PaymentMethod: frozenset({"token"})}
TRIAL_ENDING_NOTICE = timedelta(days=3)

_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    return _WORD_START.sub("_", name).lower()


def to_json(value: object) -> Any:
    """A value of an event as JSON: money ``{"amount", "currency"}``, times ISO 8601 UTC,
    UUIDs and decimals as text, enums as their value, value objects as objects.
    Anything else is refused rather than guessed (a float has no place in a ledger)."""
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        return ensure_utc(value).isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        withheld = WITHHELD.get(type(value), frozenset())
        return {
            f.name: to_json(getattr(value, f.name)) for f in fields(value) if f.name not in withheld
        }
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    raise TypeError(f"no JSON form for {type(value).__name__} in an integration event")


# Not published: the bus's own bookkeeping, and webhook endpoints (their URLs are not
# every subscriber's business).
UNPUBLISHED = (CommandRecord.Event, WebhookEndpoint.Event)


def is_domain_event(event: object) -> TypeGuard[Aggregate.Event]:
    """Whether a stored event is published."""
    return isinstance(event, Aggregate.Event) and not isinstance(event, UNPUBLISHED)


def event_type(event: Aggregate.Event) -> str:
    if isinstance(event, Subscription.DunningExhausted):
        # Ending for want of payment is a cancellation to whoever wins customers back.
        return "subscription.canceled" if event.canceled else "subscription.unpaid"
    if (known := WELL_KNOWN.get(type(event))) is not None:
        return known
    aggregate, _, name = type(event).__qualname__.rpartition(".")
    return f"{snake(aggregate)}.{snake(name)}"


def aggregate_key(event: Aggregate.Event) -> str:
    """The name of the aggregate's id in ``data``: ``subscription_id``, ``invoice_id``..."""
    return f"{snake(type(event).__qualname__.rpartition('.')[0])}_id"


def stable_id(event: Aggregate.Event) -> str:
    """The same stored event always has the same id (its aggregate and version)."""
    return str(
        uuid5(NAMESPACE_URL, f"subledger:event:{event.originator_id}:{event.originator_version}")
    )


def cancellation_reason(event: Aggregate.Event) -> str | None:
    """Why a subscription was canceled, for win-back: asked now, scheduled, or unpaid."""
    if isinstance(event, Subscription.Canceled):
        return "scheduled" if event.scheduled else "requested"
    if isinstance(event, Subscription.DunningExhausted) and event.canceled:
        return "payment_failed"
    return None


def customer_named_by(event: Aggregate.Event) -> UUID | None:
    """The customer an event names itself: a customer's own events, and the events that
    create a subscription or an invoice. Their later events name none: the publisher
    looks up the aggregate's (it never changes)."""
    if isinstance(event, Customer.Event):
        return as_uuid(event.originator_id)
    if isinstance(event, Subscription.Started | Invoice.Issued):
        return event.customer_id
    return None


def integration_event(event: Aggregate.Event, customer_id: UUID | None) -> IntegrationEvent:
    """The integration event of a stored domain event; ``customer_id`` is its customer
    (None for plans and coupons)."""
    data = {
        f.name: to_json(getattr(event, f.name))
        for f in fields(event)
        if f.name not in ENVELOPE_FIELDS
    }
    data[aggregate_key(event)] = str(event.originator_id)
    if (reason := cancellation_reason(event)) is not None:
        data["reason"] = reason
    return IntegrationEvent(
        type=event_type(event),
        id=stable_id(event),
        customer_id=None if customer_id is None else str(customer_id),
        occurred_at=to_json(event.timestamp),
        data=data,
    )


# Lifecycle signals: due at a moment no stored event marks, and sent only if still true then.


@dataclass(frozen=True)
class TrialEnding:
    """``subscription.trial_ending``: three days before a trial ends (at once for a
    shorter trial), if the subscription is still trialing towards that end."""

    subscription_id: UUID
    customer_id: UUID
    trial_end: datetime
    due: datetime

    def event(self, aggregates: Mapping[UUID, Aggregate], now: datetime) -> IntegrationEvent | None:
        sub = aggregates.get(self.subscription_id)
        customer = aggregates.get(self.customer_id)
        if not (
            isinstance(sub, Subscription)
            and isinstance(customer, Customer)
            and sub.status is SubscriptionStatus.TRIALING
            and sub.trial_end == self.trial_end
            and now < self.trial_end
        ):
            return None
        return signal_event(
            self,
            "subscription.trial_ending",
            {
                "subscription_id": str(sub.id),
                "trial_end": to_json(self.trial_end),
                # What the trial converts to, and whether it can as things stand.
                "price": to_json(sub.pending_price or sub.price),
                "has_payment_method": customer.can_pay_at(self.trial_end),
            },
        )


@dataclass(frozen=True)
class CardExpiring:
    """``payment_method.expiring``: Stripe's rule for ``customer.source.expiring``, a card
    that "will expire at the end of the month", so on the first day (UTC) of its expiry
    month (at once for a card added during it), if it is still on the customer."""

    customer_id: UUID
    payment_method_id: str
    exp_year: int
    exp_month: int

    @property
    def due(self) -> datetime:
        return datetime(self.exp_year, self.exp_month, 1, tzinfo=UTC)

    def event(self, aggregates: Mapping[UUID, Aggregate], now: datetime) -> IntegrationEvent | None:
        customer = aggregates.get(self.customer_id)
        if not isinstance(customer, Customer):
            return None
        method = customer.payment_methods.get(self.payment_method_id)
        if (
            method is None
            or (method.exp_year, method.exp_month) != (self.exp_year, self.exp_month)
            or method.is_expired(now)
        ):
            return None
        return signal_event(
            self,
            "payment_method.expiring",
            {
                "customer_id": str(self.customer_id),
                "method": to_json(method),
                "is_default": customer.default_payment_method_id == method.id,
            },
        )


Signal = TrialEnding | CardExpiring


def signals_scheduled_by(event: Aggregate.Event) -> list[Signal]:
    """The signals an event makes due later: a trial started, a card added."""
    if isinstance(event, Subscription.Started) and event.trial_end is not None:
        due = max(event.timestamp, event.trial_end - TRIAL_ENDING_NOTICE)
        return [TrialEnding(event.originator_id, event.customer_id, event.trial_end, due)]
    if isinstance(event, Customer.PaymentMethodAdded):
        method = event.method
        return [CardExpiring(event.originator_id, method.id, method.exp_year, method.exp_month)]
    return []


def signal_member(signal: Signal) -> str:
    """A signal as the text kept in the scheduled set: the same signal, the same text."""
    kind = "trial_ending" if isinstance(signal, TrialEnding) else "card_expiring"
    return json.dumps({"kind": kind, **to_json(signal)}, sort_keys=True, separators=(",", ":"))


def signal_from_member(text: str | bytes) -> Signal:
    stored = json.loads(text)
    if stored.pop("kind") == "trial_ending":
        return TrialEnding(
            UUID(stored["subscription_id"]),
            UUID(stored["customer_id"]),
            datetime.fromisoformat(stored["trial_end"]),
            datetime.fromisoformat(stored["due"]),
        )
    return CardExpiring(
        UUID(stored["customer_id"]),
        stored["payment_method_id"],
        stored["exp_year"],
        stored["exp_month"],
    )


def signal_event(signal: Signal, kind: str, data: dict[str, Any]) -> IntegrationEvent:
    """A signal's event: its id derives from the signal, it occurs when it fell due."""
    return IntegrationEvent(
        type=kind,
        id=str(uuid5(NAMESPACE_URL, f"subledger:signal:{signal_member(signal)}")),
        customer_id=str(signal.customer_id),
        occurred_at=to_json(signal.due),
        data=data,
    )
