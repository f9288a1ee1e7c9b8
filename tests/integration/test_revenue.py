"""Revenue statistics, on SQLite and on PostgreSQL.

First a small shop whose every figure is worked out by hand below (MRR, its five
movements, churn, retention, ARPU, LTV, trials, subscribers by plan, current
subscriptions, due work, histories); then the demo, whose MRR bridge must balance on
every day and whose MRR must be what its subscriptions say.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from commands import schemas as s
from commands.bootstrap import bootstrap, projector
from commands.cli import app
from commands.demo import project, run_demo
from commands.lifecycle import advance_subscription
from ledger.application import Ledger
from ledger.subscriptions import Subscription
from projections import stats
from projections.database import Database
from projections.history import customer_history
from projections.runner import Projector
from projections.stats import Movements, PlanSubscribers
from projections.values import read_day, read_instant, read_int, read_maybe_instant
from tests.integration.conftest import Shop

MOVEMENTS = ("new", "expansion", "contraction", "churn", "reactivation")
# Every table the projections write, each with its columns in a stable order.
PROJECTION_TABLES = (
    "current_subscriptions",
    "due_work",
    "transaction_history",
    "history_subscriptions",
    "revenue_days",
    "revenue_plan_days",
    "revenue_subscriptions",
    "revenue_customers",
    "revenue_changes",
    "revenue_invoices",
    "revenue_refunds",
)


def at(month: int, day: int, year: int = 2025) -> datetime:
    """09:00 UTC on that day: the hour the clock fixture starts at, which every step keeps."""
    return datetime(year, month, day, 9, tzinfo=UTC)


def day(month: int, number: int) -> date:
    return date(2025, month, number)


@pytest.fixture
def projections(ledger: Ledger, database_url: str) -> Iterator[Projector]:
    with projector(ledger, database_url) as running:
        yield running


# (status, mrr, price_id, cancel_at, pending_price_id) and [(kind, due_at), ...] by kind
Row = tuple[str, int, str, datetime | None, str | None]
Due = list[tuple[str, datetime]]


def current_row(db: Database, subscription_id: UUID) -> Row:
    ((status, mrr, price_id, cancel_at, pending),) = db.query(
        "SELECT status, mrr, price_id, cancel_at, pending_price_id FROM current_subscriptions "
        "WHERE subscription_id = ?",
        (str(subscription_id),),
    )
    return str(status), read_int(mrr), str(price_id), read_maybe_instant(cancel_at), pending


def due_rows(db: Database, subscription_id: UUID) -> Due:
    rows = db.query(
        "SELECT kind, due_at FROM due_work WHERE subscription_id = ? ORDER BY kind",
        (str(subscription_id),),
    )
    return [(str(kind), read_instant(due_at)) for kind, due_at in rows]


@dataclass
class Story:
    """The shop's customers and subscriptions by role, and what the projections showed of
    some subscriptions on the days the story stopped to look."""

    customers: dict[str, UUID] = field(default_factory=dict)
    subscriptions: dict[str, UUID] = field(default_factory=dict)
    seen: dict[date, dict[str, tuple[Row, Due]]] = field(default_factory=dict)


def tell(shop: Shop, projections: Projector) -> Story:
    """Jan 31 to Mar 7 2025 of a shop selling Basic (10 EUR or 12 USD a month) and Pro
    (20 EUR a month with a 14-day trial, or 200 EUR a year). All at 09:00 UTC."""
    story = Story()
    clock = shop.clock

    def customer(role: str, card: bool = True, currency: str = "EUR") -> None:
        answer = shop.send(
            s.RegisterCustomer, email=f"{role}@example.com", name=role, currency=currency
        )
        story.customers[role] = UUID(answer["customer_id"])
        if card:
            shop.card(story.customers[role])

    def subscribe(role: str, who: str, plan: str, **fields: Any) -> None:
        answer = shop.send(
            s.StartSubscription, customer_id=story.customers[who], plan_code=plan, **fields
        )
        story.subscriptions[role] = UUID(answer["subscription_id"])

    def on(month: int, number: int) -> None:
        """The payment processor collects what the day's commands invoiced (every card
        pays), then the clock moves to that day and the billing clock applies, and the
        processor collects, what fell due."""
        shop.pay()
        clock.advance_to(at(month, number))
        for subscription_id in story.subscriptions.values():
            advance_subscription(shop.ledger, subscription_id, clock.now())
        shop.pay()

    def look(*roles: str) -> None:
        projections.catch_up()
        db = projections.database
        story.seen[clock.now().date()] = {
            role: (
                current_row(db, story.subscriptions[role]),
                due_rows(db, story.subscriptions[role]),
            )
            for role in roles
        }

    # Fri Jan 31: the catalog is open (the shop fixture); Basic gets a USD price.
    shop.send(s.AddPrice, plan_code="basic", currency="USD", amount=1200)
    for role in ("upgrader", "converter", "annual", "pauser", "returner", "doubler"):
        customer(role)
    customer("lapser", card=False)
    customer("american", currency="USD")
    subscribe("upgrader", "upgrader", "basic")
    subscribe("converter", "converter", "pro")  # the price's 14-day trial
    subscribe("lapser", "lapser", "pro")  # the same trial, and no card
    subscribe("annual", "annual", "pro", interval="year")
    subscribe("pauser", "pauser", "basic")
    subscribe("returner", "returner", "basic")
    subscribe("doubler", "doubler", "basic")
    subscribe("american", "american", "basic")

    on(2, 7)
    shop.send(s.PauseSubscription, subscription_id=story.subscriptions["pauser"])
    on(2, 10)
    shop.send(s.ChangePlan, subscription_id=story.subscriptions["upgrader"], plan_code="pro")
    on(2, 12)
    subscribe("doubler_pro", "doubler", "pro", trial_days=0)
    on(2, 14)  # both trials end at 09:00
    look("upgrader", "converter", "lapser", "pauser", "doubler_pro")
    on(2, 17)
    shop.send(
        s.CancelSubscription,
        subscription_id=story.subscriptions["returner"],
        when="now",
        refund_unused=True,
    )
    on(2, 20)
    shop.send(s.ResumeSubscription, subscription_id=story.subscriptions["pauser"])
    shop.send(s.ChangePlan, subscription_id=story.subscriptions["upgrader"], plan_code="basic")
    look("upgrader", "pauser", "returner")
    on(2, 28)  # renewals, the upgrader's downgrade with its own
    on(3, 5)
    subscribe("returner_again", "returner", "basic")
    on(3, 6)
    shop.send(s.CancelSubscription, subscription_id=story.subscriptions["annual"])
    on(3, 7)
    look(*story.subscriptions)
    return story


@pytest.fixture
def story(shop: Shop, projections: Projector) -> Story:
    return tell(shop, projections)


# What happens to EUR MRR, worked out from the story (subscriptions' MRR in cents):
#   Jan 31  new          upgrader 1000 + annual 1667 (20000 / 12 = 1666.67, half-even)
#                        + pauser 1000 + returner 1000 + doubler 1000            = 5667
#                        (the two trials add nothing yet)
#   Feb  7  churn        pauser pauses                                            1000
#   Feb 10  expansion    upgrader basic -> pro: 2000 - 1000                       1000
#   Feb 12  expansion    doubler's second subscription, Pro without a trial       2000
#   Feb 14  new          converter's trial converts                               2000
#           (the lapser's trial expires without a card: no MRR, not a churn)
#   Feb 17  churn        returner cancels now                                     1000
#   Feb 20  reactivation pauser resumes                                           1000
#   Feb 28  contraction  upgrader's scheduled downgrade pro -> basic at renewal   1000
#   Mar  5  reactivation returner subscribes again                                1000
# USD: Jan 31 new 1200 (the american's Basic), nothing else.


def test_mrr_paying_and_registered_customers_day_by_day(
    story: Story, projections: Projector
) -> None:
    db = projections.database
    # day: (MRR at its end, paying customers at its end); customers registered: 7 from Jan 31.
    expected = {
        day(1, 30): (0, 0),  # before the first event
        day(1, 31): (5667, 5),  # upgrader, annual, pauser, returner, doubler
        day(2, 6): (5667, 5),
        day(2, 7): (4667, 4),  # 5667 - 1000; the pauser is no longer paying
        day(2, 10): (5667, 4),  # 4667 + 1000
        day(2, 12): (7667, 4),  # 5667 + 2000; the doubler was paying already
        day(2, 13): (7667, 4),
        day(2, 14): (9667, 5),  # 7667 + 2000; the converter pays
        day(2, 17): (8667, 4),  # 9667 - 1000; the returner leaves
        day(2, 20): (9667, 5),  # 8667 + 1000; the pauser is back
        day(2, 27): (9667, 5),
        day(2, 28): (8667, 5),  # 9667 - 1000
        day(3, 5): (9667, 6),  # 8667 + 1000; the returner is back
        day(3, 7): (9667, 6),
    }
    for when, (mrr, paying) in expected.items():
        single = stats.figures(db, "EUR", when, when)
        assert (single.mrr, single.arr, single.paying_customers) == (mrr, 12 * mrr, paying), when
        assert single.customers == (0 if when < day(1, 31) else 7), when
    daily = {
        read_day(d): (read_int(mrr), read_int(arr), read_int(paying), read_int(customers))
        for d, mrr, arr, paying, customers in db.query(
            "SELECT day, mrr, arr, paying_customers, customers FROM revenue_daily "
            "WHERE currency = 'EUR'"
        )
    }
    for when, (mrr, paying) in expected.items():
        if when in daily:  # the view has no row before the first day or after the last
            assert daily[when] == (mrr, 12 * mrr, paying, 7), when
    assert min(daily) == day(1, 31)
    assert max(daily) >= day(3, 5)  # the last day that changed anything
    usd = stats.figures(db, "USD", day(3, 7), day(3, 7))
    assert (usd.mrr, usd.paying_customers, usd.customers) == (1200, 1, 1)


def test_movements_over_single_days(story: Story, projections: Projector) -> None:
    db = projections.database
    # day: (new, expansion, contraction, churn, reactivation), from the table above
    expected = {
        day(1, 31): Movements(5667, 0, 0, 0, 0),
        day(2, 7): Movements(0, 0, 0, 1000, 0),
        day(2, 10): Movements(0, 1000, 0, 0, 0),
        day(2, 12): Movements(0, 2000, 0, 0, 0),
        day(2, 14): Movements(2000, 0, 0, 0, 0),
        day(2, 17): Movements(0, 0, 0, 1000, 0),
        day(2, 20): Movements(0, 0, 0, 0, 1000),
        day(2, 28): Movements(0, 0, 1000, 0, 0),
        day(3, 5): Movements(0, 0, 0, 0, 1000),
        day(3, 6): Movements(0, 0, 0, 0, 0),  # a cancellation scheduled is not a movement
    }
    for when, movements in expected.items():
        assert stats.figures(db, "EUR", when, when).movements == movements, when
    rows = db.query(
        "SELECT day, new_mrr, expansion_mrr, contraction_mrr, churn_mrr, reactivation_mrr "
        "FROM revenue_daily WHERE currency = 'EUR'"
    )
    by_day = {read_day(row[0]): Movements(*map(read_int, row[1:])) for row in rows}
    for when, movements in expected.items():
        assert by_day.get(when, Movements(0, 0, 0, 0, 0)) == movements, when
    # Every other day moved nothing.
    assert all(m == Movements(0, 0, 0, 0, 0) for d, m in by_day.items() if d not in expected)


def test_figures_of_february_worked_out_by_hand(story: Story, projections: Projector) -> None:
    f = stats.figures(projections.database, "EUR", day(2, 1), day(2, 28))
    assert f.mrr_at_start == 5667  # end of Jan 31
    # new 2000 (converter); expansion 1000 (upgrade) + 2000 (second subscription);
    # contraction 1000 (downgrade); churn 1000 (pause) + 1000 (cancel); reactivation 1000
    assert f.movements == Movements(2000, 3000, 1000, 2000, 1000)
    assert f.mrr == 8667  # 5667 + 2000 + 3000 - 1000 - 2000 + 1000
    assert (f.paying_customers_at_start, f.paying_customers) == (5, 5)  # 5 + 1 + 1 - 2
    assert (f.new_customers, f.reactivated_customers, f.churned_customers) == (1, 1, 2)
    assert f.customers == 7
    # The cohort: the 5 paying at the end of Jan 31, 5667 in all, and their MRR at the end
    # of Feb 28: upgrader 1000 (1000 -> 2000 -> 1000), annual 1667, pauser 1000 (paused and
    # resumed), returner 0 (canceled), doubler 3000 (1000 + 2000): 6667. The converter,
    # paying since Feb 14, is not in it (8667 - 2000 = 6667).
    assert f.cohort == stats.Cohort(
        customers=5, mrr_at_start=5667, mrr_at_end=6667, lost_mrr=1000, churned_customers=1
    )
    assert f.cohort.mrr_at_start == f.mrr_at_start
    assert f.cohort.expansion_mrr == 2000  # the doubler's 1000 -> 3000
    # Only the returner is not paying at the end; the pauser came back: 1 of 5. The
    # churned_customers count above is the paying customers' bridge, not this numerator.
    assert f.customer_churn_rate == Fraction(1, 5)
    assert f.revenue_churn_rate == Fraction(1000, 5667)  # the returner's 1000 lost
    # 6667 / 5667 = 1 - 1000/5667 (lost) + 2000/5667 (the doubler's expansion)
    assert f.net_revenue_retention == Fraction(6667, 5667)
    assert f.arpu == Fraction(8667, 5)  # 1733.4
    # Trials: none started in February; one converted and one expired: 1 / (1 + 1).
    assert (f.trials_started, f.trials_converted, f.trials_not_converted) == (0, 1, 1)
    assert f.trial_conversion_rate == Fraction(1, 2)
    # Monthly churn over 28 days: 1/5 * (365.25 / 12) / 28 = 1/5 * 1461/48 / 28
    # = 1461/6720 = 487/2240; LTV = ARPU / monthly churn = 8667/5 * 2240/487
    # = 8667 * 448 / 487 = 3882816/487 = 7972.92...
    assert f.monthly_customer_churn_rate == Fraction(487, 2240)
    assert f.ltv == Fraction(3882816, 487)
    shown = f.as_json()
    assert (shown["arpu"], shown["ltv"]) == (1733, 7973)  # rounded to cents, half-even
    assert shown["customer_churn_rate"] == 0.2
    assert shown["revenue_churn_rate"] == 0.17646  # 1000 / 5667 = 0.1764602...
    assert shown["net_revenue_retention"] == 1.17646  # 6667 / 5667 = 1.1764602...
    assert shown["cohort"] == {
        "customers": 5,
        "mrr_at_start": 5667,
        "mrr_at_end": 6667,
        "lost_mrr": 1000,
        "expansion_mrr": 2000,
        "churned_customers": 1,
    }
    assert shown["trial_conversion_rate"] == 0.5


def test_figures_from_feb_8_where_retention_is_not_one(
    story: Story, projections: Projector
) -> None:
    f = stats.figures(projections.database, "EUR", day(2, 8), day(2, 28))
    assert f.mrr_at_start == 4667  # end of Feb 7: the pauser paused
    # new 2000 (converter), expansion 1000 + 2000, contraction 1000, churn 1000 (returner),
    # reactivation 1000 (pauser)
    assert f.movements == Movements(2000, 3000, 1000, 1000, 1000)
    assert f.mrr == 8667  # 4667 + 2000 + 3000 - 1000 - 1000 + 1000
    # Paying at the start: upgrader, annual, returner, doubler; the returner churned.
    assert (f.paying_customers_at_start, f.churned_customers, f.paying_customers) == (4, 1, 5)
    # Their MRR at the end of Feb 28: upgrader 1000 (its upgrade and downgrade cancel out:
    # no loss), annual 1667, returner 0, doubler 3000 = 5667; the pauser (back on Feb 20)
    # and the converter started paying in the range and are left out.
    assert f.cohort == stats.Cohort(
        customers=4, mrr_at_start=4667, mrr_at_end=5667, lost_mrr=1000, churned_customers=1
    )
    assert f.customer_churn_rate == Fraction(1, 4)
    assert f.revenue_churn_rate == Fraction(1000, 4667)  # the returner's 1000
    # 5667 / 4667 = 1 - 1000/4667 + 2000/4667 (the doubler's expansion)
    assert f.net_revenue_retention == Fraction(5667, 4667)
    assert f.arpu == Fraction(8667, 5)
    # 21 days: monthly churn 1/4 * 1461/48 / 21 = 1461/4032; LTV = 8667/5 * 4032/1461
    # = 34945344/7305 = 4783.75...
    assert f.monthly_customer_churn_rate == Fraction(1461, 4032)
    assert f.ltv == Fraction(34945344, 7305)
    assert f.as_json()["ltv"] == 4784


def test_figures_of_the_whole_story_and_of_the_usd_customer(
    story: Story, projections: Projector
) -> None:
    db = projections.database
    f = stats.figures(db, "EUR", day(1, 31), day(3, 7))
    # new 5667 + 2000; expansion 3000; contraction 1000; churn 2000; reactivation 2000
    assert f.movements == Movements(7667, 3000, 1000, 2000, 2000)
    assert (f.mrr_at_start, f.mrr) == (0, 9667)  # 7667 + 3000 - 1000 - 2000 + 2000
    assert (f.new_customers, f.reactivated_customers, f.churned_customers) == (6, 2, 2)
    assert f.paying_customers == 6  # 6 + 2 - 2: everyone but the lapser
    assert f.arpu == Fraction(9667, 6)
    # Nobody paid at the start: an empty cohort, the rates are undefined, not zero.
    assert f.cohort == stats.Cohort(0, 0, 0, 0, 0)
    assert (f.customer_churn_rate, f.revenue_churn_rate) == (None, None)
    assert (f.net_revenue_retention, f.ltv) == (None, None)
    assert (f.trials_started, f.trials_converted, f.trials_not_converted) == (2, 1, 1)
    assert f.trial_conversion_rate == Fraction(1, 2)
    # 24000 + 7643 + 1000 collected, 393 refunded (test_months_worked_out_by_hand)
    assert (f.collected, f.refunded, f.failed_payments, f.recovered_payments) == (32643, 393, 0, 0)
    # The american's Basic, paid on Jan 31 and renewed on Feb 28: 2 * 1200.
    assert stats.figures(db, "USD", day(1, 31), day(3, 7)).collected == 2400

    usd = stats.figures(db, "USD", day(2, 1), day(2, 28))
    assert (usd.mrr_at_start, usd.mrr, usd.movements) == (1200, 1200, Movements(0, 0, 0, 0, 0))
    assert (usd.paying_customers, usd.customers, usd.arpu) == (1, 1, Fraction(1200))
    # The cohort is the american, paying 1200 throughout: nothing lost, all retained.
    assert usd.cohort == stats.Cohort(1, 1200, 1200, 0, 0)
    assert (usd.customer_churn_rate, usd.revenue_churn_rate) == (Fraction(0), Fraction(0))
    assert usd.net_revenue_retention == 1
    assert usd.ltv is None  # no churn: undefined, not infinite
    assert usd.trial_conversion_rate is None  # no trial ended
    assert stats.currencies(db) == ["EUR", "USD"]


def test_months_worked_out_by_hand(story: Story, projections: Projector) -> None:
    months = stats.months(projections.database, "EUR", day(1, 1), day(3, 31))
    summary = [
        (m.start, m.end, m.mrr_at_start, m.movements, m.mrr, m.paying_customers, m.customers)
        for m in months
    ]
    assert summary == [
        (day(1, 31), day(1, 31), 0, Movements(5667, 0, 0, 0, 0), 5667, 5, 7),
        (day(2, 1), day(2, 28), 5667, Movements(2000, 3000, 1000, 2000, 1000), 8667, 5, 7),
        # March until its last day with a movement: the returner's reactivation
        (day(3, 1), day(3, 5), 8667, Movements(0, 0, 0, 0, 1000), 9667, 6, 7),
    ]
    assert [(m.trials_started, m.trials_converted, m.trials_not_converted) for m in months] == [
        (2, 0, 0),
        (0, 1, 1),
        (0, 0, 0),
    ]
    # January: nobody paid before Jan 31. February: the 5 of Jan 31, as in
    # test_figures_of_february_worked_out_by_hand. March (to Mar 5): the 5 paying at the
    # end of Feb 28 (upgrader 1000, annual 1667, pauser 1000, doubler 3000, converter 2000
    # = 8667) all still pay the same on Mar 5; the returner's comeback is not theirs.
    assert [m.cohort for m in months] == [
        stats.Cohort(0, 0, 0, 0, 0),
        stats.Cohort(5, 5667, 6667, 1000, 1),
        stats.Cohort(5, 8667, 8667, 0, 0),
    ]
    assert [m.customer_churn_rate for m in months] == [None, Fraction(1, 5), 0]
    assert [m.revenue_churn_rate for m in months] == [None, Fraction(1000, 5667), 0]
    assert [m.net_revenue_retention for m in months] == [None, Fraction(6667, 5667), 1]
    # Collected: Jan 31 the five signups without trial, 1000 * 4 + 20000 (the annual);
    # Feb 10 the upgrade's proration, 1286 - 643 = 643; Feb 12 the doubler's Pro 2000;
    # Feb 14 the converted trial 2000; Feb 28 the renewals of the upgrader (now Basic),
    # the pauser and the doubler's Basic, 3 * 1000. Mar 5 the returner's new Basic 1000.
    # Refunded: the returner's cancel of Feb 17 refunds the unused 11 of the period's 28
    # days, 1000 * 11 / 28 = 392.86 -> 393. No payment failed: every card pays.
    assert [(m.collected, m.refunded, m.failed_payments, m.recovered) for m in months] == [
        (24000, 0, 0, 0),
        (7643, 393, 0, 0),
        (1000, 0, 0, 0),
    ]


def test_subscribers_by_plan_and_status(story: Story, projections: Projector) -> None:
    db = projections.database
    # End of Feb 13: basic active = returner, doubler; basic paused = pauser; pro active =
    # upgrader (2000), annual (1667), doubler's second (2000); pro trialing = 2 trials.
    assert stats.figures(db, "EUR", day(2, 13), day(2, 13)).subscribers == (
        PlanSubscribers("basic", "active", 2, 2000),
        PlanSubscribers("basic", "paused", 1, 0),
        PlanSubscribers("pro", "active", 3, 5667),
        PlanSubscribers("pro", "trialing", 2, 0),
    )
    # End of Feb 14: the converter is active on Pro, the lapser's trial expired (not live).
    assert stats.figures(db, "EUR", day(2, 14), day(2, 14)).subscribers == (
        PlanSubscribers("basic", "active", 2, 2000),
        PlanSubscribers("basic", "paused", 1, 0),
        PlanSubscribers("pro", "active", 4, 7667),
    )
    # The end: basic = upgrader (downgraded), pauser, returner again, doubler; pro =
    # converter, annual (1667), doubler's second. The returner's first one is canceled.
    assert stats.figures(db, "EUR", day(2, 1), day(3, 7)).subscribers == (
        PlanSubscribers("basic", "active", 4, 4000),
        PlanSubscribers("pro", "active", 3, 5667),
    )
    assert stats.figures(db, "USD", day(3, 7), day(3, 7)).subscribers == (
        PlanSubscribers("basic", "active", 1, 1200),
    )


def test_current_subscriptions_and_due_work(story: Story) -> None:
    basic, pro, annual = "basic-month-eur-v1", "pro-month-eur-v1", "pro-year-eur-v1"
    on_feb_14 = story.seen[day(2, 14)]
    assert on_feb_14 == {
        # Upgraded now on Feb 10: same period, Jan 31 to Feb 28.
        "upgrader": (("active", 2000, pro, None, None), [("renewal", at(2, 28))]),
        # The trial ended at 09:00 today; a month from then.
        "converter": (("active", 2000, pro, None, None), [("renewal", at(3, 14))]),
        "lapser": (("expired", 0, pro, None, None), []),
        # Paused: the calendar runs on, the period still ends Feb 28.
        "pauser": (("paused", 0, basic, None, None), [("renewal", at(2, 28))]),
        "doubler_pro": (("active", 2000, pro, None, None), [("renewal", at(3, 12))]),
    }
    on_feb_20 = story.seen[day(2, 20)]
    assert on_feb_20 == {
        # The downgrade waits for the period's end, at the renewal.
        "upgrader": (
            ("active", 2000, pro, None, basic),
            [("plan_change", at(2, 28)), ("renewal", at(2, 28))],
        ),
        "pauser": (("active", 1000, basic, None, None), [("renewal", at(2, 28))]),
        "returner": (("canceled", 0, basic, None, None), []),
    }
    at_the_end = story.seen[day(3, 7)]
    assert at_the_end == {
        "upgrader": (("active", 1000, basic, None, None), [("renewal", at(3, 31))]),
        "converter": (("active", 2000, pro, None, None), [("renewal", at(3, 14))]),
        "lapser": (("expired", 0, pro, None, None), []),
        # 20000 / 12 = 1666.67 -> 1667; canceled at the end of its year.
        "annual": (
            ("active", 1667, annual, at(1, 31, 2026), None),
            [("cancel", at(1, 31, 2026))],
        ),
        "pauser": (("active", 1000, basic, None, None), [("renewal", at(3, 31))]),
        "returner": (("canceled", 0, basic, None, None), []),
        "doubler": (("active", 1000, basic, None, None), [("renewal", at(3, 31))]),
        "american": (
            ("active", 1200, "basic-month-usd-v1", None, None),
            [("renewal", at(3, 31))],
        ),
        "doubler_pro": (("active", 2000, pro, None, None), [("renewal", at(3, 12))]),
        "returner_again": (("active", 1000, basic, None, None), [("renewal", at(4, 5))]),
    }


# (kind, day, amount, proration credit, proration charge)
Line = tuple[str, date, int | None, int | None, int | None]


def history_of(projections: Projector, customer_id: UUID) -> list[Line]:
    return [
        (
            line.kind,
            line.occurred_at.date(),
            line.amount,
            line.proration_credit,
            line.proration_charge,
        )
        for line in customer_history(projections.database, customer_id)
    ]


def test_transaction_histories(story: Story, projections: Projector) -> None:
    # Each invoice follows the event that called for it, and its payment follows it: every
    # card pays, on the day of the invoice (the story runs the processor before moving on).
    # The upgrade on Feb 10 09:00, in the period Jan 31 09:00 - Feb 28 09:00 (28 days),
    # leaves 18 days: credit 1000 * 18/28 = 642.86 -> 643; charge 2000 * 18/28 = 1285.71
    # -> 1286; net 1286 - 643 = 643, invoiced and paid at once.
    assert history_of(projections, story.customers["upgrader"]) == [
        ("customer.registered", day(1, 31), None, None, None),
        ("customer.payment_method_added", day(1, 31), None, None, None),
        ("subscription.started", day(1, 31), 1000, None, None),
        ("invoice.issued", day(1, 31), 1000, None, None),
        ("invoice.payment_succeeded", day(1, 31), 1000, None, None),
        ("subscription.plan_changed", day(2, 10), 643, 643, 1286),
        ("invoice.issued", day(2, 10), 643, None, None),
        ("invoice.payment_succeeded", day(2, 10), 643, None, None),
        ("subscription.change_scheduled", day(2, 20), None, None, None),
        ("subscription.renewed", day(2, 28), 1000, None, None),
        ("invoice.issued", day(2, 28), 1000, None, None),
        ("invoice.payment_succeeded", day(2, 28), 1000, None, None),
    ]
    # Canceled now on Feb 17 09:00 with 11 of 28 days unused: 1000 * 11/28 = 392.86 -> 393,
    # refunded through the gateway that took the payment.
    assert history_of(projections, story.customers["returner"]) == [
        ("customer.registered", day(1, 31), None, None, None),
        ("customer.payment_method_added", day(1, 31), None, None, None),
        ("subscription.started", day(1, 31), 1000, None, None),
        ("invoice.issued", day(1, 31), 1000, None, None),
        ("invoice.payment_succeeded", day(1, 31), 1000, None, None),
        ("subscription.canceled", day(2, 17), 393, None, None),
        ("invoice.refund_requested", day(2, 17), 393, None, None),
        ("invoice.refund_succeeded", day(2, 17), 393, None, None),
        ("subscription.started", day(3, 5), 1000, None, None),
        ("invoice.issued", day(3, 5), 1000, None, None),
        ("invoice.payment_succeeded", day(3, 5), 1000, None, None),
    ]
    # Paused and resumed within the paid period: nothing invoiced until the renewal.
    assert history_of(projections, story.customers["pauser"]) == [
        ("customer.registered", day(1, 31), None, None, None),
        ("customer.payment_method_added", day(1, 31), None, None, None),
        ("subscription.started", day(1, 31), 1000, None, None),
        ("invoice.issued", day(1, 31), 1000, None, None),
        ("invoice.payment_succeeded", day(1, 31), 1000, None, None),
        ("subscription.paused", day(2, 7), None, None, None),
        ("subscription.resumed", day(2, 20), None, None, None),
        ("subscription.renewed", day(2, 28), 1000, None, None),
        ("invoice.issued", day(2, 28), 1000, None, None),
        ("invoice.payment_succeeded", day(2, 28), 1000, None, None),
    ]
    # A trial is not invoiced; its conversion is.
    assert history_of(projections, story.customers["converter"]) == [
        ("customer.registered", day(1, 31), None, None, None),
        ("customer.payment_method_added", day(1, 31), None, None, None),
        ("subscription.trial_started", day(1, 31), None, None, None),
        ("subscription.trial_converted", day(2, 14), 2000, None, None),
        ("invoice.issued", day(2, 14), 2000, None, None),
        ("invoice.payment_succeeded", day(2, 14), 2000, None, None),
    ]
    assert history_of(projections, story.customers["lapser"]) == [
        ("customer.registered", day(1, 31), None, None, None),
        ("subscription.trial_started", day(1, 31), None, None, None),
        ("subscription.trial_expired", day(2, 14), 0, None, None),
    ]
    doubler = history_of(projections, story.customers["doubler"])
    assert [kind for kind, *_ in doubler] == [
        "customer.registered",
        "customer.payment_method_added",
        *("subscription.started", "invoice.issued", "invoice.payment_succeeded"),
        *("subscription.started", "invoice.issued", "invoice.payment_succeeded"),
        *("subscription.renewed", "invoice.issued", "invoice.payment_succeeded"),
    ]


def projected_tables(db: Database) -> dict[str, list[tuple[str, ...]]]:
    """Every projection table's rows as text, sorted: comparable across runs."""
    return {
        table: sorted(tuple(map(str, row)) for row in db.query(f"SELECT * FROM {table}"))
        for table in PROJECTION_TABLES
    }


