"""Stories an audit of automated billing turned up: money returned twice, dunning that
never ends or retries in bursts, coupons and tax credits that outlive what they were
given for, history out of order, and a refused transition that is accepted.

Each story states what a business expects, with the figures worked out by hand.

The shop's catalog: Basic 10 EUR a month, Pro 20 EUR a month (14-day trial, skipped here
with ``trial_days=0``). The clock starts on Fri 31 Jan 2025 at 09:00 UTC; the first
period runs to 28 Feb 09:00, 28 days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate

from commands import schemas as s
from ledger.dunning import DunningPolicy, ExhaustedAction
from ledger.errors import CannotChangeNowWhilePastDue, SubscriptionNotPaused
from ledger.invoices import InvoiceStatus, period_invoice_id
from ledger.subscriptions import SubscriptionStatus
from tests.integration.conftest import Shop


def on(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


def pro_paid_on_31_january(shop: Shop, customer_id: UUID) -> UUID:
    """A Pro subscription without trial, its 2000 collected on 31 Jan."""
    sub_id = shop.subscribe(customer_id, "pro", trial_days=0)
    shop.pay()
    return sub_id


def declining_customer(shop: Shop, token: str) -> UUID:
    customer_id = shop.customer(with_card=False)
    shop.card(customer_id, token=token)
    return customer_id


# Refunds


def test_a_downgrade_then_a_cancel_never_give_back_more_than_the_unused_time(
    shop: Shop,
) -> None:
    ann = shop.customer()
    sub_id = pro_paid_on_31_january(shop, ann)
    # 15 Feb 09:00, 13 of 28 days left. Downgrade now: credit 2000 * 13/28 = 928.57 -> 929,
    # charge 1000 * 13/28 = 464.29 -> 464, so 929 - 464 = 465 goes to the account.
    shop.clock.advance_to(on(2, 15))
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic", when="now")
    assert shop.ledger.customer(ann).credit_balance.amount == 465
    # Cancel at once: what is unused now is 13 days of Basic, 464. Ann paid 2000 for Pro
    # and used 15 days of it (2000 - 929 = 1071): 929 in all is hers, 465 of it already
    # as credit, so the refund is 929 - 465 = 464. Today it refunds 13/28 of the 2000
    # paid (929) on top of the credit: 1394 back for 929 of unused time.
    result = shop.send(s.CancelSubscription, subscription_id=sub_id, when="now", refund_unused=True)
    assert result["refund"] == {"amount": 464, "currency": "EUR"}
    shop.pay()
    returned = sum(r.amount.amount for r in shop.sandbox.refunds() if r.outcome == "succeeded")
    assert returned + shop.ledger.customer(ann).credit_balance.amount == 929


# Credit balance and tax


def test_a_downgrade_credits_only_the_tax_that_was_paid(shop: Shop) -> None:
    ann = shop.customer()
    sub_id = pro_paid_on_31_january(shop, ann)  # invoiced 2000, no tax rate then
    shop.clock.advance_to(on(2, 1))
    shop.send(s.SetTaxRate, customer_id=ann, name="VAT", percent=Decimal("20"), inclusive=False)
    assert shop.ledger.invoice(period_invoice_id(sub_id, 0)).tax.amount == 0
    # 15 Feb: 929 - 464 = 465 owed to Ann. No tax was paid on the period, so none is owed
    # back: 465. Today 465 + 20% of 465 (93) = 558 is credited.
    shop.clock.advance_to(on(2, 15))
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic", when="now")
    assert shop.ledger.customer(ann).credit_balance.amount == 465


def test_a_change_made_now_while_past_due_is_refused_and_credits_nothing(shop: Shop) -> None:
    ann = declining_customer(shop, "tok_chargeDeclined")
    sub_id = shop.subscribe(ann, "pro", trial_days=0)
    shop.pay()  # 31 Jan: the 2000 is declined, Ann is past due
    shop.run_until(on(2, 1))  # retry 2 declined
    # 3 Feb: a downgrade made now would credit 2000 * 25/28 - 1000 * 25/28 = 893 of time
    # never paid for. It is refused; at period end it is still possible.
    shop.clock.advance_to(on(2, 3))
    with pytest.raises(CannotChangeNowWhilePastDue):
        shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic", when="now")
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic", when="period_end")
    for day in (3, 5, 7):  # retries 3 to 5 declined; dunning gives up on 7 Feb
        shop.run_until(on(2, day))
    assert shop.ledger.invoice(period_invoice_id(sub_id, 0)).status is InvoiceStatus.UNCOLLECTIBLE
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.CANCELED
    assert shop.ledger.customer(ann).credit_balance.amount == 0


# Coupons


def test_a_coupon_for_basic_does_not_discount_pro_after_an_upgrade(shop: Shop) -> None:
    shop.send(
        s.RegisterCoupon,
        code="BASIC50",
        percent_off=Decimal("50"),
        duration="forever",
        plan_codes=["basic"],
    )
    sub_id = shop.subscribe(shop.customer(), "basic", coupon="BASIC50")  # 500 a month
    shop.pay()
    # 10 Feb: upgrade to Pro. The coupon is for Basic only, so Pro is charged in full
    # from now on: MRR 2000, and the renewal on 28 Feb is 2000 with no discount line.
    # Today Pro keeps 50% off forever: MRR 1000, renewal 2000 - 1000 = 1000.
    shop.clock.advance_to(on(2, 10))
    upgraded = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")
    assert upgraded["mrr"] == {"amount": 2000, "currency": "EUR"}
    shop.run_until(on(2, 28))
    renewal = shop.ledger.invoice(period_invoice_id(sub_id, 1))
    assert (renewal.discount.amount, renewal.total.amount) == (0, 2000)


# Dunning


def test_a_new_default_card_that_expires_before_the_retry_does_not_stall_dunning(
    shop: Shop,
) -> None:
    ann = declining_customer(shop, "tok_chargeDeclinedExpiredCard")
    sub_id = shop.subscribe(ann)
    shop.pay()  # 31 Jan 09:00: a hard decline; dunning waits for a new card until 7 Feb
    # 31 Jan 10:00: a new default card, valid to the end of January only.
    shop.clock.advance_to(on(1, 31, 10))
    shop.send(
        s.AddPaymentMethod,
        customer_id=ann,
        payment_method_id="pm_2",
        token="tok_visa",
        last4="4242",
        exp_month=1,
        exp_year=2025,
        make_default=True,
    )
    # The clock next ticks on 1 Feb, when the card has expired: no retry can go. Dunning
    # must still give up on 7 Feb 09:00 (uncollectible, canceled) and leave nothing due.
    # Today the row stays "payment_retry due 31 Jan 10:00" forever, every tick retries in
    # vain, and the invoice stays open.
    for day in (1, 7, 8):
        shop.run_until(on(2, day))
    first = shop.ledger.invoice(period_invoice_id(sub_id, 0))
    assert first.status is InvoiceStatus.UNCOLLECTIBLE
    assert shop.ledger.subscription(sub_id).ended_at == on(2, 7)
    due = shop.projector.database.query("SELECT kind FROM due_collections", ())
    assert due == []


def test_a_new_card_declined_late_in_dunning_is_not_retried_in_a_burst(shop: Shop) -> None:
    ann = declining_customer(shop, "tok_chargeDeclinedExpiredCard")
    shop.subscribe(ann)
    shop.pay()  # 31 Jan: a hard decline (failure 1); dunning ends 7 Feb 09:00
    # 6 Feb: a new default card, which lacks funds: attempt 2 fails (failure 2).
    shop.clock.advance_to(on(2, 6))
    shop.card(ann, "pm_2", token="tok_chargeDeclinedInsufficientFunds", make_default=True)
    # Ticks every 5 seconds, as `subledger serve` does. The next retry day still to come
    # is 31 Jan + 7 = 7 Feb 09:00: nothing more on 6 Feb. Today failure 2 schedules the
    # 2nd retry day (3 Feb, past), failure 3 the 3rd (5 Feb, past): the card is charged
    # three times in ten seconds.
    retries = [shop.run_until(on(2, 6) + timedelta(seconds=5 * n)).retries for n in range(3)]
    assert retries == [1, 0, 0]
    assert len(shop.sandbox.charges()) == 2


def test_an_unpaid_subscription_cannot_be_resumed(shop: Shop) -> None:
    shop.ledger.dunning_policy = DunningPolicy((), ExhaustedAction.LEAVE_UNPAID)
    sub_id = shop.subscribe(declining_customer(shop, "tok_chargeDeclined"))
    shop.pay()  # no retries: the first decline leaves the subscription unpaid at once
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.UNPAID
    shop.clock.advance_to(on(2, 1))
    # Unpaid "cannot be paused or resumed; no command makes it active again yet"
    # (docs/billing.md, docs/commands.md). Today it is accepted: active, MRR 1000, with
    # its 1000 still uncollectible.
    with pytest.raises(SubscriptionNotPaused):
        shop.send(s.ResumeSubscription, subscription_id=sub_id)
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.UNPAID


# History


def test_credit_applied_by_a_late_renewal_keeps_the_customer_history_in_order(
    shop: Shop,
) -> None:
    ann = shop.customer()
    sub_id = pro_paid_on_31_january(shop, ann)
    shop.clock.advance_to(on(2, 15))
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic", when="now")  # 465
    # The renewal is due 28 Feb 09:00; Ann changes her email on 1 Mar before the clock
    # catches up at 10:00, and the renewal's invoice applies her 465 of credit.
    shop.clock.advance_to(on(3, 1))
    shop.send(s.ChangeCustomerContact, customer_id=ann, email="ann@example.org", name="Ann")
    shop.run_until(on(3, 1, 10))
    assert shop.ledger.invoice(period_invoice_id(sub_id, 1)).credit_applied.amount == 465
    # Today the CreditAdjusted is stamped 28 Feb 09:00, after the 1 Mar ContactChanged.
    events = list(shop.ledger.repository.event_store.get(ann))
    stamps = [e.timestamp for e in events if isinstance(e, Aggregate.Event)]
    assert len(stamps) == len(events)
    assert stamps == sorted(stamps)
