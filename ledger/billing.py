"""Billing rules: which invoices a subscription's new events call for, and what the
outcome of collecting one does to the subscription.

A period that begins billed (a signup without trial, a trial converting, a renewal, a
plan change that starts a new cycle) is invoiced in full, less the discount covering
it. A plan change within a period is invoiced as its proration at once; when the change
leaves the customer owed money (a downgrade made now), that goes to the account's credit
balance instead. Invoice ids derive from (subscription, period) or from the change's
event, so that billing the same events twice collides instead of charging twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from uuid import UUID

from ledger.calendar import Period
from ledger.catalog import Price
from ledger.customers import Customer
from ledger.discounts import Discount
from ledger.dunning import DunningPolicy, ExhaustedAction
from ledger.invoices import (
    Invoice,
    InvoiceLine,
    LineKind,
    change_invoice_id,
    period_invoice_id,
)
from ledger.money import Money
from ledger.subscriptions import Subscription

# How the reason of account credit given for a plan change begins: the journal books it
# as a credit note.
PLAN_CHANGE_CREDIT = "plan change"

_PERIOD_EVENTS = (
    Subscription.Started,
    Subscription.TrialEnded,
    Subscription.Renewed,
    Subscription.PlanChanged,
)


@dataclass(frozen=True, slots=True)
class Mark:
    """What billing needs to know of a subscription before the events it will bill."""

    pending: int
    period_index: int | None
    discount: Discount | None

    @classmethod
    def of(cls, sub: Subscription | None) -> Mark:
        """A mark of ``sub`` as it stands (None: a subscription not started yet)."""
        if sub is None:
            return cls(0, None, None)
        return cls(len(sub.pending_events), sub.period.index, sub.discount)


def bill(
    sub: Subscription,
    customer: Customer,
    since: Mark,
    policy: DunningPolicy,
    collect_now: bool = True,
    paid_ratio: Fraction = Fraction(1),
) -> list[Invoice]:
    """Issues the invoices for the subscription's events since ``since``, each with its
    first payment request (unless not ``collect_now``: a quote), and applies the
    customer's credit balance. A change that leaves the customer owed money credits it
    times ``paid_ratio``: what was paid per unit of service in the period (the tax its
    invoice added on top)."""
    events = sub.pending_events[since.pending :]
    # Discounts cover disjoint period ranges (a new one only once the last has ended).
    discounts = [since.discount] + [
        e.discount for e in events if isinstance(e, Subscription.DiscountApplied)
    ]
    index = since.period_index
    invoices: list[Invoice] = []
    for event in events:
        if not isinstance(event, _PERIOD_EVENTS):
            continue
        charged = _charges(sub, event, index, discounts)
        index = event.period.index
        if charged is None:
            continue
        invoice_id, reason, lines = charged
        if not lines:
            continue
        at = event.timestamp
        owed = sum((line.amount for line in lines), Money.zero(sub.price.currency))
        if owed.amount < 0:
            # The customer is owed money: account credit, with the tax paid on it.
            reason = f"{PLAN_CHANGE_CREDIT} of subscription {sub.id}"
            credit = (-owed).scaled(paid_ratio)
            customer.adjust_credit(credit, reason, max(at, customer.modified_on))
            continue
        invoice = Invoice.issue(
            invoice_id,
            customer.id,
            sub.id,
            event.period.index,
            reason,
            lines,
            customer.tax_rate,
            customer.credit_balance,
            at,
        )
        if invoice.credit_applied:
            # At the customer's own pace: a period billed late must not go back in time.
            credit_at = max(at, customer.modified_on)
            customer.adjust_credit(
                -invoice.credit_applied, f"applied to {invoice.number}", credit_at
            )
        if invoice.amount_due and collect_now:
            collect(invoice, sub, customer, at, policy)
        invoices.append(invoice)
    return invoices


def _charges(
    sub: Subscription,
    event: Subscription.Started
    | Subscription.TrialEnded
    | Subscription.Renewed
    | Subscription.PlanChanged,
    index: int | None,
    discounts: list[Discount | None],
) -> tuple[UUID, str, list[InvoiceLine]] | None:
    """The invoice a period event calls for (its id, reason and lines), if any."""
    period = event.period
    if isinstance(event, Subscription.PlanChanged):
        if period.index != index:  # a new billing cycle starts now: its own period invoice
            lines = _change_lines(event, True, discounts)
            return period_invoice_id(sub.id, period.index), "plan_change", lines
        lines = _change_lines(event, False, discounts)
        return change_invoice_id(sub.id, event.originator_version), "plan_change", lines
    if isinstance(event, Subscription.Started):
        billed, reason = event.trial_end is None, "signup"
    elif isinstance(event, Subscription.TrialEnded):
        billed, reason = event.converted, "trial_conversion"
    else:
        billed, reason = event.billed, "renewal"
    if not billed:
        return None
    lines = _period_lines(event.price, period, discounts)
    return period_invoice_id(sub.id, period.index), reason, lines


def _service(price: Price, period: Period) -> str:
    return f"{price.plan_code} ({price.interval}), {period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}"


def _discount_line(discounts: list[Discount | None], index: int, price: Price) -> list[InvoiceLine]:
    for discount in discounts:
        if discount is not None and discount.covers(index) and discount.applies_to(price.plan_code):
            off = discount.off(price.amount)
            if off:
                return [InvoiceLine(LineKind.DISCOUNT, f"coupon {discount.coupon_code}", -off)]
    return []


def _period_lines(
    price: Price, period: Period, discounts: list[Discount | None]
) -> list[InvoiceLine]:
    charge = InvoiceLine(
        LineKind.PERIOD, _service(price, period), price.amount, period.start, period.end
    )
    return [charge, *_discount_line(discounts, period.index, price)]


def _change_lines(
    event: Subscription.PlanChanged, new_cycle: bool, discounts: list[Discount | None]
) -> list[InvoiceLine]:
    at, period = event.timestamp, event.period
    lines: list[InvoiceLine] = []
    if event.credit:
        lines.append(
            InvoiceLine(
                LineKind.PRORATION_CREDIT,
                f"unused time on {event.from_price.plan_code} ({event.from_price.interval})",
                -event.credit,
                at,
                period.end if not new_cycle else at,
            )
        )
    if new_cycle:
        return lines + _period_lines(event.to_price, period, discounts)
    if event.charge:
        rest = Period(period.index, at, period.end)
        lines.append(
            InvoiceLine(
                LineKind.PRORATION_DEBIT,
                f"remaining time on {_service(event.to_price, rest)}",
                event.charge,
                at,
                period.end,
            )
        )
    return lines


def collect(
    invoice: Invoice,
    sub: Subscription,
    customer: Customer,
    at: datetime,
    policy: DunningPolicy,
    retry: bool = False,
) -> None:
    """Requests a payment (or a dunning retry) with the customer's default method; with no
    usable method, the attempt fails at once."""
    method = customer.default_payment_method(at)
    if retry:
        invoice.retry(method, at, policy)
    else:
        invoice.request_payment(method, at, policy)
    if invoice.pending is None:
        _failed(invoice, sub, at, policy)


def record_payment_success(
    invoice: Invoice, sub: Subscription, attempt: int, reference: str, at: datetime
) -> bool:
    """Records a successful charge; a subscription in dunning for it is active again."""
    if not invoice.record_success(attempt, reference, at):
        return False
    sub.payment_recovered(invoice.id, at)
    return True


def record_payment_failure(
    invoice: Invoice,
    sub: Subscription,
    attempt: int,
    code: str,
    message: str,
    at: datetime,
    policy: DunningPolicy,
) -> bool:
    """Records a declined charge: the subscription is past due, and when no retry is
    left, dunning gives up at once."""
    if not invoice.record_failure(attempt, code, message, at, policy):
        return False
    _failed(invoice, sub, at, policy)
    return True


def _failed(invoice: Invoice, sub: Subscription, at: datetime, policy: DunningPolicy) -> None:
    sub.payment_failed(invoice.id, at)
    if invoice.dunning_ran_out(at):
        give_up(invoice, sub, at, policy)


def give_up(invoice: Invoice, sub: Subscription, at: datetime, policy: DunningPolicy) -> None:
    """The invoice is uncollectible; its subscription is canceled or left unpaid."""
    invoice.give_up(at)
    sub.dunning_exhausted(invoice.id, policy.on_exhausted is ExhaustedAction.CANCEL, at)