def test_a_rebuild_gives_what_the_story_built_step_by_step(
    story: Story, projections: Projector
) -> None:
    db = projections.database
    step_by_step = projected_tables(db)
    assert len(step_by_step["current_subscriptions"]) == 10
    projections.rebuild()
    assert projected_tables(db) == step_by_step


def test_a_churn_recorded_late_is_still_a_churn_on_its_own_day(
    shop: Shop, projections: Projector
) -> None:
    """The billing clock is late: a cancellation due on Feb 28 is recorded only on Mar 3,
    after the customer had already started a new subscription on Mar 2. Movements compare
    the customer's MRR just before and just after each change, at the change's instant."""
    answer = shop.send(s.RegisterCustomer, email="h@example.com", name="H", currency="EUR")
    customer_id = UUID(answer["customer_id"])
    shop.card(customer_id)
    answer = shop.send(s.StartSubscription, customer_id=customer_id, plan_code="basic")
    first = UUID(answer["subscription_id"])  # Jan 31 - Feb 28 09:00
    shop.send(s.CancelSubscription, subscription_id=first, when="period_end")
    shop.clock.advance_to(at(3, 2))  # nobody touched the first subscription since
    shop.send(s.StartSubscription, customer_id=customer_id, plan_code="pro", trial_days=0)
    shop.clock.advance_to(at(3, 3))
    advance_subscription(shop.ledger, first, shop.clock.now())  # canceled as of Feb 28 09:00
    projections.catch_up()
    db = projections.database
    # Feb 28: 1000 -> 0 is churn; Mar 2: 0 -> 2000 for a customer who paid before is a
    # reactivation. MRR at the end of Feb 28 is 0, and nobody pays.
    feb_28 = stats.figures(db, "EUR", day(2, 28), day(2, 28))
    assert (feb_28.mrr, feb_28.paying_customers) == (0, 0)
    assert feb_28.movements == Movements(0, 0, 0, 1000, 0)
    assert feb_28.churned_customers == 1
    mar_2 = stats.figures(db, "EUR", day(3, 2), day(3, 2))
    assert (mar_2.mrr, mar_2.paying_customers) == (2000, 1)
    assert mar_2.movements == Movements(0, 0, 0, 0, 2000)
    assert mar_2.reactivated_customers == 1
    february = stats.figures(db, "EUR", day(2, 1), day(2, 28))
    # The cohort is the customer alone (1000 on Jan 31), at 0 by the end of Feb 28.
    assert february.cohort == stats.Cohort(1, 1000, 0, 1000, 1)
    assert february.customer_churn_rate == 1  # 1 churned of 1 paying at the start
    assert february.revenue_churn_rate == 1  # 1000 lost of 1000
    assert february.net_revenue_retention == 0
    # To Mar 2 they are back, at 2000: no longer churned, and 200% retained.
    to_mar_2 = stats.figures(db, "EUR", day(2, 1), day(3, 2))
    assert to_mar_2.cohort == stats.Cohort(1, 1000, 2000, 0, 0)
    assert to_mar_2.customer_churn_rate == 0
    assert to_mar_2.net_revenue_retention == 2  # 2000 / 1000


