"""``transaction_history``: per customer, every event of their account, in order, with
its timestamp and amounts; one row per event, keyed by its position in the sequence.
Invoices and their collection (payments, failures, refunds) are part of it; a payment
request is not, its answer is.

Subscription events do not name their customer after ``Started``, nor invoice events after
``Issued``: the projection keeps ``history_subscriptions`` (subscription -> customer) and
``history_invoices`` (invoice -> customer, subscription and amount due) for itself, and
``history_refunds`` for the amount of a refund when it succeeds or fails. Personal data
(names, emails) stays out of this table: the history says that the contact changed, not
to what, and that the customer's personal data was erased (``customer.erased``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.catalog import Price
from ledger.customers import Customer
from ledger.discounts import Discount
from ledger.invoices import Invoice, invoice_number
from ledger.money import Money
from ledger.subscriptions import Subscription
from projections.collections import INVOICE_EVENTS, ids_to_load
from projections.database import Database, Transaction, select_in
from projections.events import SUBSCRIPTION_EVENTS, subscriptions_to_load
from projections.projection import Positioned, Projection
from projections.values import (
    instant,
    maybe_instant,
    read_instant,
    read_int,
    read_maybe_instant,
    read_uuid,
)


@dataclass
class Entry:
    """One line of a customer's history (amounts in minor units of ``currency``)."""

    kind: str
    description: str
    subscription_id: str | None = None
    invoice_id: str | None = None
    price_id: str | None = None
    previous_price_id: str | None = None
    currency: str | None = None
    amount: int | None = None
    proration_credit: int | None = None
    proration_charge: int | None = None
    effective_at: datetime | None = None


COLUMNS = (
    "position",
    "customer_id",
    "occurred_at",
    "kind",
    "description",
    "subscription_id",
    "invoice_id",
    "price_id",
    "previous_price_id",
    "currency",
    "amount",
    "proration_credit",
    "proration_charge",
    "effective_at",
)
INSERT = f"INSERT INTO transaction_history ({', '.join(COLUMNS)})"


def _customer_entry(event: Any) -> Entry:
    if isinstance(event, Customer.Registered):
        return Entry("customer.registered", f"Registered, paying in {event.currency}")
    if isinstance(event, Customer.ContactChanged):
        return Entry("customer.contact_changed", "Contact details changed")
    if isinstance(event, Customer.Erased):
        return Entry("customer.erased", "Personal data erased: name, email and phone")
    if isinstance(event, Customer.PaymentMethodAdded):
        method = event.method
        default = " (default)" if event.is_default else ""
        return Entry(
            "customer.payment_method_added",
            f"Payment method {method.brand} ending {method.last4} added "
            f"via {method.gateway}{default}",
        )
    if isinstance(event, Customer.DefaultPaymentMethodSwitched):
        return Entry(
            "customer.default_payment_method_switched",
            f"Default payment method is now {event.payment_method_id}",
        )
    if isinstance(event, Customer.TaxRateSet):
        rate = event.tax_rate
        return Entry(
            "customer.tax_rate_set",
            "Tax rate removed" if rate is None else f"Tax rate set to {rate.label}",
        )
    assert isinstance(event, Customer.CreditAdjusted)
    return Entry(
        "customer.credit_adjusted",
        f"Account credit {'+' if event.amount.amount >= 0 else ''}{event.amount!s}"
        f" ({event.reason})",
        currency=event.amount.currency,
        amount=event.amount.amount,
    )


def _priced(kind: str, description: str, price: Price, amount: int | None = None) -> Entry:
    return Entry(kind, description, price_id=price.id, currency=price.currency, amount=amount)


def _coupon_terms(discount: Discount) -> str:
    """What the coupon takes off, for how long: ``10% off for 3 periods``."""
    if discount.percent_off is not None:
        off = f"{discount.percent_off.normalize():f}%"
    else:
        off = str(discount.amount_off)
    if discount.last_period is None:
        return f"{off} off forever"
    periods = discount.last_period - discount.first_period + 1
    return f"{off} off for {periods} period{'s' if periods > 1 else ''}"


