"""The life of a subscription, told as stories, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from pydantic import ValidationError

from commands import schemas as s
from commands.bootstrap import bootstrap
from commands.lifecycle import advance_subscription
from ledger.application import Ledger
from ledger.errors import (
    CurrencyMismatch,
    NoPriceInCurrency,
    PlanAlreadyRegistered,
    PriceArchived,
    SamePrice,
    SubscriptionAlreadyCanceled,
    SubscriptionEnded,
)
from ledger.invoices import period_invoice_id
from ledger.subscriptions import Subscription, SubscriptionStatus
from tests.integration.conftest import Shop


def tick(shop: Shop, subscription_id: UUID, days: int) -> Subscription:
    shop.clock.advance(timedelta(days=days))
    return advance_subscription(shop.ledger, subscription_id, shop.clock.now())


def test_a_trial_with_a_card_converts_and_renews_on_the_anchor_day(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer(), "pro")
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.TRIALING
    sub = tick(shop, sub_id, 14)
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.period.start == datetime(2025, 2, 14, 9, tzinfo=UTC)
    sub = tick(shop, sub_id, 31)
    assert sub.period.index == 1
    assert sub.period.start == datetime(2025, 3, 14, 9, tzinfo=UTC)


def test_a_trial_without_a_card_expires_and_cannot_be_upgraded(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer(with_card=False), "pro")
    assert tick(shop, sub_id, 15).status is SubscriptionStatus.EXPIRED
    with pytest.raises(SubscriptionEnded, match="expired"):
        shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic")


def test_a_card_added_during_the_trial_converts_it(shop: Shop) -> None:
    customer_id = shop.customer(with_card=False)
    sub_id = shop.subscribe(customer_id, "pro")
    shop.clock.advance(timedelta(days=10))
    shop.card(customer_id)
    assert tick(shop, sub_id, 4).status is SubscriptionStatus.ACTIVE


def test_a_card_added_after_the_trial_ended_does_not_convert_it(shop: Shop) -> None:
    customer_id = shop.customer(with_card=False)
    sub_id = shop.subscribe(customer_id, "pro")
    shop.clock.advance(timedelta(days=15))
    shop.card(customer_id)  # a day late; the clock had not yet run
    assert tick(shop, sub_id, 0).status is SubscriptionStatus.EXPIRED


def test_an_anchor_on_the_31st_survives_february(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer())
    starts = [tick(shop, sub_id, days).period.start.date().isoformat() for days in (28, 31, 30)]
    assert starts == ["2025-02-28", "2025-03-31", "2025-04-30"]


def test_an_upgrade_mid_period_is_prorated_now(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer())  # 31 Jan -> 28 Feb: 28 days
    shop.clock.advance(timedelta(days=14))
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")
    assert result["price_id"] == "pro-month-eur-v1"
    assert result["proration"]["credit"] == {"amount": 500, "currency": "EUR"}
    assert result["proration"]["charge"] == {"amount": 1000, "currency": "EUR"}
    [invoice] = result["invoices"]  # invoiced at once
    assert (invoice["reason"], invoice["amount_due"]["amount"]) == ("plan_change", 500)
    assert shop.ledger.subscription(sub_id).mrr.amount == 2000


def test_a_downgrade_waits_for_the_period_end(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer(), "pro", trial_days=0)
    shop.clock.advance(timedelta(days=3))
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic")
    assert result["proration"] is None
    assert result["price_id"] == "pro-month-eur-v1"
    assert result["scheduled_price_id"] == "basic-month-eur-v1"
    assert tick(shop, sub_id, 25).price.id == "basic-month-eur-v1"


def test_a_scheduled_downgrade_is_called_off_by_choosing_the_current_plan(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer(), "pro", trial_days=0)
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic")
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")
    assert result["scheduled_price_id"] is None
    assert tick(shop, sub_id, 28).price.id == "pro-month-eur-v1"
    with pytest.raises(SamePrice):
        shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")


def test_a_downgrade_now_leaves_credit_on_the_account(shop: Shop) -> None:
    customer_id = shop.customer()
    sub_id = shop.subscribe(customer_id, "pro", trial_days=0)
    shop.clock.advance(timedelta(days=14))
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic", when="now")
    assert result["proration"]["net"] == {"amount": -500, "currency": "EUR"}
    assert shop.ledger.customer(customer_id).credit_balance.amount == 500


def test_cancel_now_with_a_refund_of_the_unused_part(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer())
    assert shop.pay().charged == 1  # the first period, 10 EUR
    shop.clock.advance(timedelta(days=21))
    result = shop.send(s.CancelSubscription, subscription_id=sub_id, when="now", refund_unused=True)
    assert result["status"] == "canceled"
    assert result["refund"] == {"amount": 250, "currency": "EUR"}  # 7 of February's 28 days
    # The refund goes back through the gateway that took the payment.
    assert shop.pay().refunded == 1
    invoice = shop.ledger.invoice(period_invoice_id(sub_id, 0))
    assert (invoice.refunded.amount, invoice.refundable.amount) == (250, 750)
    with pytest.raises(SubscriptionAlreadyCanceled):
        shop.send(s.CancelSubscription, subscription_id=sub_id, when="now")


def test_cancel_now_refunds_no_more_than_was_paid(shop: Shop) -> None:
    customer_id = shop.customer(with_card=False)
    shop.card(customer_id, token="tok_chargeDeclined")
    sub_id = shop.subscribe(customer_id)
    assert shop.pay().declined == 1
    shop.clock.advance(timedelta(days=21))
    result = shop.send(s.CancelSubscription, subscription_id=sub_id, when="now", refund_unused=True)
    assert result["refund"] == {"amount": 0, "currency": "EUR"}
    # The event records what is returned, not what the time was worth.
    assert canceled_refund(shop, sub_id) == 0


def test_the_cancel_records_the_refund_the_invoice_allows(shop: Shop) -> None:
    """After an upgrade, the rest of the period is worth more than the period's invoice
    can give back: the cancel records the refund requested, as its answer says."""
    sub_id = shop.subscribe(shop.customer())
    shop.pay()
    shop.clock.advance(timedelta(days=7))
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")
    shop.pay()
    result = shop.send(s.CancelSubscription, subscription_id=sub_id, when="now", refund_unused=True)
    assert result["refund"] == {"amount": 1000, "currency": "EUR"}  # all of the 10 EUR paid
    assert canceled_refund(shop, sub_id) == 1000
    assert shop.ledger.subscription(sub_id).unused_value(shop.clock.now()).amount > 1000


def canceled_refund(shop: Shop, sub_id: UUID) -> int:
    [canceled] = [e for e in shop.ledger.events.get(sub_id) if isinstance(e, Subscription.Canceled)]
    return canceled.refund.amount


def test_cancel_at_period_end_can_be_revoked_before_it_happens(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer())
    result = shop.send(s.CancelSubscription, subscription_id=sub_id, when="period_end")
    assert result["cancel_at"] == "2025-02-28T09:00:00+00:00"
    shop.send(s.RevokeCancel, subscription_id=sub_id)
    assert tick(shop, sub_id, 28).status is SubscriptionStatus.ACTIVE


def test_cancel_at_period_end_and_at_a_date_happen_on_time(shop: Shop) -> None:
    at_end = shop.subscribe(shop.customer())
    shop.send(s.CancelSubscription, subscription_id=at_end, when="period_end")
    on_date = shop.subscribe(shop.customer())
    cancel_at = datetime(2025, 3, 10, tzinfo=UTC)
    shop.send(s.CancelSubscription, subscription_id=on_date, when=cancel_at)
    shop.clock.advance(timedelta(days=60))
    ended = [advance_subscription(shop.ledger, i, shop.clock.now()) for i in (at_end, on_date)]
    assert [sub.status for sub in ended] == [SubscriptionStatus.CANCELED] * 2
    assert [sub.ended_at for sub in ended] == [datetime(2025, 2, 28, 9, tzinfo=UTC), cancel_at]


def test_a_new_billing_interval_moves_a_cancel_at_period_end_with_it(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer(), "pro", trial_days=0)
    shop.send(s.CancelSubscription, subscription_id=sub_id, when="period_end")
    shop.clock.advance(timedelta(days=7))
    result = shop.send(
        s.ChangePlan, subscription_id=sub_id, plan_code="pro", interval="year", when="now"
    )
    assert result["period_end"] == result["cancel_at"] == "2026-02-07T09:00:00+00:00"


def test_pause_and_resume(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer())
    assert shop.send(s.PauseSubscription, subscription_id=sub_id)["mrr"]["amount"] == 0
    result = shop.send(s.ResumeSubscription, subscription_id=sub_id)
    assert (result["status"], result["mrr"]["amount"]) == ("active", 1000)


def test_a_pause_can_name_the_day_it_resumes(shop: Shop) -> None:
    sub_id = shop.subscribe(shop.customer())
    back = shop.clock.now() + timedelta(days=10)
    paused = shop.send(s.PauseSubscription, subscription_id=sub_id, resume_at=back)
    assert (paused["status"], paused["resume_at"]) == ("paused", back.isoformat())
    resumed = tick(shop, sub_id, 11)
    assert (resumed.status.value, resumed.resume_at, resumed.mrr.amount) == ("active", None, 1000)
    with pytest.raises(ValidationError):
        s.PauseSubscription(command_id="c", subscription_id=sub_id, resume_at="2030-01-01T00:00")


def test_a_new_price_is_grandfathered(shop: Shop) -> None:
    early = shop.subscribe(shop.customer())
    shop.send(s.AddPrice, plan_code="basic", currency="EUR", amount=1200)
    late = shop.subscribe(shop.customer())
    assert shop.ledger.subscription(late).price.amount.amount == 1200
    assert tick(shop, early, 31).price.id == "basic-month-eur-v1"
    # Choosing the same plan again is not a way to move to its newer price.
    with pytest.raises(SamePrice):
        shop.send(s.ChangePlan, subscription_id=early, plan_code="basic")


def test_signups_are_refused_where_the_catalog_says_no(shop: Shop) -> None:
    with pytest.raises(PlanAlreadyRegistered):
        shop.send(s.RegisterPlan, code="basic", name="Again")
    customer_id = shop.customer()
    with pytest.raises(CurrencyMismatch):
        shop.subscribe(customer_id, currency="USD")
    usd = shop.send(s.RegisterCustomer, email="bo@example.com", name="Bo", currency="USD")
    with pytest.raises(NoPriceInCurrency):
        shop.subscribe(UUID(usd["customer_id"]))
    shop.send(s.ArchivePrice, plan_code="basic", price_id="basic-month-eur-v1")
    with pytest.raises(PriceArchived):
        shop.subscribe(customer_id)


def test_state_survives_a_restart_and_snapshots_are_taken(
    shop: Shop, ledger: Ledger, database_url: str
) -> None:
    sub_id = shop.subscribe(shop.customer())
    for _ in range(60):  # 60 renewals: past the snapshot interval of 50 events
        tick(shop, sub_id, 31)
    before = shop.ledger.subscription(sub_id)
    assert ledger.snapshots is not None
    assert list(ledger.snapshots.get(sub_id)), "a snapshot was taken"
    with bootstrap(database_url) as restarted:
        after = restarted.subscription(sub_id)
    assert (after.version, after.period, after.price) == (
        before.version,
        before.period,
        before.price,
    )
    assert after.status is SubscriptionStatus.ACTIVE
