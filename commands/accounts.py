"""What every handler shares: its answer type, derived ids, JSON views, and a
subscription brought up to the present with the invoices its due periods call for.

Every command on a subscription first applies what fell due (trial end, renewals,
scheduled cancels) and bills it, in the same transaction as the command's own events,
so that a renewal is never applied without its invoice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from functools import lru_cache
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from ledger.application import Ledger
from ledger.billing import Mark, bill
from ledger.customers import Customer
from ledger.errors import TooManyConflicts
from ledger.ids import IDS_KEPT
from ledger.invoices import Invoice
from ledger.money import Money
from ledger.subscriptions import Subscription


@dataclass(frozen=True)
class Outcome:
    """A handler's answer (JSON-ready) and the aggregates it changed."""

    result: dict[str, Any]
    changed: tuple[Aggregate, ...]


@lru_cache(maxsize=IDS_KEPT)  # derived to prefetch, then again by the handler
def derived_id(kind: str, command_id: str) -> UUID:
    """Ids of created aggregates derive from the command id: a retry creates the same one."""
    return uuid5(NAMESPACE_URL, f"subledger:{kind}:{command_id}")


def money_view(money: Money) -> dict[str, Any]:
    return {"amount": money.amount, "currency": money.currency}


def subscription_view(sub: Subscription) -> dict[str, Any]:
    return {
        "subscription_id": str(sub.id),
        "customer_id": str(sub.customer_id),
        "status": sub.status.value,
        "plan_code": sub.price.plan_code,
        "price_id": sub.price.id,
        "period_index": sub.period.index,
        "period_start": sub.period.start.isoformat(),
        "period_end": sub.period.end.isoformat(),
        "trial_end": sub.trial_end.isoformat() if sub.trial_end else None,
        "cancel_at": sub.cancel_at.isoformat() if sub.cancel_at else None,
        "resume_at": sub.resume_at.isoformat() if sub.resume_at else None,
        "scheduled_price_id": sub.pending_price.id if sub.pending_price else None,
        "coupon": sub.discount.coupon_code if sub.discount else None,
        "mrr": money_view(sub.mrr),
    }


def invoice_view(invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_id": str(invoice.id),
        "number": invoice.number,
        "status": invoice.status.value,
        "reason": invoice.reason,
        "lines": [
            {"kind": line.kind.value, "description": line.description, **money_view(line.amount)}
            for line in invoice.lines
        ],
        "subtotal": money_view(invoice.subtotal),
        "discount": money_view(invoice.discount),
        "tax": money_view(invoice.tax),
        "total": money_view(invoice.total),
        "credit_applied": money_view(invoice.credit_applied),
        "amount_due": money_view(invoice.amount_due),
        "refunded": money_view(invoice.refunded),
    }


@dataclass
class Account:
    """A subscription with everything due by ``at`` applied and billed, and its customer.

    ``at`` is the instant the command acts at: now, or the subscription's last event if
    a worker with a faster clock wrote one later, so that its history stays in order.
    """

    ledger: Ledger
    sub: Subscription
    customer: Customer
    at: datetime
    invoices: list[Invoice] = field(default_factory=list)

    def bill_since(
        self, mark: Mark, collect_now: bool = True, paid_ratio: Fraction = Fraction(1)
    ) -> None:
        """Invoices what the subscription's events since ``mark`` charge (see ``bill``)."""
        policy = self.ledger.dunning_policy
        self.invoices += bill(self.sub, self.customer, mark, policy, collect_now, paid_ratio)

    def changed(self, *more: Aggregate) -> tuple[Aggregate, ...]:
        return (self.sub, self.customer, *self.invoices, *more)

    def view(self) -> dict[str, Any]:
        return subscription_view(self.sub) | {"invoices": [invoice_view(i) for i in self.invoices]}


def current_subscription(ledger: Ledger, subscription_id: UUID, now: datetime) -> Account:
    """The subscription brought up to ``now`` and billed for what fell due."""
    sub = ledger.subscription(subscription_id)
    return account_of(ledger, sub, ledger.customer(sub.customer_id), now)


def account_of(ledger: Ledger, sub: Subscription, customer: Customer, now: datetime) -> Account:
    """A loaded subscription (and its customer) brought up to ``now`` and billed.

    One due instant at a time, each billed before the next, so that what a period's
    invoice does to the subscription (past due when it cannot be collected) is recorded
    before the later periods."""
    account = Account(ledger, sub, customer, now)
    while (due := sub.due_at) is not None and due <= now:
        mark = Mark.of(sub)
        if not sub.advance(due, can_pay=customer.can_pay_at):
            break
        account.bill_since(mark)
    account.at = max(now, sub.modified_on)
    return account


MAX_ATTEMPTS = 8
T = TypeVar("T")


def save_retrying(
    ledger: Ledger, what: str, attempt: Callable[[], tuple[T, tuple[Aggregate, ...]]]
) -> T:
    """Runs ``attempt`` (load, decide) and saves what it changed; on a concurrent write
    to the same aggregates, runs it again on fresh state."""
    for _ in range(MAX_ATTEMPTS):
        result, changed = attempt()
        try:
            ledger.save(*changed)
        except IntegrityError:
            continue  # a concurrent command, clock or processor got there first
        return result
    raise TooManyConflicts(f"{what} kept changing under us")
