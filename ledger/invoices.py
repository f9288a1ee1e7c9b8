"""Invoices: what a customer owes for a period or a plan change, and its collection.

An invoice's lines and figures are fixed when it is issued; what happens afterwards
(payment attempts, refunds as credit notes, becoming uncollectible or void) is recorded
as further events, never as changed figures. Issuing records the first payment request
in the same transaction, so that a payment processor following the event sequence
charges it exactly once: each attempt has its own idempotency key, ``<invoice>:payment:<n>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from fractions import Fraction
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.customers import PaymentMethod
from ledger.dunning import DunningPolicy
from ledger.errors import (
    InvalidRefund,
    InvoiceNotOpen,
    NoRetryDue,
    PaymentInFlight,
    RefundExceedsPaid,
)
from ledger.money import Money
from ledger.tax import TaxRate


# Plain Enums, not StrEnums: a str subclass would be stored as a bare string and the
# registered transcoding would never run.
class InvoiceStatus(Enum):
    OPEN = "open"
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"


class LineKind(Enum):
    PERIOD = "period"
    PRORATION_CREDIT = "proration_credit"
    PRORATION_DEBIT = "proration_debit"
    DISCOUNT = "discount"
    TAX = "tax"


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line; charges and debits positive, credits and discounts negative. Service
    lines name the service period they pay for (revenue is recognised over it)."""

    kind: LineKind
    description: str
    amount: Money
    service_start: datetime | None = None
    service_end: datetime | None = None


def period_invoice_id(subscription_id: UUID, period_index: int) -> UUID:
    """A period is invoiced once: renewing twice, or on two clocks, collides on this id."""
    return uuid5(NAMESPACE_URL, f"subledger:invoice:{subscription_id}:period:{period_index}")


def change_invoice_id(subscription_id: UUID, subscription_version: int) -> UUID:
    """A plan change made now is invoiced once: keyed by the change's own event."""
    return uuid5(
        NAMESPACE_URL, f"subledger:invoice:{subscription_id}:change:{subscription_version}"
    )


def invoice_number(invoice_id: UUID) -> str:
    """The number printed on the document: stable, derived from its id."""
    return f"INV-{invoice_id.hex[:12].upper()}"


def payment_key(invoice_id: UUID, attempt: int) -> str:
    return f"{invoice_id}:payment:{attempt}"


def refund_key(invoice_id: UUID, number: int) -> str:
    return f"{invoice_id}:refund:{number}"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    attempt: int
    payment_method_id: str
    gateway: str
    amount: Money
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class RefundRequest:
    number: int
    amount: Money
    gateway: str
    charge_reference: str
    idempotency_key: str


