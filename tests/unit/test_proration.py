"""A mid-period change credits the unused old price and charges the rest at the new one."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.calendar import Interval, IntervalUnit, Period, period
from ledger.money import EXPONENTS, Money
from ledger.proration import Proration, prorate_change, unused_part

APRIL = period(datetime(2025, 4, 1, tzinfo=UTC), Interval(IntervalUnit.MONTH), 0)
MID_APRIL = datetime(2025, 4, 16, tzinfo=UTC)


def eur(cents: int) -> Money:
    return Money(cents, "EUR")


# Vectors from Stripe's proration docs


def test_an_upgrade_from_10_to_20_at_mid_period_credits_5_and_charges_10() -> None:
    proration = prorate_change(eur(1000), eur(2000), APRIL, MID_APRIL)
    assert proration == Proration(credit=eur(500), charge=eur(1000))
    assert proration.net == eur(500)


def test_a_downgrade_now_leaves_the_customer_owed_money() -> None:
    proration = prorate_change(eur(2000), eur(1000), APRIL, MID_APRIL)
    assert proration.credit == eur(1000)
    assert proration.charge == eur(500)
    assert proration.net == eur(-500)


def test_a_third_of_a_period_left_rounds_each_line_half_to_even() -> None:
    # 10 of 30 days left in April: 1/3 of 10.00 is 3.333..., of 20.00 is 6.666...
    proration = prorate_change(eur(1000), eur(2000), APRIL, datetime(2025, 4, 21, tzinfo=UTC))
    assert proration == Proration(credit=eur(333), charge=eur(667))


def test_nothing_is_left_at_the_period_end_and_everything_at_its_start() -> None:
    assert unused_part(eur(1999), APRIL, APRIL.start) == eur(1999)
    assert unused_part(eur(1999), APRIL, APRIL.end) == eur(0)
    assert unused_part(eur(1999), APRIL, APRIL.start - timedelta(days=1)) == eur(1999)
    assert unused_part(eur(1999), APRIL, APRIL.end + timedelta(days=1)) == eur(0)


def test_proration_is_exact_to_the_microsecond() -> None:
    one_microsecond_left = APRIL.end - timedelta(microseconds=1)
    # 30 days in microseconds is 2_592_000_000_000: a huge amount shows the last microsecond.
    assert unused_part(eur(2_592_000_000_000), APRIL, one_microsecond_left) == eur(1)
    assert unused_part(eur(1000), APRIL, one_microsecond_left) == eur(0)


def test_proration_keeps_the_currency_and_its_exponent() -> None:
    proration = prorate_change(Money(1000, "JPY"), Money(3001, "JPY"), APRIL, MID_APRIL)
    assert proration.credit == Money(500, "JPY")
    assert proration.charge == Money(1500, "JPY")  # 1500.5 rounds to even
    assert unused_part(Money(10_001, "BHD"), APRIL, MID_APRIL) == Money(5000, "BHD")


# Properties


@st.composite
def periods(draw: st.DrawFn) -> Period:
    year = draw(st.integers(2000, 2060))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    anchor = datetime(year, month, day, draw(st.integers(0, 23)), tzinfo=UTC)
    unit = draw(st.sampled_from(list(IntervalUnit)))
    interval = Interval(unit, draw(st.integers(1, 12)))
    return period(anchor, interval, draw(st.integers(0, 120)))


def _microseconds(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _instant_in(current: Period, share: Fraction) -> datetime:
    """The instant at ``share`` of the way through ``current``, to the microsecond."""
    length = _microseconds(current.end - current.start)
    return current.start + timedelta(microseconds=int(length * share))


shares = st.fractions(min_value=0, max_value=1, max_denominator=10**9)
prices = st.integers(0, 10**10)
currencies = st.sampled_from(sorted(EXPONENTS))


@settings(max_examples=200, deadline=None)
@given(current=periods(), price=prices, currency=currencies)
def test_the_full_price_at_the_start_and_nothing_at_the_end(
    current: Period, price: int, currency: str
) -> None:
    amount = Money(price, currency)
    assert unused_part(amount, current, current.start) == amount
    assert unused_part(amount, current, current.end) == Money.zero(currency)


@settings(max_examples=200, deadline=None)
@given(current=periods(), price=prices, earlier=shares, later=shares)
def test_the_unused_part_never_grows_as_time_moves_on(
    current: Period, price: int, earlier: Fraction, later: Fraction
) -> None:
    earlier, later = sorted((earlier, later))
    amount = eur(price)
    first = unused_part(amount, current, _instant_in(current, earlier))
    second = unused_part(amount, current, _instant_in(current, later))
    assert eur(0) <= second <= first <= amount


@settings(max_examples=200, deadline=None)
@given(current=periods(), old=prices, new=prices, share=shares, currency=currencies)
def test_credit_and_charge_are_within_half_a_minor_unit_of_the_exact_figures(
    current: Period, old: int, new: int, share: Fraction, currency: str
) -> None:
    at = _instant_in(current, share)
    remaining = Fraction(
        _microseconds(current.end - at), _microseconds(current.end - current.start)
    )
    proration = prorate_change(Money(old, currency), Money(new, currency), current, at)
    assert abs(proration.credit.amount - old * remaining) <= Fraction(1, 2)
    assert abs(proration.charge.amount - new * remaining) <= Fraction(1, 2)
    assert abs(proration.net.amount - (new - old) * remaining) <= 1
    assert proration.net == proration.charge - proration.credit