def _subscription_entry(event: Any) -> Entry:
    if isinstance(event, Subscription.Started):
        if event.trial_end is not None:
            return _priced(
                "subscription.trial_started",
                f"Signed up to {event.price.id} with a trial until {event.trial_end:%Y-%m-%d}",
                event.price,
            )
        return _priced(
            "subscription.started",
            f"Signed up to {event.price.id}: {event.price.amount!s} per {event.price.interval}",
            event.price,
            event.price.amount.amount,
        )
    if isinstance(event, Subscription.TrialEnded):
        if event.converted:
            return _priced(
                "subscription.trial_converted",
                f"Trial converted to {event.price.id}: {event.price.amount!s}",
                event.price,
                event.price.amount.amount,
            )
        return _priced(
            "subscription.trial_expired",
            "Trial ended without a payment method",
            event.price,
            0,
        )
    if isinstance(event, Subscription.Renewed):
        if event.billed:
            return _priced(
                "subscription.renewed",
                f"Renewed {event.price.id}: {event.price.amount!s}",
                event.price,
                event.price.amount.amount,
            )
        return _priced(
            "subscription.renewed",
            f"New period of {event.price.id}, not billed while paused",
            event.price,
            0,
        )
    if isinstance(event, Subscription.PlanChanged):
        net = event.charge - event.credit
        entry = _priced(
            "subscription.plan_changed",
            f"Changed from {event.from_price.id} to {event.to_price.id}: "
            f"credit {event.credit!s}, charge {event.charge!s}",
            event.to_price,
            net.amount,
        )
        entry.previous_price_id = event.from_price.id
        entry.proration_credit = event.credit.amount
        entry.proration_charge = event.charge.amount
        return entry
    if isinstance(event, Subscription.ChangeScheduled):
        entry = _priced(
            "subscription.change_scheduled",
            f"Change to {event.to_price.id} scheduled for {event.effective_at:%Y-%m-%d}",
            event.to_price,
        )
        entry.effective_at = event.effective_at
        return entry
    if isinstance(event, Subscription.ScheduledChangeCanceled):
        return Entry("subscription.scheduled_change_canceled", "Scheduled plan change called off")
    if isinstance(event, Subscription.CancelScheduled):
        when = "at period end" if event.at_period_end else "on a date"
        return Entry(
            "subscription.cancel_scheduled",
            f"Cancellation scheduled {when}: {event.cancel_at:%Y-%m-%d}",
            effective_at=event.cancel_at,
        )
    if isinstance(event, Subscription.CancelRevoked):
        return Entry("subscription.cancel_revoked", "Scheduled cancellation revoked")
    if isinstance(event, Subscription.Canceled):
        how = "as scheduled" if event.scheduled else "at once"
        refund = f", refund {event.refund!s}" if event.refund.amount else ""
        return Entry(
            "subscription.canceled",
            f"Canceled {how}{refund}",
            currency=event.refund.currency,
            amount=event.refund.amount,
        )
    if isinstance(event, Subscription.Paused):
        return Entry("subscription.paused", "Paused: periods are not billed")
    if isinstance(event, Subscription.ResumeScheduled):
        return Entry(
            "subscription.resume_scheduled",
            f"Resume scheduled for {event.resume_at:%Y-%m-%d}",
            effective_at=event.resume_at,
        )
    if isinstance(event, Subscription.Resumed):
        return Entry("subscription.resumed", "Resumed")
    if isinstance(event, Subscription.DiscountApplied):
        discount = event.discount
        return Entry(
            "subscription.discount_applied",
            f"Coupon {discount.coupon_code} applied: {_coupon_terms(discount)}",
        )
    if isinstance(event, Subscription.DiscountEnded):
        return Entry("subscription.discount_ended", f"Coupon {event.discount.coupon_code} ended")
    number = invoice_number(event.invoice_id)
    if isinstance(event, Subscription.PastDue):
        entry = Entry("subscription.past_due", f"Past due: the payment of {number} failed")
    elif isinstance(event, Subscription.Recovered):
        entry = Entry("subscription.recovered", f"Active again: {number} is settled")
    else:
        assert isinstance(event, Subscription.DunningExhausted)
        outcome = "canceled" if event.canceled else "left unpaid"
        entry = Entry("subscription.dunning_exhausted", f"Dunning of {number} ran out: {outcome}")
    entry.invoice_id = str(event.invoice_id)
    return entry


