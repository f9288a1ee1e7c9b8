"""Billing as a business lives it: renewals, trials, coupons, tax, plan changes, dunning
and refunds, invoiced by the billing clock and collected by the payment processor on the
sandbox gateway, on SQLite and on PostgreSQL.

The shop's catalog: Basic 10 EUR a month, Pro 20 EUR a month with a 14-day trial. The
clock starts on Fri 31 Jan 2025 at 09:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from commands import schemas as s
from ledger.dunning import DunningPolicy, ExhaustedAction
from ledger.errors import (
    CouponExhausted,
    CouponExpired,
    CouponNotApplicable,
    InvalidRefund,
    NotFound,
    RefundExceedsPaid,
)
from ledger.invoices import (
    Invoice,
    InvoiceStatus,
    LineKind,
    change_invoice_id,
    payment_key,
    period_invoice_id,
    refund_key,
)
from ledger.subscriptions import SubscriptionStatus
from tests.integration.conftest import Shop


def on(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


def invoice(shop: Shop, sub_id: UUID, period_index: int) -> Invoice:
    return shop.ledger.invoice(period_invoice_id(sub_id, period_index))


def lines(invoice: Invoice) -> list[tuple[LineKind, int]]:
    return [(line.kind, line.amount.amount) for line in invoice.lines]


def charged(shop: Shop) -> list[tuple[str, int, str]]:
    """What the sandbox recorded: (idempotency key, amount, outcome), in order."""
    return [(c.key, c.amount.amount, c.outcome) for c in shop.sandbox.charges()]


def eur(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


# Renewals and trials


def test_a_signup_on_the_31st_renews_at_each_month_end_and_each_period_is_paid_once(
    shop: Shop,
) -> None:
    sub_id = shop.subscribe(shop.customer())
    shop.pay()
    for month, day in ((2, 28), (3, 31), (4, 30)):
        assert shop.run_until(on(month, day)).subscriptions == 1
    # Periods 0-3 start on the anchor day (the 31st) or the month's last day before it.
    invoices = [invoice(shop, sub_id, n) for n in range(4)]
    assert [(i.reason, i.status, i.total.amount) for i in invoices] == [
        ("signup", InvoiceStatus.PAID, 1000),
        ("renewal", InvoiceStatus.PAID, 1000),
        ("renewal", InvoiceStatus.PAID, 1000),
        ("renewal", InvoiceStatus.PAID, 1000),
    ]
    assert [(i.lines[0].service_start, i.lines[0].service_end) for i in invoices] == [
        (on(1, 31), on(2, 28)),
        (on(2, 28), on(3, 31)),
        (on(3, 31), on(4, 30)),
        (on(4, 30), on(5, 31)),
    ]
    assert charged(shop) == [(payment_key(i.id, 1), 1000, "succeeded") for i in invoices]


def test_a_trial_with_a_card_converts_into_a_paid_first_period(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer(), "pro")  # trial until 14 Feb 09:00
    shop.pay()
    assert shop.ledger.event_counts_by_type()["Invoice.Issued"] == 0  # a trial is free
    shop.run_until(on(2, 14))
    first = invoice(shop, sub_id, 0)
    assert (first.reason, first.status, first.total.amount) == (
        "trial_conversion",
        InvoiceStatus.PAID,
        2000,
    )
    assert (first.lines[0].service_start, first.lines[0].service_end) == (on(2, 14), on(3, 14))
    assert charged(shop) == [(payment_key(first.id, 1), 2000, "succeeded")]
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.ACTIVE


def test_a_trial_without_a_card_expires_without_an_invoice(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer(with_card=False), "pro")
    shop.run_until(on(2, 14))
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.EXPIRED
    with pytest.raises(NotFound):
        invoice(shop, sub_id, 0)
    assert shop.ledger.event_counts_by_type()["Invoice.Issued"] == 0
    assert charged(shop) == []


# Coupons


@pytest.mark.parametrize(
    ("coupon", "totals"),
    [
        # 25% of 1000 = 250 off period 0 only.
        pytest.param({"percent_off": Decimal(25)}, [750, 1000, 1000, 1000], id="once-25%"),
        # 3 EUR off periods 0, 1 and 2.
        pytest.param(
            {"amount_off": 300, "currency": "EUR", "duration": "repeating", "duration_periods": 3},
            [700, 700, 700, 1000],
            id="repeating-3-periods-3-EUR",
        ),
        # 33.33% of 1000 = 333.3, rounded to 333: 667 every period.
        pytest.param(
            {"percent_off": Decimal("33.33"), "duration": "forever"},
            [667, 667, 667, 667],
            id="forever-33.33%",
        ),
    ],
)
def test_a_coupon_discounts_the_periods_its_duration_covers(
    shop: Shop, coupon: dict[str, Any], totals: list[int]
) -> None:
    shop.send(s.RegisterCoupon, code="WELCOME", **coupon)
    sub_id = shop.subscribe(shop.customer(), coupon="WELCOME")
    shop.pay()
    for month, day in ((2, 28), (3, 31), (4, 30)):
        shop.run_until(on(month, day))
    invoices = [invoice(shop, sub_id, n) for n in range(4)]
    assert [lines(i) for i in invoices] == [
        [(LineKind.PERIOD, 1000), (LineKind.DISCOUNT, total - 1000)]
        if total < 1000
        else [(LineKind.PERIOD, 1000)]
        for total in totals
    ]
    assert [(i.discount.amount, i.total.amount) for i in invoices] == [
        (1000 - total, total) for total in totals
    ]
    assert charged(shop) == [
        (payment_key(i.id, 1), total, "succeeded")
        for i, total in zip(invoices, totals, strict=True)
    ]
    # MRR after the discount: 667 while a forever coupon lasts, the full price after others.
    assert shop.ledger.subscription(sub_id).mrr.amount == totals[-1]


def test_an_amount_off_never_takes_more_than_the_charge(shop: Shop) -> None:
    shop.send(s.RegisterCoupon, code="BIG", amount_off=1500, currency="EUR")
    sub_id = shop.subscribe(shop.customer(), coupon="BIG")
    shop.pay()
    first = invoice(shop, sub_id, 0)
    # 15 EUR off a 10 EUR period: 10 off, nothing to pay, nothing charged.
    assert lines(first) == [(LineKind.PERIOD, 1000), (LineKind.DISCOUNT, -1000)]
    assert (first.discount.amount, first.total.amount, first.amount_due.amount) == (1000, 0, 0)
    assert first.status is InvoiceStatus.PAID
    assert charged(shop) == []


def test_coupons_are_refused_when_expired_used_up_for_another_plan_or_currency(
    shop: Shop,
) -> None:
    shop.send(s.RegisterCoupon, code="SHORT", percent_off=Decimal(10), expires_at=on(2, 1))
    shop.send(s.RegisterCoupon, code="ONLYONE", percent_off=Decimal(10), max_redemptions=1)
    shop.send(s.RegisterCoupon, code="PROONLY", percent_off=Decimal(10), plan_codes=["pro"])
    shop.send(s.RegisterCoupon, code="DOLLARS", amount_off=500, currency="USD")
    customer_id = shop.customer()
    shop.subscribe(customer_id, coupon="ONLYONE")
    with pytest.raises(CouponExhausted):
        shop.subscribe(customer_id, coupon="ONLYONE")
    with pytest.raises(CouponNotApplicable, match="pro"):
        shop.subscribe(customer_id, coupon="PROONLY")
    with pytest.raises(CouponNotApplicable, match="USD"):
        shop.subscribe(customer_id, coupon="DOLLARS")
    shop.clock.advance_to(on(2, 1))
    with pytest.raises(CouponExpired):
        shop.subscribe(customer_id, coupon="SHORT")
    assert shop.ledger.event_counts_by_type()["Subscription.Started"] == 1


def test_a_coupon_applied_later_discounts_the_next_invoice_not_the_current_one(
    shop: Shop,
) -> None:
    shop.send(s.RegisterCoupon, code="HALF", percent_off=Decimal(50))
    sub_id = shop.subscribe(shop.customer())
    shop.pay()
    shop.clock.advance_to(on(2, 10))
    shop.send(s.ApplyCoupon, subscription_id=sub_id, coupon="HALF")
    shop.run_until(on(2, 28))
    shop.run_until(on(3, 31))
    invoices = [invoice(shop, sub_id, n) for n in range(3)]
    # Period 0 was invoiced before the coupon; 50% of 1000 off period 1; period 2 in full.
    assert [i.total.amount for i in invoices] == [1000, 500, 1000]
    assert lines(invoices[1]) == [(LineKind.PERIOD, 1000), (LineKind.DISCOUNT, -500)]
    assert [amount for _, amount, _ in charged(shop)] == [1000, 500, 1000]


# Tax


@pytest.mark.parametrize(
    ("inclusive", "label", "tax", "total"),
    [
        # 20% on top of 1000.
        (False, "VAT 20% (added)", 200, 1200),
        # The part of 1000 that is 20% tax: 1000 * 20/120 = 166.67, rounded to 167.
        (True, "VAT 20% (included)", 167, 1000),
    ],
    ids=["exclusive", "inclusive"],
)
def test_tax_is_its_own_line(shop: Shop, inclusive: bool, label: str, tax: int, total: int) -> None:
    customer_id = shop.customer()
    shop.send(s.SetTaxRate, customer_id=customer_id, percent=Decimal(20), inclusive=inclusive)
    sub_id = shop.subscribe(customer_id)
    shop.pay()
    first = invoice(shop, sub_id, 0)
    assert [(line.kind, line.description, line.amount.amount) for line in first.lines] == [
        (LineKind.PERIOD, "basic (month), 2025-01-31 to 2025-02-28", 1000),
        (LineKind.TAX, label, tax),
    ]
    assert (first.subtotal.amount, first.tax.amount, first.total.amount) == (1000, tax, total)
    assert charged(shop) == [(payment_key(first.id, 1), total, "succeeded")]


# Plan changes


def test_an_upgrade_mid_period_invoices_its_proration_at_once(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer())  # Basic, 31 Jan -> 28 Feb: 28 days
    shop.pay()
    shop.clock.advance_to(on(2, 14))  # half way: 14 of 28 days left
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")
    change_id = change_invoice_id(sub_id, shop.ledger.subscription(sub_id).version)
    assert [UUID(i["invoice_id"]) for i in result["invoices"]] == [change_id]
    shop.pay()
    change = shop.ledger.invoice(change_id)
    # Credit half of Basic's 1000, charge half of Pro's 2000: 1000 - 500 = 500 due.
    assert lines(change) == [(LineKind.PRORATION_CREDIT, -500), (LineKind.PRORATION_DEBIT, 1000)]
    assert (change.reason, change.period_index) == ("plan_change", 0)
    assert (change.total.amount, change.amount_due.amount) == (500, 500)
    assert change.status is InvoiceStatus.PAID
    shop.run_until(on(2, 28))
    assert invoice(shop, sub_id, 1).total.amount == 2000  # Pro from the next period
    assert [amount for _, amount, _ in charged(shop)] == [1000, 500, 2000]


def test_a_downgrade_made_now_credits_the_account_and_the_next_invoice_uses_it(
    shop: Shop,
) -> None:
    customer_id = shop.customer()
    sub_id = shop.subscribe(customer_id, "pro", trial_days=0)  # 2000, 31 Jan -> 28 Feb
    shop.pay()
    shop.clock.advance_to(on(2, 14))
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic", when="now")
    # Half of Pro's 2000 back, half of Basic's 1000 owed: 500 to the customer's credit.
    assert result["invoices"] == []
    assert result["proration"]["net"] == eur(-500)
    assert shop.ledger.customer(customer_id).credit_balance.amount == 500
    shop.run_until(on(2, 28))
    renewal = invoice(shop, sub_id, 1)
    assert (renewal.total.amount, renewal.credit_applied.amount, renewal.amount_due.amount) == (
        1000,
        500,
        500,
    )
    assert renewal.status is InvoiceStatus.PAID
    assert shop.ledger.customer(customer_id).credit_balance.amount == 0
    assert [amount for _, amount, _ in charged(shop)] == [2000, 500]


# Dunning (default policy: retries 1, 3, 5 and 7 days after the first failure)


def declining_customer(shop: Shop, token: str) -> UUID:
    customer_id = shop.customer(with_card=False)
    shop.card(customer_id, token=token)
    return customer_id


def retries_each_day(shop: Shop, days: range) -> list[int]:
    """Runs the shop day by day through February ``days``, at 09:00; the retries of each."""
    return [shop.run_until(on(2, day)).retries for day in days]


@pytest.mark.parametrize(
    ("on_exhausted", "status", "ended_at", "period_on_28_feb"),
    [
        (ExhaustedAction.CANCEL, SubscriptionStatus.CANCELED, on(2, 7), 0),
        # Left unpaid, the subscription rolls on into period 1, which is not billed.
        (ExhaustedAction.LEAVE_UNPAID, SubscriptionStatus.UNPAID, None, 1),
    ],
    ids=["canceled", "left-unpaid"],
)
def test_a_soft_decline_is_retried_on_schedule_until_dunning_gives_up(
    shop: Shop,
    on_exhausted: ExhaustedAction,
    status: SubscriptionStatus,
    ended_at: datetime | None,
    period_on_28_feb: int,
) -> None:
    shop.ledger.dunning_policy = DunningPolicy(on_exhausted=on_exhausted)
    sub_id = shop.subscribe(declining_customer(shop, "tok_chargeDeclined"))
    shop.pay()  # the first failure, 31 Jan 09:00
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.PAST_DUE
    # Retries on 1, 3, 5 and 7 Feb; the fourth fails on the last day of dunning.
    assert retries_each_day(shop, range(1, 9)) == [1, 0, 1, 0, 1, 0, 1, 0]
    first = invoice(shop, sub_id, 0)
    assert (first.status, first.attempts, first.failures) == (InvoiceStatus.UNCOLLECTIBLE, 5, 5)
    assert charged(shop) == [(payment_key(first.id, n), 1000, "declined") for n in range(1, 6)]
    sub = shop.ledger.subscription(sub_id)
    assert (sub.status, sub.ended_at, sub.mrr.amount) == (status, ended_at, 0)
    shop.run_until(on(2, 28))
    assert shop.ledger.subscription(sub_id).period.index == period_on_28_feb
    assert shop.ledger.event_counts_by_type()["Invoice.Issued"] == 1
    assert len(charged(shop)) == 5


def test_a_retry_that_succeeds_recovers_the_subscription(shop: Shop) -> None:
    # The first two charges of this card fail for lack of funds, then it is topped up.
    sub_id = shop.subscribe(declining_customer(shop, "tok_recoversAfter_2"))
    shop.pay()
    assert retries_each_day(shop, range(1, 8)) == [1, 0, 1, 0, 0, 0, 0]
    first = invoice(shop, sub_id, 0)
    assert (first.status, first.attempts) == (InvoiceStatus.PAID, 3)
    assert charged(shop) == [
        (payment_key(first.id, 1), 1000, "declined"),
        (payment_key(first.id, 2), 1000, "declined"),
        (payment_key(first.id, 3), 1000, "succeeded"),
    ]
    sub = shop.ledger.subscription(sub_id)
    assert (sub.status, sub.mrr.amount) == (SubscriptionStatus.ACTIVE, 1000)
    assert shop.ledger.event_counts_by_type()["Subscription.Recovered"] == 1


def test_a_hard_decline_is_not_retried_and_cancels_when_dunning_ends(shop: Shop) -> None:
    sub_id = shop.subscribe(declining_customer(shop, "tok_chargeDeclinedExpiredCard"))
    shop.pay()
    # An expired card fails again: no retry; on 7 Feb, a week after, dunning gives up.
    assert [shop.run_until(on(2, day)).total for day in range(1, 8)] == [0, 0, 0, 0, 0, 0, 1]
    first = invoice(shop, sub_id, 0)
    assert (first.status, first.attempts) == (InvoiceStatus.UNCOLLECTIBLE, 1)
    assert charged(shop) == [(payment_key(first.id, 1), 1000, "declined")]
    sub = shop.ledger.subscription(sub_id)
    assert (sub.status, sub.ended_at) == (SubscriptionStatus.CANCELED, on(2, 7))


def test_a_new_card_after_a_hard_decline_is_charged_at_once(shop: Shop) -> None:
    customer_id = declining_customer(shop, "tok_chargeDeclinedExpiredCard")
    sub_id = shop.subscribe(customer_id)
    shop.pay()
    assert retries_each_day(shop, range(1, 4)) == [0, 0, 0]
    shop.clock.advance_to(on(2, 3, hour=15))
    shop.card(customer_id, "pm_2", token="tok_visa", make_default=True)
    assert shop.run_until(on(2, 3, hour=15)).retries == 1
    first = invoice(shop, sub_id, 0)
    assert (first.status, first.attempts) == (InvoiceStatus.PAID, 2)
    assert charged(shop) == [
        (payment_key(first.id, 1), 1000, "declined"),
        (payment_key(first.id, 2), 1000, "succeeded"),
    ]
    assert shop.sandbox.charges()[1].token == "tok_visa"
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.ACTIVE
    assert retries_each_day(shop, range(4, 9)) == [0, 0, 0, 0, 0]


def test_the_dunning_schedule_is_the_business_s_choice(shop: Shop) -> None:
    shop.ledger.dunning_policy = DunningPolicy(retry_days=(2,))
    sub_id = shop.subscribe(declining_customer(shop, "tok_chargeDeclinedInsufficientFunds"))
    shop.pay()
    # One retry, two days after the first failure; its failure ends dunning at once.
    assert retries_each_day(shop, range(1, 5)) == [0, 1, 0, 0]
    first = invoice(shop, sub_id, 0)
    assert (first.status, first.attempts) == (InvoiceStatus.UNCOLLECTIBLE, 2)
    sub = shop.ledger.subscription(sub_id)
    assert (sub.status, sub.ended_at) == (SubscriptionStatus.CANCELED, on(2, 2))


# Refunds


def paid_signup(shop: Shop) -> Invoice:
    sub_id = shop.subscribe(shop.customer())
    shop.pay()
    return invoice(shop, sub_id, 0)


def refunded(shop: Shop) -> list[tuple[str, str, int, str]]:
    """What the sandbox refunded: (key, charge refunded, amount, outcome), in order."""
    return [(r.key, r.charge_reference, r.amount.amount, r.outcome) for r in shop.sandbox.refunds()]


def test_a_full_refund_goes_back_through_the_gateway(shop: Shop) -> None:
    paid = paid_signup(shop)
    result = shop.send(s.RefundInvoice, invoice_id=paid.id, reason="not what I wanted")
    assert (result["refund_number"], result["refund"]) == (1, eur(1000))
    assert shop.pay().refunded == 1
    assert refunded(shop) == [(refund_key(paid.id, 1), paid.payment_reference, 1000, "succeeded")]
    after = shop.ledger.invoice(paid.id)
    assert (after.refunded.amount, after.refundable.amount) == (1000, 0)
    with pytest.raises(RefundExceedsPaid):
        shop.send(s.RefundInvoice, invoice_id=paid.id, amount=1)


def test_partial_refunds_never_add_up_to_more_than_was_paid(shop: Shop) -> None:
    paid = paid_signup(shop)
    shop.send(s.RefundInvoice, invoice_id=paid.id, amount=300)
    shop.send(s.RefundInvoice, invoice_id=paid.id, amount=200)
    # 1000 paid, 500 refunded (or on its way): 600 more is too much.
    with pytest.raises(RefundExceedsPaid) as refusal:
        shop.send(s.RefundInvoice, invoice_id=paid.id, amount=600)
    assert refusal.value.code == "refund_exceeds_paid"
    assert shop.pay().refunded == 2
    assert [(key, amount) for key, _, amount, _ in refunded(shop)] == [
        (refund_key(paid.id, 1), 300),
        (refund_key(paid.id, 2), 200),
    ]
    after = shop.ledger.invoice(paid.id)
    assert (after.refunded.amount, after.refundable.amount) == (500, 500)


def test_an_unpaid_invoice_cannot_be_refunded(shop: Shop) -> None:
    sub_id = shop.subscribe(declining_customer(shop, "tok_chargeDeclined"))
    shop.pay()
    with pytest.raises(InvalidRefund, match="not paid"):
        shop.send(s.RefundInvoice, invoice_id=period_invoice_id(sub_id, 0))
    assert refunded(shop) == []


def test_cancel_now_refunds_the_unused_part_through_the_gateway(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer())
    shop.pay()
    shop.clock.advance_to(on(2, 21))  # 7 of 28 days left: 1000 * 7/28 = 250
    result = shop.send(s.CancelSubscription, subscription_id=sub_id, when="now", refund_unused=True)
    assert result["refund"] == eur(250)
    assert shop.pay().refunded == 1
    paid = invoice(shop, sub_id, 0)
    assert refunded(shop) == [(refund_key(paid.id, 1), paid.payment_reference, 250, "succeeded")]
    assert paid.refunded.amount == 250