def test_a_free_signup_still_extends_the_daily_series_to_its_day(
    shop: Shop, projections: Projector
) -> None:
    """A signup that changes nothing countable (a free plan, no trial) on Feb 5: the
    series, and the default range, still reach Feb 5, where the subscriber counts."""
    shop.send(s.RegisterPlan, code="free", name="Free")
    shop.send(s.AddPrice, plan_code="free", currency="EUR", amount=0)
    customer_id = shop.customer()  # Jan 31
    shop.clock.advance_to(at(2, 5))
    shop.send(s.StartSubscription, customer_id=customer_id, plan_code="free")
    projections.catch_up()
    db = projections.database
    assert stats.last_day(db) == day(2, 5)
    feb_5 = stats.figures(db, "EUR", day(2, 5), day(2, 5))
    assert [(p.plan_code, p.status, p.subscribers, p.mrr) for p in feb_5.subscribers] == [
        ("free", "active", 1, 0)
    ]
    assert (feb_5.mrr, feb_5.paying_customers, feb_5.customers) == (0, 0, 1)


def test_a_trial_canceled_before_its_end_counts_as_a_trial_that_did_not_convert(
    shop: Shop, projections: Projector
) -> None:
    """Three Pro trials from Jan 31 09:00, each ending Feb 14 09:00, all with a card: one
    converts, one is canceled on Feb 5, one is canceled at its period's end (the trial's
    end). Trial conversion = trials converted / trials that ended = 1 / 3."""
    trials = []
    for n in range(3):
        answer = shop.send(
            s.RegisterCustomer, email=f"t{n}@example.com", name=f"T{n}", currency="EUR"
        )
        customer_id = UUID(answer["customer_id"])
        shop.card(customer_id)
        answer = shop.send(s.StartSubscription, customer_id=customer_id, plan_code="pro")
        trials.append(UUID(answer["subscription_id"]))
    _converts, canceled_now, canceled_at_end = trials
    shop.clock.advance_to(at(2, 5))
    shop.send(s.CancelSubscription, subscription_id=canceled_now, when="now")
    shop.send(s.CancelSubscription, subscription_id=canceled_at_end, when="period_end")
    shop.clock.advance_to(at(2, 15))
    for subscription_id in trials:
        advance_subscription(shop.ledger, subscription_id, shop.clock.now())
    projections.catch_up()
    february = stats.figures(projections.database, "EUR", day(2, 1), day(2, 28))
    assert (february.mrr, february.trials_converted) == (2000, 1)
    assert february.trial_conversion_rate == Fraction(1, 3)


