"""Stories of one subscription: trials, renewals, plan changes, cancellations, pauses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.calendar import Interval, IntervalUnit, Period
from ledger.catalog import Price, price_id
from ledger.discounts import Discount
from ledger.errors import (
    CancelDateNotInFuture,
    CurrencyMismatch,
    DiscountInForce,
    InvalidMoney,
    InvalidTrial,
    NoScheduledCancel,
    ResumeDateNotInFuture,
    SamePrice,
    SubscriptionAlreadyCanceled,
    SubscriptionEnded,
    SubscriptionNotPausable,
    SubscriptionNotPaused,
)
from ledger.money import Money
from ledger.proration import Proration
from ledger.subscriptions import ChangeTiming, Subscription, SubscriptionStatus

MONTH = Interval(IntervalUnit.MONTH)
YEAR = Interval(IntervalUnit.YEAR)
# The 31st, so that the stories cross short months.
JAN_31 = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
APRIL_1 = datetime(2025, 4, 1, tzinfo=UTC)
MID_APRIL = datetime(2025, 4, 16, tzinfo=UTC)  # 15 of April's 30 days are left
MAY_1 = datetime(2025, 5, 1, tzinfo=UTC)

E = TypeVar("E")


def always(_: datetime) -> bool:
    return True


def never(_: datetime) -> bool:
    return False


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def eur(cents: int) -> Money:
    return Money(cents, "EUR")


def price(
    plan: str, amount: int, interval: Interval = MONTH, currency: str = "EUR", trial_days: int = 0
) -> Price:
    return Price(
        id=price_id(plan, interval, currency, 1),
        plan_code=plan,
        amount=Money(amount, currency),
        interval=interval,
        trial_days=trial_days,
    )


BASIC = price("basic", 1000)
PRO = price("pro", 2000)
PRO_YEARLY = price("pro", 24000, YEAR)
BASIC_WITH_TRIAL = price("basic", 1000, trial_days=14)
INVOICE = uuid4()


def half_off(first: int, last: int | None) -> Discount:
    return Discount("HALF", Decimal(50), None, first, last)


def subscribe(to: Price, at: datetime = JAN_31, trial_days: int | None = None) -> Subscription:
    sub = Subscription.start(uuid4(), uuid4(), to, at, trial_days)
    sub.collect_events()
    return sub


def status(sub: Subscription) -> SubscriptionStatus:
    """Read through a call: mypy would otherwise keep a status narrowed by an earlier assert."""
    return sub.status


def recorded(sub: Subscription, kind: type[E]) -> list[E]:
    """The events of ``kind`` recorded since the last call (others are dropped)."""
    return [e for e in sub.collect_events() if isinstance(e, kind)]


# Starting


def test_a_subscription_without_trial_starts_active_for_a_first_period() -> None:
    sub = Subscription.start(uuid4(), uuid4(), BASIC, JAN_31, None)
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.period == Period(0, JAN_31, utc(2025, 2, 28, 9))
    assert sub.anchor == JAN_31
    assert sub.trial_end is None
    assert sub.mrr == eur(1000)
    assert sub.due_at == utc(2025, 2, 28, 9)
    [started] = recorded(sub, Subscription.Started)
    assert started.timestamp == JAN_31


def test_a_trial_is_period_minus_one_and_the_anchor_is_its_end() -> None:
    sub = subscribe(BASIC_WITH_TRIAL)
    trial_end = JAN_31 + timedelta(days=14)
    assert sub.status is SubscriptionStatus.TRIALING
    assert sub.period == Period(-1, JAN_31, trial_end)
    assert sub.trial_end == trial_end
    assert sub.anchor == trial_end
    assert sub.mrr == eur(0)


def test_the_trial_of_a_signup_overrides_the_price_trial() -> None:
    assert subscribe(BASIC_WITH_TRIAL, trial_days=0).status is SubscriptionStatus.ACTIVE
    week_trial = subscribe(BASIC, trial_days=7)
    assert week_trial.status is SubscriptionStatus.TRIALING
    assert week_trial.trial_end == JAN_31 + timedelta(days=7)


@pytest.mark.parametrize("days", [-1, 731])
def test_a_trial_lasts_0_to_730_days(days: int) -> None:
    with pytest.raises(InvalidTrial, match="trial days"):
        Subscription.start(uuid4(), uuid4(), BASIC, JAN_31, days)


# Trials end


def test_a_trial_with_a_payment_method_converts_at_its_end() -> None:
    sub = subscribe(BASIC_WITH_TRIAL)
    trial_end = JAN_31 + timedelta(days=14)  # Feb 14th
    assert sub.advance(trial_end - timedelta(microseconds=1), can_pay=always) == 0
    assert sub.advance(trial_end + timedelta(hours=1), can_pay=always) == 1
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.period == Period(0, trial_end, utc(2025, 3, 14, 9))
    assert sub.mrr == eur(1000)
    [ended] = recorded(sub, Subscription.TrialEnded)
    assert ended.converted
    assert ended.timestamp == trial_end


def test_a_trial_without_a_payment_method_expires_at_its_end() -> None:
    sub = subscribe(BASIC_WITH_TRIAL)
    trial_end = JAN_31 + timedelta(days=14)
    assert sub.advance(utc(2025, 6, 1), can_pay=never) == 1
    assert sub.status is SubscriptionStatus.EXPIRED
    assert sub.ended_at == trial_end
    assert sub.due_at is None
    assert sub.mrr == eur(0)
    [ended] = recorded(sub, Subscription.TrialEnded)
    assert not ended.converted
    assert sub.advance(utc(2026, 6, 1), can_pay=always) == 0


def test_an_expired_trial_keeps_no_scheduled_change_or_cancel() -> None:
    sub = subscribe(price("pro", 2000, trial_days=14))
    sub.change_price(BASIC, JAN_31 + timedelta(days=1))
    sub.cancel_on(utc(2025, 4, 1), JAN_31 + timedelta(days=2))
    sub.advance(utc(2025, 3, 1), can_pay=never)
    assert sub.status is SubscriptionStatus.EXPIRED
    assert (sub.pending_price, sub.cancel_at) == (None, None)


def test_a_downgrade_scheduled_during_the_trial_starts_with_the_first_period() -> None:
    sub = subscribe(price("pro", 2000, trial_days=14))
    assert sub.change_price(BASIC, JAN_31 + timedelta(days=1)) is None
    sub.advance(JAN_31 + timedelta(days=14), can_pay=always)
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.price == BASIC
    assert sub.pending_price is None


# Renewals


def test_renewals_follow_the_anchor_calendar_at_business_time() -> None:
    sub = subscribe(BASIC)
    assert sub.advance(utc(2025, 5, 31, 10), can_pay=always) == 4
    renewals = recorded(sub, Subscription.Renewed)
    assert [r.timestamp for r in renewals] == [
        utc(2025, 2, 28, 9),
        utc(2025, 3, 31, 9),
        utc(2025, 4, 30, 9),
        utc(2025, 5, 31, 9),
    ]
    # Each renewal happens at the end of the previous period, the start of the new one.
    assert [r.period.start for r in renewals] == [r.timestamp for r in renewals]
    assert [r.period.index for r in renewals] == [1, 2, 3, 4]
    assert sub.period == Period(4, utc(2025, 5, 31, 9), utc(2025, 6, 30, 9))
    assert sub.status is SubscriptionStatus.ACTIVE


def test_advancing_twice_to_the_same_instant_applies_nothing_the_second_time() -> None:
    sub = subscribe(BASIC)
    now = utc(2025, 3, 31, 9)  # exactly a period end: due, and applied
    assert sub.advance(now, can_pay=always) == 2
    period = sub.period
    sub.collect_events()
    assert sub.advance(now, can_pay=always) == 0
    assert sub.collect_events() == []
    assert sub.period == period == Period(2, now, utc(2025, 4, 30, 9))


@settings(max_examples=50, deadline=None)
@given(steps=st.lists(st.integers(0, 90 * 24), min_size=1, max_size=12))
def test_advancing_in_any_steps_gives_the_same_history_as_one_leap(steps: list[int]) -> None:
    stepwise, leap = subscribe(BASIC), subscribe(BASIC)
    now = JAN_31
    for hours in steps:
        now += timedelta(hours=hours)
        stepwise.advance(now, can_pay=always)
    leap.advance(now, can_pay=always)
    assert stepwise.period == leap.period
    assert [(e.timestamp, e.period) for e in recorded(stepwise, Subscription.Renewed)] == [
        (e.timestamp, e.period) for e in recorded(leap, Subscription.Renewed)
    ]
    assert stepwise.period.contains(now)


# Plan changes


def test_an_upgrade_takes_effect_now_with_proration() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    proration = sub.change_price(PRO, MID_APRIL)
    assert proration == Proration(credit=eur(500), charge=eur(1000))
    assert proration.net == eur(500)
    assert sub.price == PRO
    assert sub.period == Period(0, APRIL_1, MAY_1)
    assert sub.mrr == eur(2000)
    [changed] = recorded(sub, Subscription.PlanChanged)
    assert (changed.from_price, changed.to_price) == (BASIC, PRO)
    assert (changed.credit, changed.charge) == (eur(500), eur(1000))
    assert changed.timestamp == MID_APRIL


def test_a_downgrade_waits_for_the_period_end_by_default() -> None:
    sub = subscribe(PRO, at=APRIL_1)
    assert sub.change_price(BASIC, MID_APRIL) is None
    assert sub.price == PRO
    assert sub.pending_price == BASIC
    [scheduled] = recorded(sub, Subscription.ChangeScheduled)
    assert scheduled.effective_at == MAY_1

    assert sub.advance(MAY_1, can_pay=always) == 1
    assert sub.price == BASIC
    assert sub.pending_price is None
    assert sub.period == Period(1, MAY_1, utc(2025, 6, 1))
    assert sub.mrr == eur(1000)
    [renewed] = recorded(sub, Subscription.Renewed)
    assert renewed.price == BASIC


def test_a_downgrade_now_leaves_the_customer_owed_the_difference() -> None:
    sub = subscribe(PRO, at=APRIL_1)
    proration = sub.change_price(BASIC, MID_APRIL, ChangeTiming.NOW)
    assert proration == Proration(credit=eur(1000), charge=eur(500))
    assert proration.net == eur(-500)
    assert sub.price == BASIC


def test_an_upgrade_can_wait_for_the_period_end_on_request() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    assert sub.change_price(PRO, MID_APRIL, ChangeTiming.PERIOD_END) is None
    assert sub.price == BASIC
    assert sub.pending_price == PRO


def test_going_back_to_the_current_price_calls_off_a_scheduled_downgrade() -> None:
    sub = subscribe(PRO, at=APRIL_1)
    sub.change_price(BASIC, MID_APRIL)
    assert sub.change_price(PRO, MID_APRIL + timedelta(days=1)) is None
    assert sub.pending_price is None
    sub.advance(MAY_1, can_pay=always)
    assert sub.price == PRO


def test_a_new_interval_restarts_the_billing_cycle_now() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    proration = sub.change_price(PRO_YEARLY, MID_APRIL)
    # Half of April's 10.00 back; a whole year at 240.00 charged.
    assert proration == Proration(credit=eur(500), charge=eur(24000))
    assert sub.period == Period(1, MID_APRIL, utc(2026, 4, 16))
    assert sub.anchor == MID_APRIL
    assert sub.mrr == eur(2000)

    assert sub.advance(utc(2026, 4, 16), can_pay=always) == 1
    assert sub.period == Period(2, utc(2026, 4, 16), utc(2027, 4, 16))


def test_a_change_during_a_trial_is_not_prorated() -> None:
    sub = subscribe(BASIC_WITH_TRIAL)
    proration = sub.change_price(PRO, JAN_31 + timedelta(days=7))
    assert proration == Proration(eur(0), eur(0))
    assert sub.price == PRO
    assert sub.status is SubscriptionStatus.TRIALING


def test_a_plan_change_needs_another_price_in_the_same_currency() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    with pytest.raises(SamePrice, match="already on 'basic-month-eur-v1'"):
        sub.change_price(BASIC, MID_APRIL)
    with pytest.raises(CurrencyMismatch, match="EUR subscription"):
        sub.change_price(price("pro", 2200, currency="USD"), MID_APRIL)
    assert sub.collect_events() == []


# Cancellations


def test_cancel_now_records_the_refund_requested_for_the_unused_part() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    assert sub.unused_value(MID_APRIL) == eur(500)
    sub.cancel_now(MID_APRIL, eur(450))  # what is returned: the invoice may cap it
    assert sub.status is SubscriptionStatus.CANCELED
    assert sub.ended_at == MID_APRIL
    assert sub.mrr == eur(0)
    assert sub.due_at is None
    [canceled] = recorded(sub, Subscription.Canceled)
    assert (canceled.refund, canceled.scheduled) == (eur(450), False)


def test_cancel_now_without_refund_records_none_and_refuses_an_odd_one() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    with pytest.raises(CurrencyMismatch):
        sub.cancel_now(MID_APRIL, Money(500, "USD"))
    with pytest.raises(InvalidMoney):
        sub.cancel_now(MID_APRIL, eur(-1))
    sub.cancel_now(MID_APRIL)
    assert sub.status is SubscriptionStatus.CANCELED
    [canceled] = recorded(sub, Subscription.Canceled)
    assert canceled.refund == eur(0)


def test_an_unbilled_trial_is_worth_nothing_unused() -> None:
    sub = subscribe(BASIC_WITH_TRIAL)
    assert sub.unused_value(JAN_31 + timedelta(days=1)) == eur(0)


def test_cancel_at_period_end_ends_exactly_then_without_renewing() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    assert sub.cancel_at_period_end(MID_APRIL) == MAY_1
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.cancel_at == MAY_1

    assert sub.advance(utc(2025, 7, 1), can_pay=always) == 1
    assert status(sub) is SubscriptionStatus.CANCELED
    assert sub.ended_at == MAY_1
    [canceled] = recorded(sub, Subscription.Canceled)
    assert canceled.timestamp == MAY_1
    assert canceled.scheduled
    assert sub.advance(utc(2025, 8, 1), can_pay=always) == 0
    assert sub.collect_events() == []


def test_cancel_on_a_date_inside_the_period() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.cancel_on(utc(2025, 4, 20), at=MID_APRIL)
    sub.advance(MAY_1, can_pay=always)
    assert sub.status is SubscriptionStatus.CANCELED
    assert sub.ended_at == utc(2025, 4, 20)
    [canceled] = recorded(sub, Subscription.Canceled)
    assert canceled.timestamp == utc(2025, 4, 20)


def test_cancel_on_a_later_date_renews_until_then() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.cancel_on(utc(2025, 6, 10), at=MID_APRIL)
    [scheduled] = recorded(sub, Subscription.CancelScheduled)
    assert (scheduled.cancel_at, scheduled.at_period_end) == (utc(2025, 6, 10), False)
    assert sub.advance(utc(2025, 12, 1), can_pay=always) == 3
    events = sub.collect_events()
    assert [type(e) for e in events] == [
        Subscription.Renewed,
        Subscription.Renewed,
        Subscription.Canceled,
    ]
    assert [e.timestamp for e in events] == [MAY_1, utc(2025, 6, 1), utc(2025, 6, 10)]
    assert sub.ended_at == utc(2025, 6, 10)


def test_a_cancel_date_must_be_in_the_future() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    with pytest.raises(CancelDateNotInFuture, match="not after now"):
        sub.cancel_on(MID_APRIL, at=MID_APRIL)
    with pytest.raises(CancelDateNotInFuture):
        sub.cancel_on(APRIL_1, at=MID_APRIL)
    assert sub.cancel_at is None


def test_a_revoked_cancellation_renews_as_usual() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.cancel_at_period_end(MID_APRIL)
    sub.revoke_cancel(MID_APRIL + timedelta(days=1))
    assert sub.cancel_at is None
    sub.collect_events()
    assert sub.advance(MAY_1, can_pay=always) == 1
    assert sub.status is SubscriptionStatus.ACTIVE
    assert [type(e) for e in sub.collect_events()] == [Subscription.Renewed]
    with pytest.raises(NoScheduledCancel, match="no scheduled cancellation"):
        sub.revoke_cancel(MAY_1)


# Pause and resume


def test_a_paused_subscription_brings_no_revenue_until_resumed() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.pause(MID_APRIL)
    assert sub.status is SubscriptionStatus.PAUSED
    assert sub.mrr == eur(0)
    with pytest.raises(SubscriptionNotPausable, match="it is paused"):
        sub.pause(MID_APRIL)
    sub.resume(utc(2025, 4, 20))
    assert status(sub) is SubscriptionStatus.ACTIVE
    assert sub.mrr == eur(1000)


def test_a_renewal_records_whether_its_period_is_billed() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.pause(MID_APRIL)
    sub.advance(utc(2025, 5, 15), can_pay=always)  # renews on 1 May while paused
    sub.resume(utc(2025, 5, 20))
    sub.advance(utc(2025, 6, 15), can_pay=always)  # renews on 1 June, active again
    assert [e.billed for e in recorded(sub, Subscription.Renewed)] == [False, True]
    assert sub.period_billed


def test_a_pause_with_a_resume_date_resumes_on_its_own_then() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.pause(MID_APRIL, resume_at=utc(2025, 5, 10))
    assert (sub.status, sub.resume_at, sub.due_at) == (
        SubscriptionStatus.PAUSED,
        utc(2025, 5, 10),
        MAY_1,  # the unbilled renewal comes first
    )
    sub.collect_events()
    assert sub.advance(utc(2025, 5, 20), can_pay=always) == 2
    renewed, resumed = sub.collect_events()
    assert isinstance(renewed, Subscription.Renewed)
    assert not renewed.billed
    assert isinstance(resumed, Subscription.Resumed)
    assert resumed.timestamp == utc(2025, 5, 10)
    assert (status(sub), sub.resume_at, sub.mrr) == (SubscriptionStatus.ACTIVE, None, eur(1000))


def test_a_resume_due_with_a_renewal_comes_first_so_the_new_period_is_billed() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.pause(MID_APRIL, resume_at=MAY_1)
    sub.collect_events()
    sub.advance(MAY_1, can_pay=always)
    resumed, renewed = sub.collect_events()
    assert isinstance(resumed, Subscription.Resumed)
    assert isinstance(renewed, Subscription.Renewed)
    assert renewed.billed


def test_a_scheduled_resume_is_refused_in_the_past_and_dropped_by_cancel_or_resume() -> None:
    with pytest.raises(ResumeDateNotInFuture):
        subscribe(BASIC, at=APRIL_1).pause(MID_APRIL, resume_at=MID_APRIL)
    canceled = subscribe(BASIC, at=APRIL_1)
    canceled.pause(MID_APRIL, resume_at=utc(2025, 4, 25))
    canceled.cancel_on(utc(2025, 4, 20), at=MID_APRIL)
    canceled.advance(utc(2025, 6, 1), can_pay=always)
    assert (canceled.status, canceled.resume_at, canceled.due_at) == (
        SubscriptionStatus.CANCELED,
        None,
        None,
    )
    resumed = subscribe(BASIC, at=APRIL_1)
    resumed.pause(MID_APRIL, resume_at=utc(2025, 4, 25))
    resumed.resume(utc(2025, 4, 20))
    assert (resumed.resume_at, resumed.due_at) == (None, MAY_1)


def old_snapshot(sub: Subscription, version: int, *added_since: str) -> Subscription:
    """``sub`` loaded from a snapshot of class ``version``, before ``added_since`` existed."""
    snapshot = Subscription.Snapshot.take(sub)
    state = {k: v for k, v in snapshot.state.items() if k not in added_since}
    state["class_version"] = version
    old = Subscription.Snapshot(
        originator_id=snapshot.originator_id,
        originator_version=snapshot.originator_version,
        timestamp=snapshot.timestamp,
        topic=snapshot.topic,
        state=state,
    )
    loaded = old.mutate(None)
    assert isinstance(loaded, Subscription)
    return loaded


def test_a_snapshot_taken_before_scheduled_resumes_loads_without_one() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    loaded = old_snapshot(sub, 1, "resume_at", "discount", "failing_invoices")
    assert (loaded.resume_at, loaded.due_at) == (None, MAY_1)
    assert (loaded.discount, loaded.failing_invoices) == (None, [])


def test_a_snapshot_taken_before_discounts_and_dunning_loads_without_them() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    loaded = old_snapshot(sub, 2, "discount", "failing_invoices")
    assert (loaded.discount, loaded.failing_invoices, loaded.mrr) == (None, [], eur(1000))
    # What it loaded to works as a subscription of today.
    loaded.payment_failed(INVOICE, MID_APRIL)
    assert (loaded.status, loaded.failing_invoices) == (SubscriptionStatus.PAST_DUE, [INVOICE])


def test_only_an_active_subscription_pauses_and_only_a_paused_one_resumes() -> None:
    with pytest.raises(SubscriptionNotPausable, match="it is trialing"):
        subscribe(BASIC_WITH_TRIAL).pause(JAN_31 + timedelta(days=1))
    with pytest.raises(SubscriptionNotPaused, match="active, not paused"):
        subscribe(BASIC).resume(JAN_31 + timedelta(days=1))


# Discounts


def test_a_discount_is_in_force_from_when_it_is_applied_until_its_last_period() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.apply_discount(half_off(1, 2), MID_APRIL)
    assert (sub.discount, sub.mrr) == (half_off(1, 2), eur(500))
    [applied] = recorded(sub, Subscription.DiscountApplied)
    assert applied.discount == half_off(1, 2)
    sub.advance(utc(2025, 6, 15), can_pay=always)  # periods 1 and 2
    assert sub.mrr == eur(500)
    assert recorded(sub, Subscription.DiscountEnded) == []
    sub.advance(utc(2025, 7, 1), can_pay=always)  # period 3: the discount ended first
    events = sub.collect_events()
    assert [type(e) for e in events] == [Subscription.DiscountEnded, Subscription.Renewed]
    assert events[0].timestamp == utc(2025, 7, 1)
    assert (sub.discount, sub.mrr) == (None, eur(1000))


def test_a_new_billing_cycle_ends_a_discount_that_does_not_cover_it() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.apply_discount(half_off(0, 0), APRIL_1)
    sub.collect_events()
    sub.change_price(PRO_YEARLY, MID_APRIL)  # period 1 starts now
    assert [type(e) for e in sub.collect_events()] == [
        Subscription.DiscountEnded,
        Subscription.PlanChanged,
    ]
    assert sub.mrr == eur(2000)


def test_a_forever_discount_follows_the_subscription_to_a_new_price() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.apply_discount(half_off(1, None), APRIL_1)
    sub.change_price(PRO, MID_APRIL)
    assert sub.mrr == eur(1000)
    sub.advance(utc(2026, 4, 1), can_pay=always)
    assert (sub.discount, sub.mrr) == (half_off(1, None), eur(1000))


def test_one_discount_at_a_time_and_none_on_an_ended_subscription() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.apply_discount(half_off(1, 1), APRIL_1)
    with pytest.raises(DiscountInForce, match="'HALF' is in force"):
        sub.apply_discount(half_off(1, 1), MID_APRIL)
    sub.advance(utc(2025, 6, 1), can_pay=always)  # it ended with period 1
    sub.apply_discount(half_off(3, 3), utc(2025, 6, 2))
    sub.cancel_now(utc(2025, 6, 3))
    with pytest.raises(SubscriptionAlreadyCanceled, match="discount"):
        sub.apply_discount(half_off(4, 4), utc(2025, 6, 4))


def test_a_paused_or_trialing_subscription_brings_no_mrr_whatever_its_discount() -> None:
    trialing = subscribe(BASIC_WITH_TRIAL)
    trialing.apply_discount(half_off(0, None), JAN_31)
    assert trialing.mrr == eur(0)
    paused = subscribe(BASIC, at=APRIL_1)
    paused.apply_discount(half_off(0, None), APRIL_1)
    paused.pause(MID_APRIL)
    assert paused.mrr == eur(0)


# Dunning


def test_a_failed_charge_makes_the_subscription_past_due_and_a_payment_active_again() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.payment_failed(INVOICE, APRIL_1)
    sub.payment_failed(INVOICE, utc(2025, 4, 2))  # the same invoice failing again
    assert (sub.status, sub.failing_invoices, sub.mrr) == (
        SubscriptionStatus.PAST_DUE,
        [INVOICE],
        eur(1000),  # still billed: past due is not churn
    )
    [past_due] = recorded(sub, Subscription.PastDue)
    assert past_due.invoice_id == INVOICE
    sub.advance(utc(2025, 5, 15), can_pay=always)
    assert [e.billed for e in recorded(sub, Subscription.Renewed)] == [True]
    sub.payment_recovered(INVOICE, utc(2025, 5, 16))
    sub.payment_recovered(INVOICE, utc(2025, 5, 17))  # recorded once
    assert (status(sub), sub.failing_invoices) == (SubscriptionStatus.ACTIVE, [])
    assert len(recorded(sub, Subscription.Recovered)) == 1


def test_a_subscription_is_past_due_until_every_failing_invoice_is_paid() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    upgrade = uuid4()
    sub.payment_failed(INVOICE, APRIL_1)
    sub.payment_failed(upgrade, MID_APRIL)
    sub.payment_recovered(INVOICE, utc(2025, 4, 20))
    assert (sub.status, sub.failing_invoices) == (SubscriptionStatus.PAST_DUE, [upgrade])
    sub.payment_recovered(upgrade, utc(2025, 4, 21))
    assert status(sub) is SubscriptionStatus.ACTIVE


def test_only_a_billed_subscription_goes_past_due() -> None:
    paused = subscribe(BASIC, at=APRIL_1)
    paused.pause(MID_APRIL)
    paused.collect_events()
    paused.payment_failed(INVOICE, MID_APRIL)
    assert (paused.status, paused.collect_events()) == (SubscriptionStatus.PAUSED, [])


def test_when_dunning_gives_up_the_subscription_is_canceled() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.cancel_at_period_end(APRIL_1)
    sub.payment_failed(INVOICE, APRIL_1)
    sub.dunning_exhausted(INVOICE, cancel=True, at=utc(2025, 4, 8))
    assert (sub.status, sub.ended_at, sub.cancel_at, sub.due_at, sub.mrr) == (
        SubscriptionStatus.CANCELED,
        utc(2025, 4, 8),
        None,
        None,
        eur(0),
    )
    [exhausted] = recorded(sub, Subscription.DunningExhausted)
    assert (exhausted.invoice_id, exhausted.canceled) == (INVOICE, True)
    sub.dunning_exhausted(INVOICE, cancel=True, at=utc(2025, 4, 9))
    sub.payment_recovered(INVOICE, utc(2025, 4, 9))
    assert sub.collect_events() == []


def test_when_dunning_gives_up_the_subscription_may_be_left_unpaid_and_unbilled() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.payment_failed(INVOICE, APRIL_1)
    sub.dunning_exhausted(INVOICE, cancel=False, at=utc(2025, 4, 8))
    assert (sub.status, sub.ended_at, sub.failing_invoices, sub.mrr) == (
        SubscriptionStatus.UNPAID,
        None,
        [],
        eur(0),
    )
    sub.collect_events()
    sub.advance(utc(2025, 6, 15), can_pay=always)
    assert [e.billed for e in recorded(sub, Subscription.Renewed)] == [False, False]
    sub.payment_failed(uuid4(), utc(2025, 6, 16))  # not billed: no dunning either
    assert status(sub) is SubscriptionStatus.UNPAID


def test_dunning_that_ends_for_an_invoice_not_in_dunning_changes_nothing() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.dunning_exhausted(INVOICE, cancel=True, at=MID_APRIL)
    sub.payment_recovered(INVOICE, MID_APRIL)
    assert (sub.status, sub.collect_events()) == (SubscriptionStatus.ACTIVE, [])


# A subscription that ended stays ended


def test_a_canceled_subscription_refuses_every_change() -> None:
    sub = subscribe(BASIC, at=APRIL_1)
    sub.cancel_now(MID_APRIL)
    later = MID_APRIL + timedelta(days=1)
    with pytest.raises(SubscriptionAlreadyCanceled, match="cannot cancel a canceled"):
        sub.cancel_now(later)
    with pytest.raises(SubscriptionAlreadyCanceled, match="cannot cancel a canceled"):
        sub.cancel_at_period_end(later)
    with pytest.raises(SubscriptionAlreadyCanceled, match="change plan"):
        sub.change_price(PRO, later)
    with pytest.raises(SubscriptionAlreadyCanceled, match="pause"):
        sub.pause(later)
    with pytest.raises(SubscriptionAlreadyCanceled, match="resume"):
        sub.resume(later)


def test_an_expired_subscription_refuses_every_change() -> None:
    sub = subscribe(BASIC_WITH_TRIAL)
    sub.advance(utc(2025, 3, 1), can_pay=never)
    later = utc(2025, 3, 2)
    with pytest.raises(SubscriptionEnded, match="cannot change plan an expired subscription"):
        sub.change_price(PRO, later)
    with pytest.raises(SubscriptionEnded, match="cannot cancel an expired"):
        sub.cancel_on(utc(2025, 4, 1), at=later)
    with pytest.raises(SubscriptionEnded):
        sub.revoke_cancel(later)


# Monthly recurring revenue


@pytest.mark.parametrize(
    ("billed", "mrr"),
    [
        (price("pro", 12000, YEAR), 1000),
        (price("pro", 3000, Interval(IntervalUnit.MONTH, 3)), 1000),
        (price("pro", 1000, Interval(IntervalUnit.WEEK)), 4333),  # 1000 * 52 / 12
        (price("pro", 1500, Interval(IntervalUnit.WEEK, 2)), 3250),  # 1500 * 26 / 12
        (price("pro", 100, Interval(IntervalUnit.DAY)), 3042),  # 100 * 365 / 12
        (price("pro", 1999, MONTH, currency="JPY"), 1999),
    ],
)
def test_mrr_normalises_every_interval_to_a_month(billed: Price, mrr: int) -> None:
    assert subscribe(billed).mrr == Money(mrr, billed.currency)