@dataclass(frozen=True)
class InvoiceFacts:
    """What the events of an invoice after ``Issued`` do not repeat."""

    customer_id: str
    subscription_id: str
    amount_due: Money

    @classmethod
    def of(cls, event: Invoice.Issued) -> InvoiceFacts:
        return cls(str(event.customer_id), str(event.subscription_id), event.amount_due)

    def as_params(self, invoice_id: UUID) -> tuple[str, str, str, str, int]:
        """Its row of ``history_invoices``."""
        due = self.amount_due
        return (str(invoice_id), self.customer_id, self.subscription_id, due.currency, due.amount)


def _invoice_entry(
    event: Any, invoice: InvoiceFacts, refunds: dict[tuple[UUID, int], int]
) -> Entry:
    number = invoice_number(event.originator_id)
    due = invoice.amount_due
    if isinstance(event, Invoice.Issued):
        credit = (
            f", {event.credit_applied!s} paid by account credit" if event.credit_applied else ""
        )
        return Entry(
            "invoice.issued",
            f"Invoice {number} ({event.reason.replace('_', ' ')}): {event.total!s}{credit}, "
            f"{due!s} due",
            currency=due.currency,
            amount=event.total.amount,
        )
    if isinstance(event, Invoice.PaymentSucceeded):
        return Entry(
            "invoice.payment_succeeded",
            f"Payment of {due!s} for {number} succeeded (attempt {event.attempt})",
            currency=due.currency,
            amount=due.amount,
        )
    if isinstance(event, Invoice.PaymentProcessing):
        return Entry(
            "invoice.payment_processing",
            f"Payment of {due!s} for {number} is processing at the gateway "
            f"(attempt {event.attempt}, {event.reference})",
            currency=due.currency,
            amount=due.amount,
        )
    if isinstance(event, Invoice.DisputeOpened):
        return Entry(
            "invoice.dispute_opened",
            f"Payment for {number} disputed ({event.reference}"
            f"{', ' + event.reason if event.reason else ''}): {event.amount!s} held",
            currency=event.amount.currency,
            amount=event.amount.amount,
        )
    if isinstance(event, Invoice.DisputeClosed):
        decided = "won: the payment stands" if event.won else "lost: the payment is refunded"
        return Entry("invoice.dispute_closed", f"Dispute {event.reference} on {number} {decided}")
    if isinstance(event, Invoice.PaymentFailed):
        retry = f"retry on {event.next_retry_at:%Y-%m-%d}" if event.next_retry_at else "no retry"
        return Entry(
            "invoice.payment_failed",
            f"Payment of {due!s} for {number} failed (attempt {event.attempt}, {event.code}): "
            f"{retry}",
            currency=due.currency,
            amount=due.amount,
        )
    if isinstance(event, Invoice.MarkedUncollectible):
        return Entry(
            "invoice.uncollectible",
            f"{number} marked uncollectible: {due!s} written off",
            currency=due.currency,
            amount=due.amount,
        )
    if isinstance(event, Invoice.Voided):
        return Entry(
            "invoice.voided",
            f"{number} voided: {due!s} no longer due",
            currency=due.currency,
            amount=due.amount,
        )
    if isinstance(event, Invoice.RefundRequested):
        refund = event.request
        reason = f": {event.reason}" if event.reason else ""
        return Entry(
            "invoice.refund_requested",
            f"Refund {refund.number} of {refund.amount!s} on {number} requested{reason}",
            currency=due.currency,
            amount=refund.amount.amount,
        )
    amount = Money(refunds[(event.originator_id, event.number)], due.currency)
    refund_of = f"Refund {event.number} of {amount!s} on {number}"
    if isinstance(event, Invoice.RefundSucceeded):
        entry = Entry("invoice.refund_succeeded", f"{refund_of} succeeded")
    else:
        assert isinstance(event, Invoice.RefundFailed)
        entry = Entry("invoice.refund_failed", f"{refund_of} failed ({event.code})")
    entry.currency, entry.amount = due.currency, amount.amount
    return entry


