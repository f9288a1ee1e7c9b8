"""Plans and their prices: a price is never edited, a new version supersedes it for signups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from ledger.calendar import Interval, IntervalUnit
from ledger.catalog import Plan, Price, plan_id, price_id
from ledger.errors import (
    InvalidPlan,
    InvalidPrice,
    NoPriceInCurrency,
    PlanArchived,
    PriceArchived,
    UnknownPrice,
)
from ledger.money import Money

MONTH = Interval(IntervalUnit.MONTH)
YEAR = Interval(IntervalUnit.YEAR)
JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)


def eur(cents: int) -> Money:
    return Money(cents, "EUR")


def pro_plan() -> Plan:
    return Plan.register("pro", "Pro", "For growing teams", ["10 seats", "API access"], JAN)


def test_a_plan_is_registered_under_a_stable_id_derived_from_its_code() -> None:
    plan = pro_plan()
    assert plan.id == plan_id("pro") == pro_plan().id
    assert plan_id("pro") != plan_id("team")
    assert (plan.code, plan.name, plan.features) == ("pro", "Pro", ["10 seats", "API access"])
    assert plan.prices == {}
    assert not plan.archived


@pytest.mark.parametrize("code", ["", "pro plan", "pro/eur", "pro!"])
def test_a_plan_code_is_letters_digits_dashes_and_underscores(code: str) -> None:
    with pytest.raises(InvalidPlan, match="plan code"):
        Plan.register(code, "Pro", "", [], JAN)


def test_a_first_price_is_version_1_with_a_readable_id() -> None:
    plan = pro_plan()
    price = plan.add_price(eur(1999), MONTH, trial_days=14, at=JAN)
    assert price == Price(
        id="pro-month-eur-v1",
        plan_code="pro",
        amount=eur(1999),
        interval=MONTH,
        trial_days=14,
        version=1,
    )
    assert plan.price("pro-month-eur-v1") is price
    assert plan.price_for_signup("EUR", MONTH) == price


def test_price_ids_name_plan_interval_currency_and_version() -> None:
    assert price_id("pro", Interval(IntervalUnit.MONTH, 3), "USD", 2) == "pro-3month-usd-v2"
    assert price_id("pro", YEAR, "JPY", 1) == "pro-year-jpy-v1"


def test_a_new_price_supersedes_the_old_for_signups_while_subscribers_keep_theirs() -> None:
    plan = pro_plan()
    v1 = plan.add_price(eur(1999), MONTH, trial_days=0, at=JAN)
    usd = plan.add_price(Money(2199, "USD"), MONTH, trial_days=0, at=JAN)
    yearly = plan.add_price(eur(19990), YEAR, trial_days=0, at=JAN)

    v2 = plan.add_price(eur(2499), MONTH, trial_days=0, at=FEB)

    assert (v2.id, v2.version) == ("pro-month-eur-v2", 2)
    assert plan.price_for_signup("EUR", MONTH) == v2
    # Grandfathered subscribers still find the price they signed up to, unchanged.
    assert plan.price(v1.id) == v1
    assert plan.price(v1.id).amount == eur(1999)
    assert v1 not in plan.active_prices
    # Other currencies and intervals are not touched.
    assert plan.price_for_signup("USD", MONTH) == usd
    assert plan.price_for_signup("EUR", YEAR) == yearly
    assert plan.active_prices == [usd, yearly, v2]


def test_an_archived_price_takes_no_new_signups() -> None:
    plan = pro_plan()
    price = plan.add_price(eur(1999), MONTH, trial_days=0, at=JAN)
    plan.archive_price(price.id, at=FEB)
    with pytest.raises(PriceArchived, match="archived"):
        plan.price_for_signup("EUR", MONTH)
    assert plan.price(price.id) == price
    with pytest.raises(PriceArchived, match="already archived"):
        plan.archive_price(price.id, at=FEB)


def test_after_archiving_a_price_a_new_one_is_the_next_version() -> None:
    plan = pro_plan()
    v1 = plan.add_price(eur(1999), MONTH, trial_days=0, at=JAN)
    plan.archive_price(v1.id, at=FEB)
    v2 = plan.add_price(eur(2999), MONTH, trial_days=0, at=FEB)
    assert v2.id == "pro-month-eur-v2"
    assert plan.price_for_signup("EUR", MONTH) == v2


def test_an_archived_plan_takes_no_new_signups_and_no_new_prices() -> None:
    plan = pro_plan()
    price = plan.add_price(eur(1999), MONTH, trial_days=0, at=JAN)
    plan.archive(at=FEB)
    assert plan.archived
    with pytest.raises(PlanArchived, match="no new signups"):
        plan.price_for_signup("EUR", MONTH)
    with pytest.raises(PlanArchived):
        plan.add_price(eur(2999), MONTH, trial_days=0, at=FEB)
    with pytest.raises(PlanArchived, match="already archived"):
        plan.archive(at=FEB)
    assert plan.price(price.id) == price


def test_a_currency_or_interval_without_a_price_is_named() -> None:
    plan = pro_plan()
    plan.add_price(eur(1999), MONTH, trial_days=0, at=JAN)
    with pytest.raises(NoPriceInCurrency, match="no month price in USD"):
        plan.price_for_signup("USD", MONTH)
    with pytest.raises(NoPriceInCurrency, match="no year price in EUR"):
        plan.price_for_signup("EUR", YEAR)


def test_an_unknown_price_id_is_refused() -> None:
    plan = pro_plan()
    with pytest.raises(UnknownPrice, match="pro-month-eur-v9"):
        plan.price("pro-month-eur-v9")
    with pytest.raises(UnknownPrice):
        plan.archive_price("pro-month-eur-v9", at=FEB)


def test_a_price_is_never_negative_and_a_trial_lasts_0_to_730_days() -> None:
    plan = pro_plan()
    with pytest.raises(InvalidPrice, match="negative"):
        plan.add_price(eur(-1), MONTH, trial_days=0, at=JAN)
    for days in (-1, 731):
        with pytest.raises(InvalidPrice, match="trial days"):
            plan.add_price(eur(1999), MONTH, trial_days=days, at=JAN)
    assert plan.prices == {}
    free = plan.add_price(eur(0), MONTH, trial_days=730, at=JAN)
    assert (free.amount, free.trial_days) == (eur(0), 730)


@pytest.mark.parametrize(
    ("amount", "interval", "monthly"),
    [
        (12000, YEAR, Fraction(1000)),
        (3000, Interval(IntervalUnit.MONTH, 3), Fraction(1000)),
        (1999, MONTH, Fraction(1999)),
        (1200, Interval(IntervalUnit.WEEK), Fraction(1200 * 52, 12)),
        (100, Interval(IntervalUnit.DAY), Fraction(100 * 365, 12)),
    ],
)
def test_a_price_normalises_to_a_monthly_amount_exactly(
    amount: int, interval: Interval, monthly: Fraction
) -> None:
    price = Price("p", "pro", eur(amount), interval)
    assert price.monthly_amount == monthly
    assert price.currency == "EUR"


def test_the_catalog_history_is_recorded_at_business_time() -> None:
    plan = pro_plan()
    v1 = plan.add_price(eur(1999), MONTH, trial_days=0, at=JAN)
    plan.add_price(eur(2499), MONTH, trial_days=0, at=FEB)
    plan.archive(at=FEB + timedelta(days=1))
    events = plan.collect_events()
    assert [type(e) for e in events] == [
        Plan.Registered,
        Plan.PriceAdded,
        Plan.PriceAdded,
        Plan.Archived,
    ]
    assert [e.timestamp for e in events] == [JAN, JAN, FEB, FEB + timedelta(days=1)]
    superseding = events[2]
    assert isinstance(superseding, Plan.PriceAdded)
    assert superseding.superseded_price_id == v1.id
