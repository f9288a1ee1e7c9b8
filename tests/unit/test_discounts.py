"""Discounts: which periods a coupon covers, and what it takes off each charge and off MRR."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.calendar import Interval, IntervalUnit
from ledger.catalog import Price
from ledger.discounts import Discount, discounted_mrr
from ledger.errors import CurrencyMismatch
from ledger.money import Money
from tests.unit.test_subscriptions import YEAR, eur, price


def percent(value: str, first: int = 0, last: int | None = None) -> Discount:
    return Discount("SAVE", Decimal(value), None, first, last)


def amount(cents: int, first: int = 0, last: int | None = None, currency: str = "EUR") -> Discount:
    return Discount("FLAT", None, Money(cents, currency), first, last)


# Which periods


def test_a_discount_covers_its_periods_and_ends_after_its_last() -> None:
    repeating = percent("10", first=2, last=4)
    assert [repeating.covers(i) for i in range(6)] == [False, False, True, True, True, False]
    assert [repeating.ends_before(i) for i in range(6)] == [False] * 5 + [True]
    once = percent("10", first=3, last=3)
    assert (once.covers(3), once.ends_before(3), once.ends_before(4)) == (True, False, True)


def test_a_forever_discount_never_ends() -> None:
    forever = percent("10", first=1)
    assert not forever.covers(0)
    assert forever.covers(1)
    assert forever.covers(10_000)
    assert not forever.ends_before(10_000)


# What it takes off


@pytest.mark.parametrize(
    ("pct", "charge", "off"),
    [
        ("20", 1000, 200),
        ("12.5", 1999, 250),  # 249.875
        ("33.33", 1000, 333),  # 333.3
        ("25", 1002, 250),  # 250.5: half to even, down
        ("25", 1006, 252),  # 251.5: half to even, up
        ("100", 1999, 1999),
    ],
)
def test_a_percentage_off_is_rounded_once_half_to_even(pct: str, charge: int, off: int) -> None:
    assert percent(pct).off(eur(charge)) == eur(off)


def test_a_percentage_off_applies_to_any_currency() -> None:
    assert percent("10").off(Money(1500, "JPY")) == Money(150, "JPY")


def test_an_amount_off_is_never_more_than_the_charge() -> None:
    assert amount(500).off(eur(1999)) == eur(500)
    assert amount(500).off(eur(300)) == eur(300)


def test_an_amount_off_in_another_currency_is_refused() -> None:
    with pytest.raises(CurrencyMismatch, match="a USD discount cannot apply to a EUR charge"):
        amount(500, currency="USD").off(eur(1000))


@given(
    charge=st.integers(0, 10**12),
    pct=st.decimals(min_value="0.01", max_value=100, places=2),
)
def test_a_percentage_off_is_exact_and_never_more_than_the_charge(
    charge: int, pct: Decimal
) -> None:
    off = Discount("P", pct, None, 0, None).off(eur(charge))
    expected = (Decimal(charge) * pct / 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    assert off == eur(int(expected))
    assert eur(0) <= off <= eur(charge)


# Monthly recurring revenue


def test_without_a_discount_mrr_is_the_price_mrr() -> None:
    assert discounted_mrr(price("pro", 2000), None) == eur(2000)


@pytest.mark.parametrize(
    ("billed", "discount", "mrr"),
    [
        (price("pro", 2000), percent("25"), 1500),
        (price("pro", 12000, YEAR), percent("20"), 800),  # 9600 / 12
        (price("pro", 1000, Interval(IntervalUnit.WEEK)), amount(500), 2167),  # 500 * 52 / 12
        (price("pro", 300), amount(500), 0),  # the amount off is capped at the price
    ],
)
def test_mrr_is_the_discounted_period_charge_normalised_to_a_month(
    billed: Price, discount: Discount, mrr: int
) -> None:
    assert discounted_mrr(billed, discount) == eur(mrr)