# The demo: the bridge balances on every day, and MRR is what the subscriptions say.


@dataclass
class Replayed:
    """MRR and paying customers per currency at the end of each day, from the
    subscriptions' own events (the domain's ``Subscription.mrr``), not the projections."""

    changes: dict[str, list[tuple[date, UUID, UUID, int]]]  # (day, sub, customer, mrr)

    def at_end_of(self, currency: str, when: date) -> tuple[int, int]:
        subscriptions: dict[UUID, tuple[UUID, int]] = {}
        for changed, subscription_id, customer_id, mrr in self.changes[currency]:
            if changed <= when:
                subscriptions[subscription_id] = (customer_id, mrr)
        by_customer: Counter[UUID] = Counter()
        for customer_id, mrr in subscriptions.values():
            by_customer[customer_id] += mrr
        return sum(by_customer.values()), sum(1 for mrr in by_customer.values() if mrr > 0)


def replay(ledger: Ledger) -> Replayed:
    changes: defaultdict[str, list[tuple[date, UUID, UUID, int]]] = defaultdict(list)
    for subscription_id in ledger.ids_of(Subscription):
        sub: Subscription | None = None
        events: list[Any] = list(ledger.events.get(subscription_id))
        for event in events:
            sub = event.mutate(sub)
            assert isinstance(sub, Subscription)
            changes[sub.price.currency].append(
                (event.timestamp.date(), sub.id, sub.customer_id, sub.mrr.amount)
            )
    for series in changes.values():
        series.sort(key=lambda change: change[0])  # stable: each subscription keeps its order
    return Replayed(dict(changes))


