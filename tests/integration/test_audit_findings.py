"""Stories an audit of the domain turned up: pauses, refunds, redelivered refusals."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from commands import schemas as s
from commands.lifecycle import advance_subscription
from ledger.errors import CannotChangeNowWhilePaused, NoScheduledCancel, NotFound
from ledger.subscriptions import SubscriptionStatus
from tests.integration.conftest import Shop


def basic(shop: Shop) -> UUID:
    """A paid Basic subscription (10 EUR/month) from 31 Jan; February has 28 days."""
    return shop.subscribe(shop.customer())


def test_a_paused_subscription_changes_plan_only_at_period_end(shop: Shop) -> None:
    sub_id = basic(shop)
    shop.clock.advance(timedelta(days=10))
    shop.send(s.PauseSubscription, subscription_id=sub_id)
    with pytest.raises(CannotChangeNowWhilePaused):
        shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro", when="now")
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")  # an upgrade
    assert result["proration"] is None
    assert (result["price_id"], result["scheduled_price_id"]) == (
        "basic-month-eur-v1",
        "pro-month-eur-v1",
    )


def test_pausing_a_paid_period_keeps_its_refund(shop: Shop) -> None:
    sub_id = basic(shop)
    shop.pay()
    shop.clock.advance(timedelta(days=1))
    shop.send(s.PauseSubscription, subscription_id=sub_id)
    result = shop.send(s.CancelSubscription, subscription_id=sub_id, when="now", refund_unused=True)
    assert result["refund"]["amount"] == 964  # 27 of 28 days of 1000, half to even


def test_a_period_that_began_while_paused_is_never_refunded_or_credited(shop: Shop) -> None:
    sub_id = basic(shop)
    shop.send(s.PauseSubscription, subscription_id=sub_id)
    shop.clock.advance(timedelta(days=35))  # renews on 28 Feb while paused: not billed
    shop.send(s.ResumeSubscription, subscription_id=sub_id)
    customer_id = shop.ledger.subscription(sub_id).customer_id
    for plan in ("pro", "basic"):
        change = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code=plan, when="now")
        assert change["proration"]["net"]["amount"] == 0
    assert shop.ledger.customer(customer_id).credit_balance.amount == 0
    done = shop.send(s.CancelSubscription, subscription_id=sub_id, when="now", refund_unused=True)
    assert done["refund"]["amount"] == 0


def test_a_new_cycle_started_from_an_unbilled_period_is_charged_in_full(shop: Shop) -> None:
    sub_id = basic(shop)
    shop.send(s.PauseSubscription, subscription_id=sub_id)
    shop.clock.advance(timedelta(days=35))  # renews on 28 Feb while paused: not billed
    shop.send(s.ResumeSubscription, subscription_id=sub_id)
    change = shop.send(
        s.ChangePlan, subscription_id=sub_id, plan_code="pro", interval="year", when="now"
    )
    assert change["proration"]["credit"]["amount"] == 0
    assert change["proration"]["charge"]["amount"] == 20000
    [year] = change["invoices"]
    assert (year["reason"], year["amount_due"]["amount"]) == ("plan_change", 20000)
    shop.pay()
    done = shop.send(s.CancelSubscription, subscription_id=sub_id, when="now", refund_unused=True)
    assert done["refund"]["amount"] == 20000  # nothing of the new year was used yet


def test_a_refused_command_is_refused_again_when_redelivered(shop: Shop) -> None:
    sub_id = basic(shop)
    revoke = {"command_id": "revoke-1", "subscription_id": sub_id}
    with pytest.raises(NoScheduledCancel):
        shop.send(s.RevokeCancel, **revoke)
    shop.send(s.CancelSubscription, subscription_id=sub_id, when="period_end")
    with pytest.raises(NoScheduledCancel, match="no scheduled cancellation"):
        shop.send(s.RevokeCancel, **revoke)
    assert shop.ledger.subscription(sub_id).cancel_at is not None
    assert shop.ledger.event_counts_by_type()["CommandRecord.Rejected"] == 1


def test_a_command_that_overtook_what_it_refers_to_succeeds_when_retried(shop: Shop) -> None:
    customer_id = UUID("00000000-0000-4000-8000-000000000001")
    start = {"command_id": "start-ann", "customer_id": customer_id, "plan_code": "basic"}
    with pytest.raises(NotFound):
        shop.send(s.StartSubscription, **start)
    shop.send(
        s.RegisterCustomer,
        customer_id=customer_id,
        email="ann@example.com",
        name="Ann",
        currency="EUR",
    )
    shop.card(customer_id)  # without a card, the first invoice would leave it past due
    assert shop.send(s.StartSubscription, **start)["status"] == "active"


def test_an_archived_plan_can_still_call_off_a_scheduled_downgrade(shop: Shop) -> None:
    customer_id = shop.customer()
    start = shop.send(s.StartSubscription, customer_id=customer_id, plan_code="pro", trial_days=0)
    sub_id = start["subscription_id"]
    shop.send(s.ArchivePlan, plan_code="pro")
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="basic")
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")
    assert result["scheduled_price_id"] is None


def test_asking_twice_for_the_same_thing_records_it_once(shop: Shop) -> None:
    sub_id = basic(shop)
    for _ in range(2):
        shop.send(s.CancelSubscription, subscription_id=sub_id, when="period_end")
    counts = shop.ledger.event_counts_by_type()
    assert counts["Subscription.CancelScheduled"] == 1


def test_a_clock_running_ahead_never_puts_history_out_of_order(shop: Shop) -> None:
    sub_id = basic(shop)
    shop.clock.advance(timedelta(days=28) - timedelta(seconds=1))
    # The billing clock on another machine runs two seconds ahead and renews first.
    advance_subscription(shop.ledger, sub_id, shop.clock.now() + timedelta(seconds=2))
    shop.send(s.PauseSubscription, subscription_id=sub_id)
    stamps = [event.timestamp for event in shop.ledger.events.get(sub_id)]  # type: ignore[attr-defined]
    assert stamps == sorted(stamps)
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.PAUSED
