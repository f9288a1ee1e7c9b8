"""Billing rules: which invoices a subscription's events call for, and what collecting
them does to the subscription. Basic is 10 EUR a month, Pro 20 EUR (240 EUR a year)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from ledger import billing
from ledger.billing import Mark, bill
from ledger.catalog import Price
from ledger.customers import Customer
from ledger.discounts import Discount
from ledger.dunning import DunningPolicy, ExhaustedAction
from ledger.invoices import (
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
    change_invoice_id,
    period_invoice_id,
)
from ledger.subscriptions import ChangeTiming, Subscription, SubscriptionStatus
from ledger.tax import TaxRate
from tests.unit.test_customers import method
from tests.unit.test_subscriptions import (
    APRIL_1,
    BASIC,
    BASIC_WITH_TRIAL,
    JAN_31,
    MAY_1,
    MID_APRIL,
    PRO,
    PRO_YEARLY,
    eur,
    half_off,
    utc,
)

POLICY = DunningPolicy()
VAT = TaxRate("VAT", Decimal(20), inclusive=False)
JUNE_1 = utc(2025, 6, 1)


def customer(with_card: bool = True, credit: int = 0, tax_rate: TaxRate | None = None) -> Customer:
    ann = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", utc(2025, 1, 1))
    if with_card:
        ann.add_payment_method(method("pm_1"), make_default=True, at=utc(2025, 1, 1))
    ann.adjust_credit(eur(credit), "goodwill", utc(2025, 1, 1))
    ann.set_tax_rate(tax_rate, utc(2025, 1, 1))
    ann.collect_events()
    return ann


def signup(
    ann: Customer, to: Price = BASIC, at: datetime = APRIL_1, discount: Discount | None = None
) -> tuple[Subscription, list[Invoice]]:
    """Starts a subscription (with ``discount``, as a coupon at checkout) and bills it."""
    sub = Subscription.start(uuid4(), ann.id, to, at, None)
    if discount is not None:
        sub.apply_discount(discount, at)
    return sub, bill(sub, ann, Mark.of(None), POLICY)


def advance(sub: Subscription, ann: Customer, now: datetime) -> list[Invoice]:
    mark = Mark.of(sub)
    sub.advance(now, can_pay=ann.can_pay_at)
    return bill(sub, ann, mark, POLICY)


def amounts(invoice: Invoice) -> list[tuple[LineKind, int]]:
    return [(line.kind, line.amount.amount) for line in invoice.lines]


# Which events are invoiced


def test_a_signup_without_trial_is_invoiced_for_its_first_period_and_charged() -> None:
    ann = customer()
    sub, [invoice] = signup(ann)
    assert invoice.id == period_invoice_id(sub.id, 0)
    assert (invoice.reason, invoice.period_index, invoice.customer_id) == ("signup", 0, ann.id)
    assert invoice.lines == [
        InvoiceLine(
            LineKind.PERIOD, "basic (month), 2025-04-01 to 2025-05-01", eur(1000), APRIL_1, MAY_1
        )
    ]
    assert invoice.pending is not None
    assert (invoice.pending.attempt, invoice.pending.amount, invoice.pending.payment_method_id) == (
        1,
        eur(1000),
        "pm_1",
    )


def test_a_trial_is_not_invoiced_its_conversion_is() -> None:
    ann = customer()
    sub, invoices = signup(ann, BASIC_WITH_TRIAL, JAN_31)
    assert invoices == []
    trial_end = JAN_31 + timedelta(days=14)
    [invoice] = advance(sub, ann, trial_end)
    assert (invoice.reason, invoice.period_index) == ("trial_conversion", 0)
    assert invoice.lines[0].service_start == trial_end
    assert invoice.lines[0].service_end == utc(2025, 3, 14, 9)


def test_every_renewal_is_invoiced_even_several_in_one_advance() -> None:
    ann = customer()
    sub, _ = signup(ann)
    sub.collect_events()
    invoices = advance(sub, ann, utc(2025, 6, 15))
    assert [(i.reason, i.period_index, i.total) for i in invoices] == [
        ("renewal", 1, eur(1000)),
        ("renewal", 2, eur(1000)),
    ]
    assert [i.id for i in invoices] == [period_invoice_id(sub.id, n) for n in (1, 2)]
    assert invoices[1].lines[0].description == "basic (month), 2025-06-01 to 2025-07-01"


def test_a_period_that_begins_paused_is_not_invoiced() -> None:
    ann = customer()
    sub, _ = signup(ann)
    sub.pause(MID_APRIL)
    assert advance(sub, ann, utc(2025, 5, 15)) == []
    sub.resume(utc(2025, 5, 20))
    [june] = advance(sub, ann, utc(2025, 6, 15))
    assert june.period_index == 2


def test_an_upgrade_within_the_period_is_invoiced_at_once_as_its_proration() -> None:
    ann = customer()
    sub, _ = signup(ann)
    mark = Mark.of(sub)
    sub.change_price(PRO, MID_APRIL)  # 15 of April's 30 days left
    [invoice] = bill(sub, ann, mark, POLICY)
    changed = sub.pending_events[-1]
    assert invoice.id == change_invoice_id(sub.id, changed.originator_version)
    assert (invoice.reason, invoice.period_index) == ("plan_change", 0)
    assert invoice.lines == [
        InvoiceLine(
            LineKind.PRORATION_CREDIT, "unused time on basic (month)", eur(-500), MID_APRIL, MAY_1
        ),
        InvoiceLine(
            LineKind.PRORATION_DEBIT,
            "remaining time on pro (month), 2025-04-16 to 2025-05-01",
            eur(1000),
            MID_APRIL,
            MAY_1,
        ),
    ]
    assert (invoice.subtotal, invoice.amount_due) == (eur(500), eur(500))


def test_a_new_interval_is_invoiced_as_a_new_period_less_the_unused_old_one() -> None:
    ann = customer()
    sub, _ = signup(ann)
    mark = Mark.of(sub)
    sub.change_price(PRO_YEARLY, MID_APRIL)
    [invoice] = bill(sub, ann, mark, POLICY)
    assert invoice.id == period_invoice_id(sub.id, 1)
    assert (invoice.reason, invoice.period_index) == ("plan_change", 1)
    assert amounts(invoice) == [(LineKind.PRORATION_CREDIT, -500), (LineKind.PERIOD, 24000)]
    assert invoice.lines[1].service_end == utc(2026, 4, 16)
    assert invoice.amount_due == eur(23500)


def test_a_downgrade_made_now_credits_the_account_with_the_tax_that_was_added() -> None:
    ann = customer(tax_rate=VAT)
    sub, [first] = signup(ann, PRO)
    assert first.total == eur(2400)
    mark = Mark.of(sub)
    sub.change_price(BASIC, MID_APRIL, ChangeTiming.NOW)  # credit 1000, charge 500
    # The period's invoice added 20% on top: the credited time was paid 1.2 times over.
    assert bill(sub, ann, mark, POLICY, paid_ratio=first.gross_ratio) == []
    assert ann.credit_balance == eur(600)  # 500 and its 20% VAT
    # The next invoice uses that credit: 1000 + 200 VAT, 600 of it from the balance.
    [may] = advance(sub, ann, MAY_1)
    assert (may.total, may.credit_applied, may.amount_due) == (eur(1200), eur(600), eur(600))
    assert ann.credit_balance == eur(0)


def test_a_downgrade_made_now_credits_no_more_than_the_time_when_tax_is_included() -> None:
    ann = customer(tax_rate=TaxRate("VAT", Decimal(20), inclusive=True))
    sub, _ = signup(ann, PRO)
    mark = Mark.of(sub)
    sub.change_price(BASIC, MID_APRIL, ChangeTiming.NOW)
    assert bill(sub, ann, mark, POLICY) == []
    assert ann.credit_balance == eur(500)


def test_an_invoice_the_account_credit_covers_is_paid_without_a_charge() -> None:
    ann = customer(credit=1500)
    _, [invoice] = signup(ann)
    assert (invoice.credit_applied, invoice.amount_due) == (eur(1000), eur(0))
    assert (invoice.status, invoice.pending) == (InvoiceStatus.PAID, None)
    assert ann.credit_balance == eur(500)
    [applied] = ann.collect_events()
    assert isinstance(applied, Customer.CreditAdjusted)
    assert applied.reason == f"applied to {invoice.number}"


# Discounts


def test_a_coupon_at_signup_discounts_the_first_invoice() -> None:
    _, [invoice] = signup(customer(), discount=half_off(0, 0))
    assert amounts(invoice) == [(LineKind.PERIOD, 1000), (LineKind.DISCOUNT, -500)]
    assert invoice.lines[1].description == "coupon HALF"
    assert (invoice.discount, invoice.amount_due) == (eur(500), eur(500))


def test_a_discount_is_taken_off_each_period_it_covers_until_it_ends_mid_advance() -> None:
    ann = customer()
    sub, _ = signup(ann)
    sub.apply_discount(half_off(1, 2), MID_APRIL)  # May and June
    assert sub.mrr == eur(500)
    sub.collect_events()
    invoices = advance(sub, ann, utc(2025, 7, 15))
    assert [(i.period_index, i.discount.amount, i.total.amount) for i in invoices] == [
        (1, 500, 500),
        (2, 500, 500),
        (3, 0, 1000),
    ]
    assert [type(e).__name__ for e in sub.collect_events()] == [
        "Renewed",
        "Renewed",
        "DiscountEnded",
        "Renewed",
    ]
    assert (sub.discount, sub.mrr) == (None, eur(1000))


def test_a_discount_applied_during_a_trial_covers_the_first_paid_period() -> None:
    ann = customer()
    sub, _ = signup(ann, BASIC_WITH_TRIAL, JAN_31)
    sub.apply_discount(half_off(0, 0), JAN_31 + timedelta(days=2))
    [conversion, renewal] = advance(sub, ann, utc(2025, 3, 20))
    assert (conversion.discount, renewal.discount) == (eur(500), eur(0))


def test_a_new_cycle_the_discount_covers_is_discounted() -> None:
    ann = customer()
    sub, _ = signup(ann)
    sub.apply_discount(half_off(1, None), APRIL_1)
    mark = Mark.of(sub)
    sub.change_price(PRO_YEARLY, MID_APRIL)
    [invoice] = bill(sub, ann, mark, POLICY)
    assert amounts(invoice) == [
        (LineKind.PRORATION_CREDIT, -500),
        (LineKind.PERIOD, 24000),
        (LineKind.DISCOUNT, -12000),
    ]


# Collection outcomes


def test_a_signup_without_a_payment_method_is_past_due_at_once() -> None:
    ann = customer(with_card=False)
    sub, [invoice] = signup(ann)
    assert (invoice.status, invoice.failures, invoice.pending) == (InvoiceStatus.OPEN, 1, None)
    assert sub.status is SubscriptionStatus.PAST_DUE
    assert sub.failing_invoices == [invoice.id]


def test_a_failed_charge_puts_the_subscription_past_due_until_a_retry_succeeds() -> None:
    ann = customer()
    sub, [invoice] = signup(ann)
    assert billing.record_payment_failure(invoice, sub, 1, "card_declined", "no", APRIL_1, POLICY)
    assert not billing.record_payment_failure(
        invoice, sub, 1, "card_declined", "no", APRIL_1, POLICY
    )
    assert (sub.status, sub.mrr) == (SubscriptionStatus.PAST_DUE, eur(1000))
    billing.collect(invoice, sub, ann, APRIL_1 + timedelta(days=1), POLICY, retry=True)
    assert billing.record_payment_success(invoice, sub, 2, "ch_2", APRIL_1 + timedelta(days=1))
    assert not billing.record_payment_success(invoice, sub, 2, "ch_2", APRIL_1 + timedelta(days=1))
    assert (sub.status, sub.failing_invoices) == (SubscriptionStatus.ACTIVE, [])
    assert [type(e).__name__ for e in sub.collect_events()][-2:] == ["PastDue", "Recovered"]


def test_when_dunning_runs_out_the_subscription_is_canceled() -> None:
    ann = customer()
    sub, [invoice] = signup(ann)
    week_later = APRIL_1 + timedelta(days=7)
    # A hard decline is not retried: dunning waits a week for a new payment method.
    billing.record_payment_failure(invoice, sub, 1, "stolen_card", "no", APRIL_1, POLICY)
    assert sub.status is SubscriptionStatus.PAST_DUE
    billing.give_up(invoice, sub, week_later, POLICY)
    assert invoice.status is InvoiceStatus.UNCOLLECTIBLE
    assert (sub.status, sub.ended_at, sub.mrr) == (SubscriptionStatus.CANCELED, week_later, eur(0))
    assert not billing.record_payment_success(invoice, sub, 1, "ch_late", week_later)


def test_dunning_can_leave_the_subscription_unpaid_and_its_periods_unbilled() -> None:
    leave_unpaid = DunningPolicy((), ExhaustedAction.LEAVE_UNPAID)
    ann = customer()
    sub, [invoice] = signup(ann)
    # Without retries, the first failure ends dunning at once.
    billing.record_payment_failure(invoice, sub, 1, "card_declined", "no", APRIL_1, leave_unpaid)
    assert invoice.status is InvoiceStatus.UNCOLLECTIBLE
    assert (sub.status, sub.ended_at, sub.mrr) == (SubscriptionStatus.UNPAID, None, eur(0))
    assert advance(sub, ann, JUNE_1) == []
    assert sub.period.index == 2
