"""Money is integer minor units of one ISO 4217 currency: exact, never mixed, never floats."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import CurrencyMismatch, InvalidMoney, UnknownCurrency
from ledger.money import EXPONENTS, Money, exponent

currencies = st.sampled_from(sorted(EXPONENTS))
# Realistic amounts (a bigint column holds them), and huge ones: more digits than the 28
# the default decimal context keeps.
amounts = st.integers(min_value=-(10**15), max_value=10**15)
# Beyond the 28 digits of the default decimal context, within Money.of's 40-digit cap.
huge_amounts = st.integers(10**28, 10**38) | st.integers(-(10**38), -(10**28))
ratios = st.fractions(min_value=0, max_value=1, max_denominator=10**12)


# Vectors from ISO 4217 and the usual rounding rules


@pytest.mark.parametrize(
    ("currency", "places"),
    [("JPY", 0), ("KRW", 0), ("EUR", 2), ("USD", 2), ("BHD", 3), ("KWD", 3), ("CLF", 4)],
)
def test_each_currency_has_its_iso_4217_exponent(currency: str, places: int) -> None:
    assert exponent(currency) == places


@pytest.mark.parametrize("code", ["XXX", "ABC", "eur", "", "EURO"])
def test_an_unknown_currency_code_is_refused(code: str) -> None:
    with pytest.raises(UnknownCurrency, match="ISO 4217"):
        exponent(code)
    with pytest.raises(UnknownCurrency):
        Money(100, code)
    with pytest.raises(UnknownCurrency):
        Money.of("1", code)


def test_major_units_become_minor_units_exactly() -> None:
    assert Money.of("12.34", "EUR") == Money(1234, "EUR")
    assert Money.of("12.345", "BHD") == Money(12345, "BHD")
    assert Money.of("1234", "JPY") == Money(1234, "JPY")
    assert Money.of(Decimal("-0.50"), "EUR") == Money(-50, "EUR")
    assert Money.of(7, "EUR") == Money(700, "EUR")
    assert Money.of("12.300", "EUR") == Money(1230, "EUR")


@pytest.mark.parametrize(
    ("major", "currency"), [("12.345", "EUR"), ("0.001", "USD"), ("12.5", "JPY"), ("1.0001", "BHD")]
)
def test_more_decimals_than_the_currency_has_is_refused_not_rounded(
    major: str, currency: str
) -> None:
    with pytest.raises(InvalidMoney, match=f"more decimals than {currency}"):
        Money.of(major, currency)


@pytest.mark.parametrize("major", ["abc", "", "NaN", "Infinity", "-Infinity", "1e999999999"])
def test_an_amount_that_is_not_a_finite_number_is_refused(major: str) -> None:
    with pytest.raises(InvalidMoney):
        Money.of(major, "EUR")


def test_large_amounts_are_never_silently_rounded() -> None:
    # More digits than the default decimal context (28) keeps.
    assert Money.of("1234567890123456789012345678901.23", "EUR") == Money(
        123456789012345678901234567890123, "EUR"
    )
    assert Money(10**30 + 1, "EUR").to_decimal() == Decimal("10000000000000000000000000000.01")


def test_an_amount_is_an_integer_of_minor_units() -> None:
    with pytest.raises(InvalidMoney, match="integer"):
        Money(12.5, "EUR")  # type: ignore[arg-type]
    with pytest.raises(InvalidMoney, match="integer"):
        Money(True, "EUR")


def test_scaling_rounds_half_to_even_once() -> None:
    half = Fraction(1, 2)
    assert Money(1, "EUR").scaled(half) == Money(0, "EUR")
    assert Money(3, "EUR").scaled(half) == Money(2, "EUR")
    assert Money(5, "EUR").scaled(half) == Money(2, "EUR")
    assert Money(7, "EUR").scaled(half) == Money(4, "EUR")
    assert Money(-3, "EUR").scaled(half) == Money(-2, "EUR")
    assert Money(1000, "EUR").scaled(Fraction(1, 3)) == Money(333, "EUR")
    assert Money(2000, "EUR").scaled(Fraction(1, 3)) == Money(667, "EUR")


def test_amounts_of_different_currencies_never_mix() -> None:
    eur, usd = Money(100, "EUR"), Money(100, "USD")
    assert eur != usd
    with pytest.raises(CurrencyMismatch, match="EUR with USD"):
        eur + usd
    with pytest.raises(CurrencyMismatch):
        eur - usd
    with pytest.raises(CurrencyMismatch):
        _ = eur < usd
    with pytest.raises(CurrencyMismatch):
        _ = eur >= usd


def test_money_compares_and_negates_within_a_currency() -> None:
    small, large = Money(100, "EUR"), Money(250, "EUR")
    assert small < large
    assert small <= small
    assert large > small
    assert large >= large
    assert -small == Money(-100, "EUR")
    assert large - small == Money(150, "EUR")
    assert not Money.zero("EUR")
    assert Money(1, "EUR")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(1234, "EUR"), "12.34 EUR"),
        (Money(5, "EUR"), "0.05 EUR"),
        (Money(-50, "EUR"), "-0.50 EUR"),
        (Money(1234, "JPY"), "1234 JPY"),
        (Money(12345, "BHD"), "12.345 BHD"),
        (Money(0, "BHD"), "0.000 BHD"),
    ],
)
def test_money_prints_with_the_currency_decimals(money: Money, text: str) -> None:
    assert str(money) == text


# Properties


@given(currency=currencies, amount=amounts | huge_amounts)
def test_money_prints_its_exact_major_units(currency: str, amount: int) -> None:
    money = Money(amount, currency)
    assert str(money) == f"{money.to_decimal():.{exponent(currency)}f} {currency}"


@given(currency=currencies, amount=amounts | huge_amounts)
def test_major_units_round_trip_for_every_exponent(currency: str, amount: int) -> None:
    money = Money(amount, currency)
    assert Money.of(str(money.to_decimal()), currency) == money
    assert Money.of(money.to_decimal(), currency) == money
    assert Money.of(str(money).split()[0], currency) == money


@settings(max_examples=200)
@given(
    currency=currencies,
    balance=amounts,
    old=st.integers(0, 10**9),
    new=st.integers(0, 10**9),
    unused=ratios,
)
def test_a_plan_change_credit_and_charge_and_back_never_lose_a_minor_unit(
    currency: str, balance: int, old: int, new: int, unused: Fraction
) -> None:
    a = Money(balance, currency)
    credit = Money(old, currency).scaled(unused)
    charge = Money(new, currency).scaled(unused)
    after_change = a - credit + charge
    assert after_change.amount == balance - credit.amount + charge.amount
    assert after_change - charge + credit == a
    assert abs(credit.amount - old * unused) <= Fraction(1, 2)
    assert abs(charge.amount - new * unused) <= Fraction(1, 2)


@given(currency=currencies, values=st.lists(amounts, max_size=30), data=st.data())
def test_sums_do_not_depend_on_order_or_grouping(
    currency: str, values: list[int], data: st.DataObject
) -> None:
    monies = [Money(v, currency) for v in values]
    shuffled = data.draw(st.permutations(monies))
    total = sum(monies, Money.zero(currency))
    assert total == Money(sum(values), currency)
    assert sum(shuffled, Money.zero(currency)) == total
    if len(monies) >= 3:
        a, b, c = monies[:3]
        assert (a + b) + c == a + (b + c)
        assert a + b == b + a


@given(currency=currencies, amount=amounts, ratio=ratios)
def test_scaling_is_within_half_a_minor_unit_of_the_exact_value(
    currency: str, amount: int, ratio: Fraction
) -> None:
    scaled = Money(amount, currency).scaled(ratio)
    assert scaled.currency == currency
    assert abs(scaled.amount - amount * ratio) <= Fraction(1, 2)