@pytest.fixture
def demo(ledger: Ledger, projections: Projector) -> Projector:
    report = run_demo(ledger, projections, customers=80, months=6, seed=11)
    project(report, projections)
    return projections


def test_the_mrr_bridge_balances_on_every_day_of_the_demo(demo: Projector, ledger: Ledger) -> None:
    db = demo.database
    currencies = stats.currencies(db)
    assert currencies == ["EUR", "USD"]
    replayed = replay(ledger)
    rows = db.query(
        "SELECT currency, day, mrr, paying_customers, new_mrr, expansion_mrr, "
        "contraction_mrr, churn_mrr, reactivation_mrr FROM revenue_daily ORDER BY currency, day"
    )
    daily: defaultdict[str, list[tuple[date, int, int, Movements]]] = defaultdict(list)
    for currency, d, mrr, paying, *moved in rows:
        daily[currency].append(
            (read_day(d), read_int(mrr), read_int(paying), Movements(*map(read_int, moved)))
        )
    assert sorted(daily) == currencies
    for currency, series in daily.items():
        days = [d for d, *_ in series]
        first, last = days[0], days[-1]
        # One row per day, no holes, from the first day to the last.
        assert days == [first + timedelta(days=n) for n in range((last - first).days + 1)]
        assert replayed.at_end_of(currency, first - timedelta(days=1)) == (0, 0)
        previous = 0
        for d, mrr, paying, movements in series:
            assert all(getattr(movements, name) >= 0 for name in MOVEMENTS), (currency, d)
            assert mrr - previous == movements.net, (currency, d)
            single = stats.figures(db, currency, d, d)
            assert (single.mrr_at_start, single.mrr) == (previous, mrr), (currency, d)
            assert single.movements == movements, (currency, d)
            assert single.cohort.mrr_at_start == single.mrr_at_start, (currency, d)
            assert single.mrr - single.mrr_at_start == (
                single.movements.new
                + single.movements.expansion
                - single.movements.contraction
                - single.movements.churn
                + single.movements.reactivation
            )
            assert (mrr, paying) == replayed.at_end_of(currency, d), (currency, d)
            previous = mrr
        assert previous > 0, currency
        # Nothing moves after the last day.
        assert replayed.at_end_of(currency, date(2100, 1, 1)) == (previous, series[-1][2])