class Invoice(Aggregate):
    # State set by the events' apply(); under TYPE_CHECKING because eventsourcing would
    # turn class annotations into constructor fields.
    if TYPE_CHECKING:
        customer_id: UUID
        subscription_id: UUID
        period_index: int | None
        reason: str
        lines: list[InvoiceLine]
        currency: str
        subtotal: Money
        discount: Money
        tax: Money
        total: Money
        credit_applied: Money
        amount_due: Money
        status: InvoiceStatus
        attempts: int
        pending: PaymentRequest | None
        paid_by: PaymentRequest | None
        payment_reference: str | None
        failures: int
        first_failure_at: datetime | None
        next_retry_at: datetime | None
        dunning_ends_at: datetime | None
        last_failed_method_id: str | None
        refunds: int
        refunded: Money
        pending_refunds: dict[int, RefundRequest]
        processing_reference: str | None  # the gateway's id of a charge it settles later
        refund_references: list[str]  # the gateway's ids of the refunds that went through
        disputes: dict[str, str]  # the gateway's dispute id -> "open", "won" or "lost"

    class Issued(Aggregate.Created):
        customer_id: UUID
        subscription_id: UUID
        period_index: int | None
        reason: str
        lines: list[InvoiceLine]
        tax_label: str | None
        subtotal: Money
        discount: Money
        tax: Money
        total: Money
        credit_applied: Money
        amount_due: Money

        def apply(self, invoice: Invoice) -> None:
            invoice.customer_id = self.customer_id
            invoice.subscription_id = self.subscription_id
            invoice.period_index = self.period_index
            invoice.reason = self.reason
            invoice.lines = list(self.lines)
            invoice.currency = self.total.currency
            invoice.subtotal = self.subtotal
            invoice.discount = self.discount
            invoice.tax = self.tax
            invoice.total = self.total
            invoice.credit_applied = self.credit_applied
            invoice.amount_due = self.amount_due
            invoice.status = InvoiceStatus.OPEN if self.amount_due else InvoiceStatus.PAID
            invoice.attempts = 0
            invoice.pending = None
            invoice.paid_by = None
            invoice.payment_reference = None
            invoice.failures = 0
            invoice.first_failure_at = None
            invoice.next_retry_at = None
            invoice.dunning_ends_at = None
            invoice.last_failed_method_id = None
            invoice.refunds = 0
            invoice.refunded = Money.zero(invoice.currency)
            invoice.pending_refunds = {}
            invoice.processing_reference = None
            invoice.refund_references = []
            invoice.disputes = {}

    class PaymentRequested(Aggregate.Event):
        request: PaymentRequest

        def apply(self, invoice: Invoice) -> None:
            invoice.attempts = self.request.attempt
            invoice.pending = self.request
            invoice.processing_reference = None

    class PaymentProcessing(Aggregate.Event):
        """The gateway accepted the attempt but settles it later (a bank debit, a fraud
        review): the attempt stays pending until the gateway's webhook tells the outcome."""

        attempt: int
        reference: str

        def apply(self, invoice: Invoice) -> None:
            invoice.processing_reference = self.reference

    class PaymentSucceeded(Aggregate.Event):
        attempt: int
        reference: str

        def apply(self, invoice: Invoice) -> None:
            invoice.status = InvoiceStatus.PAID
            invoice.paid_by = invoice.pending
            invoice.pending = None
            invoice.processing_reference = None
            invoice.payment_reference = self.reference
            invoice.next_retry_at = None

    class PaymentFailed(Aggregate.Event):
        attempt: int
        payment_method_id: str | None
        code: str
        message: str
        next_retry_at: datetime | None
        dunning_ends_at: datetime

        def apply(self, invoice: Invoice) -> None:
            invoice.attempts = self.attempt
            invoice.pending = None
            invoice.processing_reference = None
            invoice.failures += 1
            invoice.first_failure_at = invoice.first_failure_at or self.timestamp
            invoice.next_retry_at = self.next_retry_at
            invoice.dunning_ends_at = self.dunning_ends_at
            invoice.last_failed_method_id = self.payment_method_id

    class MarkedUncollectible(Aggregate.Event):
        def apply(self, invoice: Invoice) -> None:
            invoice.status = InvoiceStatus.UNCOLLECTIBLE
            invoice.next_retry_at = None

    class Voided(Aggregate.Event):
        def apply(self, invoice: Invoice) -> None:
            invoice.status = InvoiceStatus.VOID
            invoice.next_retry_at = None

    class RefundRequested(Aggregate.Event):
        """A credit note: ``amount`` of the payment goes back to the customer."""

        request: RefundRequest
        reason: str

        def apply(self, invoice: Invoice) -> None:
            invoice.refunds = self.request.number
            invoice.pending_refunds[self.request.number] = self.request

    class RefundSucceeded(Aggregate.Event):
        number: int
        reference: str

        def apply(self, invoice: Invoice) -> None:
            request = invoice.pending_refunds.pop(self.number)
            invoice.refunded = invoice.refunded + request.amount
            invoice.refund_references.append(self.reference)

    class RefundFailed(Aggregate.Event):
        number: int
        code: str
        message: str

        def apply(self, invoice: Invoice) -> None:
            invoice.pending_refunds.pop(self.number)

    class DisputeOpened(Aggregate.Event):
        """The payer disputed the payment with their bank (a chargeback): the gateway
        holds ``amount`` until the dispute is decided."""

        reference: str
        amount: Money
        reason: str

        def apply(self, invoice: Invoice) -> None:
            invoice.disputes[self.reference] = "open"

    class DisputeClosed(Aggregate.Event):
        """Decided: won, the money stays; lost, it is gone (recorded as a credit note
        refunded in the same transaction, so that every figure of refunds holds it)."""

        reference: str
        won: bool

        def apply(self, invoice: Invoice) -> None:
            invoice.disputes[self.reference] = "won" if self.won else "lost"

    @classmethod
    def issue(
        cls,
        id: UUID,
        customer_id: UUID,
        subscription_id: UUID,
        period_index: int | None,
        reason: str,
        charges: list[InvoiceLine],
        tax_rate: TaxRate | None,
        credit_available: Money,
        at: datetime,
    ) -> Invoice:
        """Issues an invoice for ``charges`` (service, proration and discount lines): the
        customer's tax on its own line, then account credit applied to the total."""
        currency = credit_available.currency
        zero = Money.zero(currency)
        subtotal = sum((c.amount for c in charges if c.kind is not LineKind.DISCOUNT), zero)
        discount = -sum((c.amount for c in charges if c.kind is LineKind.DISCOUNT), zero)
        taxable = subtotal - discount
        if taxable.amount < 0:
            raise ValueError(f"an invoice cannot total {taxable}: credit the balance instead")
        lines = list(charges)
        tax = zero
        if tax_rate is not None and taxable:
            tax = tax_rate.tax_of(taxable)
            lines.append(InvoiceLine(LineKind.TAX, tax_rate.label, tax))
        total = taxable if tax_rate is None or tax_rate.inclusive else taxable + tax
        credit = min(credit_available, total) if credit_available.amount > 0 else zero
        return cls._create(
            cls.Issued,
            id=id,
            timestamp=at,
            customer_id=customer_id,
            subscription_id=subscription_id,
            period_index=period_index,
            reason=reason,
            lines=lines,
            tax_label=tax_rate.label if tax_rate and taxable else None,
            subtotal=subtotal,
            discount=discount,
            tax=tax,
            total=total,
            credit_applied=credit,
            amount_due=total - credit,
        )

    # Queries

    @property
    def number(self) -> str:
        return invoice_number(self.id)

    @property
    def amount_paid(self) -> Money:
        """What a gateway collected (account credit is not refundable through one)."""
        return self.paid_by.amount if self.paid_by else Money.zero(self.currency)

    @property
    def gross_ratio(self) -> Fraction:
        """What the customer paid per unit of (discounted) service: 1 + the tax rate when
        tax was added on top, else 1."""
        taxable = self.subtotal - self.discount
        return Fraction(self.total.amount, taxable.amount) if taxable.amount > 0 else Fraction(1)

    @property
    def refundable(self) -> Money:
        pending = sum((r.amount for r in self.pending_refunds.values()), Money.zero(self.currency))
        return self.amount_paid - self.refunded - pending

    @property
    def awaits_retry(self) -> bool:
        return self.status is InvoiceStatus.OPEN and self.pending is None and self.failures > 0

    # Collection

    def _ensure_collectable(self) -> None:
        if self.status is not InvoiceStatus.OPEN:
            raise InvoiceNotOpen(f"invoice {self.number} is {self.status.value}")
        if self.pending is not None:
            raise PaymentInFlight(
                f"attempt {self.pending.attempt} of {self.number} awaits its answer"
            )

    def request_payment(
        self, method: PaymentMethod | None, at: datetime, policy: DunningPolicy
    ) -> None:
        """Asks for the next attempt with ``method``; without one, the attempt fails at
        once (a hard failure: dunning waits for a new payment method)."""
        self._ensure_collectable()
        attempt = self.attempts + 1
        if method is None:
            self._fail(attempt, None, "no_payment_method", "no usable payment method", at, policy)
            return
        request = PaymentRequest(
            attempt=attempt,
            payment_method_id=method.id,
            gateway=method.gateway,
            amount=self.amount_due,
            idempotency_key=payment_key(self.id, attempt),
        )
        self.trigger_event(self.PaymentRequested, timestamp=at, request=request)

    def retry(self, method: PaymentMethod | None, at: datetime, policy: DunningPolicy) -> None:
        """A dunning retry: when its day has come, or at once with another payment method."""
        self._ensure_collectable()
        if self.failures == 0:
            raise NoRetryDue(f"invoice {self.number} has not failed: nothing to retry")
        scheduled = self.next_retry_at is not None and at >= self.next_retry_at
        new_method = method is not None and method.id != self.last_failed_method_id
        if not (scheduled or new_method):
            raise NoRetryDue(f"no retry of {self.number} is due at {at.isoformat()}")
        self.request_payment(method, at, policy)

    def record_processing(self, attempt: int, reference: str, at: datetime) -> bool:
        """Records that the gateway settles ``attempt`` later; False if already recorded
        or the attempt is not the one awaited."""
        if self.pending is None or self.pending.attempt != attempt or self.processing_reference:
            return False
        self.trigger_event(
            self.PaymentProcessing, timestamp=at, attempt=attempt, reference=reference
        )
        return True

    def record_success(self, attempt: int, reference: str, at: datetime) -> bool:
        """Records the gateway's success of ``attempt``; False if already recorded."""
        if self.pending is None or self.pending.attempt != attempt:
            return False
        self.trigger_event(
            self.PaymentSucceeded, timestamp=at, attempt=attempt, reference=reference
        )
        return True

    def record_failure(
        self, attempt: int, code: str, message: str, at: datetime, policy: DunningPolicy
    ) -> bool:
        """Records a decline of ``attempt`` and when to retry; False if already recorded."""
        if self.pending is None or self.pending.attempt != attempt:
            return False
        self._fail(attempt, self.pending.payment_method_id, code, message, at, policy)
        return True

    def _fail(
        self,
        attempt: int,
        method_id: str | None,
        code: str,
        message: str,
        at: datetime,
        policy: DunningPolicy,
    ) -> None:
        first = self.first_failure_at or at
        self.trigger_event(
            self.PaymentFailed,
            timestamp=at,
            attempt=attempt,
            payment_method_id=method_id,
            code=code,
            message=message,
            next_retry_at=policy.next_retry(first, at, code),
            dunning_ends_at=self.dunning_ends_at or policy.ends_at(first),
        )

    def dunning_ran_out(self, at: datetime) -> bool:
        """Failed, no retry scheduled, and the time to bring a new payment method is over."""
        return (
            self.awaits_retry
            and self.next_retry_at is None
            and (self.dunning_ends_at is None or at >= self.dunning_ends_at)
        )

    def give_up(self, at: datetime) -> None:
        """Marks an invoice whose dunning ran out uncollectible."""
        self._ensure_collectable()
        if not self.dunning_ran_out(at):
            raise NoRetryDue(f"dunning of {self.number} has not run out")
        self.trigger_event(self.MarkedUncollectible, timestamp=at)

    def void(self, at: datetime) -> None:
        self._ensure_collectable()
        self.trigger_event(self.Voided, timestamp=at)

    # Refunds

    def request_refund(self, amount: Money, reason: str, at: datetime) -> RefundRequest:
        """A credit note of ``amount``, refunded through the gateway that took the payment."""
        if self.paid_by is None or self.payment_reference is None:
            raise InvalidRefund(f"invoice {self.number} was not paid through a gateway")
        if amount.amount <= 0:
            raise InvalidRefund(f"a refund must be positive, got {amount}")
        if amount.currency != self.currency:
            raise InvalidRefund(f"invoice {self.number} was paid in {self.currency}")
        if amount > self.refundable:
            raise RefundExceedsPaid(
                f"{amount} is more than the {self.refundable} left to refund on {self.number}"
            )
        return self._credit_note(amount, reason, at)

    def _credit_note(self, amount: Money, reason: str, at: datetime) -> RefundRequest:
        """Requests the next refund of the payment (checked by the caller)."""
        assert self.paid_by is not None
        assert self.payment_reference is not None
        number = self.refunds + 1
        request = RefundRequest(
            number=number,
            amount=amount,
            gateway=self.paid_by.gateway,
            charge_reference=self.payment_reference,
            idempotency_key=refund_key(self.id, number),
        )
        self.trigger_event(self.RefundRequested, timestamp=at, request=request, reason=reason)
        return request

    def record_gateway_refund(
        self, reference: str, amount: Money, reason: str, at: datetime
    ) -> bool:
        """A refund made at the gateway itself (in its dashboard): the money is already
        back with the customer, so the credit note is requested and refunded at once.
        False if the refund ``reference`` is already recorded."""
        if reference in self.refund_references:
            return False
        # Refunds of ours still awaiting their answer count: one of them may be this one.
        self._check_refund(amount, self.refundable)
        self._refund_at_once(reference, amount, reason, at)
        return True

    def open_dispute(self, reference: str, amount: Money, reason: str, at: datetime) -> bool:
        """Records a dispute of the payment; False if it is already recorded."""
        if reference in self.disputes:
            return False
        self._check_refund(amount, self.amount_paid)
        self.trigger_event(
            self.DisputeOpened, timestamp=at, reference=reference, amount=amount, reason=reason
        )
        return True

    def close_dispute(
        self, reference: str, won: bool, amount: Money, reason: str, at: datetime
    ) -> bool:
        """Records a dispute's decision (opening it first if its opening was never
        heard of); a lost one refunds ``amount`` (at most what is left of the payment).
        False if the decision is already recorded."""
        if self.disputes.get(reference) in ("won", "lost"):
            return False
        self.open_dispute(reference, amount, reason, at)
        self.trigger_event(self.DisputeClosed, timestamp=at, reference=reference, won=won)
        left = self.amount_paid - self.refunded
        if not won and left.amount > 0:
            self._refund_at_once(reference, min(amount, left), f"chargeback: {reason}", at)
        return True

    def _check_refund(self, amount: Money, most: Money) -> None:
        if self.paid_by is None or self.payment_reference is None:
            raise InvalidRefund(f"invoice {self.number} was not paid through a gateway")
        if amount.currency != self.currency:
            raise InvalidRefund(f"invoice {self.number} was paid in {self.currency}")
        if amount.amount <= 0:
            raise InvalidRefund(f"an amount must be positive, got {amount}")
        if amount > most:
            raise RefundExceedsPaid(f"{amount} is more than the {most} paid on {self.number}")

    def _refund_at_once(self, reference: str, amount: Money, reason: str, at: datetime) -> None:
        number = self._credit_note(amount, reason, at).number
        self.trigger_event(self.RefundSucceeded, timestamp=at, number=number, reference=reference)

    def record_refund(self, number: int, reference: str, at: datetime) -> bool:
        if number not in self.pending_refunds:
            return False
        if reference in self.refund_references:
            # The gateway's refund was already recorded (its webhook answered another of
            # our credit notes): counting it again would refund twice on paper.
            message = f"the gateway's refund {reference} was already recorded"
            self.record_refund_failure(number, "refund_already_recorded", message, at)
            return True
        self.trigger_event(self.RefundSucceeded, timestamp=at, number=number, reference=reference)
        return True

    def pending_refund_of(self, amount: Money) -> int | None:
        """The first of our refunds awaiting its answer that is of ``amount``, if any: what a
        gateway's report of a refund without our key most likely answers."""
        numbers = [n for n, r in sorted(self.pending_refunds.items()) if r.amount == amount]
        return numbers[0] if numbers else None

    def record_refund_failure(self, number: int, code: str, message: str, at: datetime) -> bool:
        if number not in self.pending_refunds:
            return False
        self.trigger_event(
            self.RefundFailed, timestamp=at, number=number, code=code, message=message
        )
        return True