CUSTOMER_EVENTS = frozenset(
    {
        Customer.Registered,
        Customer.ContactChanged,
        Customer.Erased,
        Customer.PaymentMethodAdded,
        Customer.DefaultPaymentMethodSwitched,
        Customer.CreditAdjusted,
        Customer.TaxRateSet,
    }
)
# A payment request is not in the history: its answer is.
HISTORY_INVOICE_EVENTS = (INVOICE_EVENTS - {Invoice.PaymentRequested}) | {
    Invoice.DisputeOpened,
    Invoice.DisputeClosed,
}
_REFUND_ANSWERS = (Invoice.RefundSucceeded, Invoice.RefundFailed)


class TransactionHistory(Projection):
    name = "history"
    # Version 2: invoices, payments, refunds, discounts, dunning and tax rates.
    version = 2
    tables = ("transaction_history", "history_subscriptions", "history_invoices", "history_refunds")
    schema = (
        """CREATE TABLE transaction_history (
            position BIGINT PRIMARY KEY,
            customer_id UUID NOT NULL,
            occurred_at TIMESTAMPTZ NOT NULL,
            kind TEXT NOT NULL,
            description TEXT NOT NULL,
            subscription_id UUID,
            invoice_id UUID,
            price_id TEXT,
            previous_price_id TEXT,
            currency TEXT,
            amount BIGINT,
            proration_credit BIGINT,
            proration_charge BIGINT,
            effective_at TIMESTAMPTZ
        )""",
        "CREATE INDEX transaction_history_customer "
        "ON transaction_history (customer_id, occurred_at, position)",
        """CREATE TABLE history_subscriptions (
            subscription_id UUID PRIMARY KEY,
            customer_id UUID NOT NULL
        )""",
        """CREATE TABLE history_invoices (
            invoice_id UUID PRIMARY KEY,
            customer_id UUID NOT NULL,
            subscription_id UUID NOT NULL,
            currency TEXT NOT NULL,
            amount_due BIGINT NOT NULL
        )""",
        """CREATE TABLE history_refunds (
            invoice_id UUID NOT NULL,
            number INTEGER NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (invoice_id, number)
        )""",
    )
    handles = CUSTOMER_EVENTS | SUBSCRIPTION_EVENTS | HISTORY_INVOICE_EVENTS

    def process(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        owners = self._owners(tx, events)
        invoices = self._invoices(tx, events)
        refunds = self._refunds(tx, events)
        started: list[tuple[str, str]] = []
        issued: list[tuple[str, str, str, str, int]] = []
        requested: list[tuple[str, int, int]] = []
        rows = []
        for position, event in events:
            if type(event) in CUSTOMER_EVENTS:
                customer_id = str(event.originator_id)
                entry = _customer_entry(event)
            elif type(event) in HISTORY_INVOICE_EVENTS:
                if isinstance(event, Invoice.Issued):
                    invoices[event.originator_id] = InvoiceFacts.of(event)
                    issued.append(invoices[event.originator_id].as_params(event.originator_id))
                elif isinstance(event, Invoice.RefundRequested):
                    number, amount = event.request.number, event.request.amount.amount
                    refunds[(event.originator_id, number)] = amount
                    requested.append((str(event.originator_id), number, amount))
                invoice = invoices[event.originator_id]
                customer_id = invoice.customer_id
                entry = _invoice_entry(event, invoice, refunds)
                entry.subscription_id = invoice.subscription_id
                entry.invoice_id = str(event.originator_id)
            else:
                if isinstance(event, Subscription.Started):
                    owners[event.originator_id] = str(event.customer_id)
                    started.append((str(event.originator_id), owners[event.originator_id]))
                customer_id = owners[event.originator_id]
                entry = _subscription_entry(event)
                entry.subscription_id = str(event.originator_id)
            rows.append(
                (
                    position,
                    customer_id,
                    instant(event.timestamp),
                    entry.kind,
                    entry.description,
                    entry.subscription_id,
                    entry.invoice_id,
                    entry.price_id,
                    entry.previous_price_id,
                    entry.currency,
                    entry.amount,
                    entry.proration_credit,
                    entry.proration_charge,
                    maybe_instant(entry.effective_at),
                )
            )
        tx.insert_rows("INSERT INTO history_subscriptions (subscription_id, customer_id)", started)
        tx.insert_rows(
            "INSERT INTO history_invoices "
            "(invoice_id, customer_id, subscription_id, currency, amount_due)",
            issued,
        )
        tx.insert_rows("INSERT INTO history_refunds (invoice_id, number, amount)", requested)
        tx.insert_rows(INSERT, rows)

    def _owners(self, tx: Transaction, events: Sequence[Positioned]) -> dict[UUID, str]:
        """Subscription -> customer, for the subscriptions the batch did not start."""
        wanted = subscriptions_to_load(events)
        select = "SELECT subscription_id, customer_id FROM history_subscriptions"
        return {
            read_uuid(subscription_id): str(customer_id)
            for subscription_id, customer_id in select_in(tx, select, "subscription_id", wanted)
        }

    def _invoices(self, tx: Transaction, events: Sequence[Positioned]) -> dict[UUID, InvoiceFacts]:
        """What the history needs of the invoices the batch did not issue."""
        wanted = ids_to_load(events, Invoice.Issued, HISTORY_INVOICE_EVENTS)
        select = (
            "SELECT invoice_id, customer_id, subscription_id, currency, amount_due "
            "FROM history_invoices"
        )
        return {
            read_uuid(invoice_id): InvoiceFacts(
                str(customer_id), str(subscription_id), Money(read_int(amount_due), currency)
            )
            for invoice_id, customer_id, subscription_id, currency, amount_due in select_in(
                tx, select, "invoice_id", wanted
            )
        }

    def _refunds(
        self, tx: Transaction, events: Sequence[Positioned]
    ) -> dict[tuple[UUID, int], int]:
        """(invoice, refund number) -> amount, of the invoices whose refunds the batch
        answers."""
        wanted = list({str(e.originator_id) for _, e in events if isinstance(e, _REFUND_ANSWERS)})
        select = "SELECT invoice_id, number, amount FROM history_refunds"
        return {
            (read_uuid(invoice_id), read_int(number)): read_int(amount)
            for invoice_id, number, amount in select_in(tx, select, "invoice_id", wanted)
        }


@dataclass(frozen=True)
class HistoryLine:
    position: int
    occurred_at: datetime
    kind: str
    description: str
    subscription_id: UUID | None
    invoice_id: UUID | None
    price_id: str | None
    previous_price_id: str | None
    currency: str | None
    amount: int | None
    proration_credit: int | None
    proration_charge: int | None
    effective_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "occurred_at": self.occurred_at.isoformat(),
            "kind": self.kind,
            "description": self.description,
            "subscription_id": None if self.subscription_id is None else str(self.subscription_id),
            "invoice_id": None if self.invoice_id is None else str(self.invoice_id),
            "price_id": self.price_id,
            "previous_price_id": self.previous_price_id,
            "currency": self.currency,
            "amount": self.amount,
            "proration_credit": self.proration_credit,
            "proration_charge": self.proration_charge,
            "effective_at": None if self.effective_at is None else self.effective_at.isoformat(),
        }


def customer_history(db: Database, customer_id: UUID) -> list[HistoryLine]:
    """The customer's lines in the order things happened (then in the order recorded)."""
    rows = db.query(
        f"SELECT {', '.join(c for c in COLUMNS if c != 'customer_id')} FROM transaction_history "
        "WHERE customer_id = ? ORDER BY occurred_at, position",
        (str(customer_id),),
    )
    return [
        HistoryLine(
            position=read_int(position),
            occurred_at=read_instant(occurred_at),
            kind=kind,
            description=description,
            subscription_id=None if subscription is None else read_uuid(subscription),
            invoice_id=None if invoice is None else read_uuid(invoice),
            price_id=price_id,
            previous_price_id=previous_price_id,
            currency=currency,
            amount=None if amount is None else read_int(amount),
            proration_credit=None if credit is None else read_int(credit),
            proration_charge=None if charge is None else read_int(charge),
            effective_at=read_maybe_instant(effective_at),
        )
        for (
            position,
            occurred_at,
            kind,
            description,
            subscription,
            invoice,
            price_id,
            previous_price_id,
            currency,
            amount,
            credit,
            charge,
            effective_at,
        ) in rows
    ]
