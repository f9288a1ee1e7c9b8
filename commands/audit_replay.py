"""An auditor's replay of one customer's account from stored history, not projections: its
events in sequence order, and the customer, each subscription and each invoice as they
stood at an instant (what the ledger knew then), folded from the events up to it.

An instant is compared with each event's own timestamp (when the ledger says it happened).
An aggregate's events are folded in version order and the fold of an aggregate stops at
its first event after the instant, so its later events are never decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, StoredEvent

from commands.accounts import invoice_view, money_view, subscription_view
from commands.audit import chain_recorder
from commands.integration_events import ENVELOPE_FIELDS, to_json
from ledger import collector
from ledger.application import Ledger
from ledger.clock import ensure_utc
from ledger.customers import Customer
from ledger.ids import as_uuid
from ledger.invoices import Invoice
from ledger.subscriptions import Subscription


def event_type(event: object) -> str:
    """``Subscription.Renewed``: the aggregate's class and the event's."""
    return type(event).__qualname__


def event_fields(event: object) -> dict[str, Any]:
    """An event's own fields as JSON (payment method tokens withheld), without those the
    stored row already carries (id, version) and its timestamp."""
    return {
        f.name: to_json(getattr(event, f.name))
        for f in fields(cast(Any, event))
        if f.name not in ENVELOPE_FIELDS
    }


@dataclass(frozen=True, slots=True)
class ReplayedEvent:
    """A stored event of the account, decoded, with its position in the event sequence."""

    position: int
    event: Aggregate.Event

    @property
    def type(self) -> str:
        return event_type(self.event)

    @property
    def aggregate_id(self) -> UUID:
        return as_uuid(self.event.originator_id)

    @property
    def timestamp(self) -> datetime:
        return self.event.timestamp

    def as_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "type": self.type,
            "aggregate_id": str(self.aggregate_id),
            "version": self.event.originator_version,
            "timestamp": to_json(self.timestamp),
            "fields": event_fields(self.event),
        }


def customer_view(customer: Customer) -> dict[str, Any]:
    """A customer as an auditor sees it: contact data (as the mapper gives it: unreadable
    once erased) and payment methods without their gateway tokens."""
    return {
        "customer_id": str(customer.id),
        "email": customer.email,
        "name": customer.name,
        "phone": customer.phone,
        "currency": customer.currency,
        "payment_methods": [
            {
                "id": m.id,
                "gateway": m.gateway,
                "brand": m.brand,
                "last4": m.last4,
                "expiry": f"{m.exp_year:04d}-{m.exp_month:02d}",
                "default": m.id == customer.default_payment_method_id,
            }
            for m in customer.payment_methods.values()
        ],
        "credit_balance": money_view(customer.credit_balance),
        "tax_rate": to_json(customer.tax_rate),
        "erased": customer.erased,
    }


@dataclass(frozen=True)
class Replay:
    """A customer's account as of ``as_of`` (None: everything stored)."""

    customer_id: UUID
    as_of: datetime | None
    # How many events the account holds in all, up to the instant or after it.
    stored: int
    events: list[ReplayedEvent]
    customer: Customer | None
    subscriptions: list[Subscription]
    invoices: list[Invoice]

    def as_json(self) -> dict[str, Any]:
        return {
            "customer_id": str(self.customer_id),
            "as_of": None if self.as_of is None else to_json(self.as_of),
            "stored_events": self.stored,
            "events": [e.as_json() for e in self.events],
            "customer": None if self.customer is None else customer_view(self.customer),
            "subscriptions": [subscription_view(s) for s in self.subscriptions],
            "invoices": [invoice_view(i) for i in self.invoices],
        }


def replay(ledger: Ledger, customer_id: UUID, as_of: datetime | None = None) -> Replay:
    """The account of ``customer_id`` as of ``as_of``, from the ledger's stored events
    (``NoChain`` if its store keeps no accounts: not one of the ledger's recorders)."""
    with collector.paused():
        rows = chain_recorder(ledger).select_account(customer_id)

        def earlier(aggregate_id: UUID, version: int) -> list[StoredEvent]:
            return list(ledger.recorder.select_events(aggregate_id, lte=version))

        return fold(ledger.mapper, customer_id, rows, as_of, earlier)


# How the JSON transcoder stores an event's time: read without decoding the rest.
_TIMESTAMP = b'"timestamp":{"_type_":"datetime_iso","_data_":"'


def stored_timestamp(state: bytes) -> datetime | None:
    """The event's timestamp, from its stored JSON; None if it is not found there."""
    at = state.find(_TIMESTAMP)
    if at < 0:
        return None
    start = at + len(_TIMESTAMP)
    try:
        return datetime.fromisoformat(state[start : state.index(b'"', start)].decode())
    except ValueError:
        return None


def fold(
    mapper: Mapper[UUID],
    customer_id: UUID,
    rows: Iterable[tuple[int, StoredEvent]],
    as_of: datetime | None,
    earlier: Callable[[UUID, int], list[StoredEvent]],
) -> Replay:
    """Decodes and folds an account's stored rows (position, event; in sequence order).

    ``earlier(aggregate, version)`` gives an aggregate's events up to ``version``: those
    stored before the store kept accounts (a database upgraded to the audit chain), which
    an aggregate's state needs though the account's rows begin after them."""
    limit = None if as_of is None else ensure_utc(as_of)
    aggregates: dict[UUID, Aggregate] = {}
    # Aggregates whose fold has reached the instant: their later events are not decoded.
    done: set[object] = set()
    events: list[ReplayedEvent] = []
    stored = 0
    for position, row in rows:
        stored += 1
        if row.originator_id in done:
            continue
        if limit is not None and (row.originator_id in aggregates or row.originator_version == 1):
            # Its time, read from the stored JSON without decoding the event: what lies
            # after the instant need not be decoded at all (an aggregate met first at a
            # later version may have earlier events before it: decoded, below).
            stamp = stored_timestamp(row.state)
            if stamp is not None and stamp > limit:
                done.add(row.originator_id)
                continue
        # A cast, not an isinstance check: a runtime protocol check costs more than
        # decoding the event (as in ``Ledger.load_many``).
        event = cast(Aggregate.Event, mapper.to_domain_event(row))
        if event.originator_id not in aggregates and event.originator_version > 1:
            for old in earlier(event.originator_id, event.originator_version - 1):
                before = cast(Aggregate.Event, mapper.to_domain_event(old))
                if limit is not None and before.timestamp > limit:
                    break
                folded = before.mutate(aggregates.get(before.originator_id))
                assert folded is not None  # no event of ours discards its aggregate
                aggregates[before.originator_id] = folded
        if limit is not None and event.timestamp > limit:
            done.add(row.originator_id)
            continue
        mutated = event.mutate(aggregates.get(event.originator_id))
        assert mutated is not None  # no event of ours discards its aggregate
        aggregates[event.originator_id] = mutated
        events.append(ReplayedEvent(position, event))
    states = list(aggregates.values())
    customer = aggregates.get(customer_id)
    return Replay(
        customer_id=customer_id,
        as_of=limit,
        stored=stored,
        events=events,
        customer=customer if isinstance(customer, Customer) else None,
        subscriptions=[a for a in states if isinstance(a, Subscription)],
        invoices=[a for a in states if isinstance(a, Invoice)],
    )