def test_the_demo_ends_with_the_mrr_and_subscribers_of_its_subscriptions(
    demo: Projector, ledger: Ledger
) -> None:
    db = demo.database
    mrr: Counter[str] = Counter()
    live: Counter[tuple[str, str, str]] = Counter()
    live_mrr: Counter[tuple[str, str, str]] = Counter()
    for subscription_id in ledger.ids_of(Subscription):
        sub = ledger.subscription(subscription_id)
        mrr[sub.price.currency] += sub.mrr.amount
        if not sub.is_ended:
            key = (sub.price.currency, sub.price.plan_code, sub.status.value)
            live[key] += 1
            live_mrr[key] += sub.mrr.amount
    stored = {
        currency: read_int(total)
        for currency, total in db.query(
            "SELECT currency, SUM(mrr) FROM current_subscriptions GROUP BY currency"
        )
    }
    counted = {
        (currency, plan, status): (read_int(count), read_int(total))
        for currency, plan, status, count, total in db.query(
            "SELECT currency, plan_code, status, COUNT(*), SUM(mrr) FROM current_subscriptions "
            "WHERE status NOT IN ('canceled', 'expired') GROUP BY currency, plan_code, status"
        )
    }
    assert counted == {key: (live[key], live_mrr[key]) for key in live}
    for currency in stats.currencies(db):
        end = stats.figures(db, currency, date(2025, 1, 1), stats.last_day(db))
        assert end.mrr == mrr[currency] == stored[currency], currency
        assert {(p.plan_code, p.status): (p.subscribers, p.mrr) for p in end.subscribers} == {
            (plan, status): v for (c, plan, status), v in counted.items() if c == currency
        }


def test_monthly_figures_agree_with_the_days(demo: Projector) -> None:
    db = demo.database
    daily = {
        (currency, read_day(d)): read_int(mrr)
        for currency, d, mrr in db.query("SELECT currency, day, mrr FROM revenue_daily")
    }
    spans = {
        currency: (read_day(first), read_day(last))
        for currency, first, last in db.query(
            "SELECT currency, MIN(day), MAX(day) FROM revenue_days GROUP BY currency"
        )
    }
    months = db.query(
        "SELECT currency, month, first_day, last_day, mrr_at_start, mrr_at_end "
        "FROM revenue_monthly ORDER BY currency, month"
    )
    assert {currency for currency, *_ in months} == set(spans)
    previous: dict[str, int] = {}
    for currency, month, first, last, at_start, at_end in months:
        first_day, last_day = read_day(first), read_day(last)
        assert f"{first_day:%Y-%m}" == f"{last_day:%Y-%m}" == month
        start_of_data, end_of_data = spans[currency]
        # Whole months, except where the data begins or ends.
        assert first_day == max(first_day.replace(day=1), start_of_data)
        next_month = (last_day.replace(day=28) + timedelta(days=4)).replace(day=1)
        assert last_day == min(next_month - timedelta(days=1), end_of_data)
        assert read_int(at_end) == daily[currency, last_day], (currency, month)
        assert read_int(at_start) == previous.get(currency, 0), (currency, month)
        previous[currency] = read_int(at_end)
    for currency, (start_of_data, end_of_data) in spans.items():
        by_month = stats.months(db, currency, start_of_data, end_of_data)
        assert [m.mrr for m in by_month] == [
            read_int(at_end) for c, _, _, _, _, at_end in months if c == currency
        ]


runner = CliRunner()


def test_demo_json_mrr_is_the_sum_of_its_movements(database_url: str) -> None:
    result = runner.invoke(
        app,
        ["demo", "--database-url", database_url, "--json", "--customers", "30", "--months", "3"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["mrr"]) == set(report["mrr_movements"]) == {"EUR", "USD"}
    with bootstrap(database_url) as ledger:
        by_currency: Counter[str] = Counter()
        for subscription_id in ledger.ids_of(Subscription):
            sub = ledger.subscription(subscription_id)
            by_currency[sub.price.currency] += sub.mrr.amount
    for currency, mrr in report["mrr"].items():
        movements = report["mrr_movements"][currency]
        assert set(movements) == set(MOVEMENTS)
        assert all(isinstance(v, int) and v >= 0 for v in movements.values()), movements
        assert isinstance(mrr, int)
        assert mrr > 0
        # The demo starts from nothing: its MRR is its bridge.
        assert mrr == (
            movements["new"]
            + movements["expansion"]
            - movements["contraction"]
            - movements["churn"]
            + movements["reactivation"]
        ), currency
        assert mrr == by_currency[currency], currency
