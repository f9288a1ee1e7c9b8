"""Tax: added on top of what is taxed (exclusive) or the part of it that is tax (inclusive)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvalidTaxRate
from ledger.money import Money
from ledger.tax import TaxRate

# Rates of 0 to 100% with up to four decimals, as a tax authority may set them.
percents = st.decimals(min_value=0, max_value=100, places=4)
nets = st.integers(0, 10**12)


def eur(cents: int) -> Money:
    return Money(cents, "EUR")


def vat(percent: str, inclusive: bool = False) -> TaxRate:
    return TaxRate("VAT", Decimal(percent), inclusive)


@pytest.mark.parametrize(
    ("rate", "taxable", "tax"),
    [
        (vat("20"), 1000, 200),
        (vat("20", inclusive=True), 1200, 200),
        (vat("20", inclusive=True), 1000, 167),  # 166.67: 1000 / 6
        (vat("5"), 1010, 50),  # 50.5: half to even, down
        (vat("5"), 1030, 52),  # 51.5: half to even, up
        (vat("8.875"), 10000, 888),  # New York City sales tax: 887.5, up to even
        (vat("0"), 1000, 0),
    ],
)
def test_tax_is_computed_exactly_and_rounded_once_half_to_even(
    rate: TaxRate, taxable: int, tax: int
) -> None:
    assert rate.tax_of(eur(taxable)) == eur(tax)


def test_tax_keeps_the_currency_of_what_is_taxed() -> None:
    assert vat("10").tax_of(Money(1234, "JPY")) == Money(123, "JPY")


@given(net=nets, percent=percents)
def test_exclusive_tax_is_the_net_times_the_rate_rounded_half_to_even(
    net: int, percent: Decimal
) -> None:
    expected = (Decimal(net) * percent / 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    assert TaxRate("VAT", percent, inclusive=False).tax_of(eur(net)) == eur(int(expected))


@given(gross=nets, percent=percents)
def test_inclusive_tax_and_the_net_it_leaves_add_up_to_the_gross(
    gross: int, percent: Decimal
) -> None:
    tax = TaxRate("VAT", percent, inclusive=True).tax_of(eur(gross))
    net = eur(gross) - tax
    assert tax + net == eur(gross)
    assert eur(0) <= tax <= eur(gross)
    # The rate applied to that net gives the same tax, give or take the one rounding.
    again = TaxRate("VAT", percent, inclusive=False).tax_of(net)
    assert abs(again.amount - tax.amount) <= 1


@pytest.mark.parametrize(
    ("rate", "label"),
    [
        (vat("20"), "VAT 20% (added)"),
        (vat("20.00"), "VAT 20% (added)"),
        (vat("10"), "VAT 10% (added)"),
        (TaxRate("GST", Decimal("8.875"), True), "GST 8.875% (included)"),
    ],
)
def test_the_label_names_the_tax_its_rate_and_whether_it_is_included(
    rate: TaxRate, label: str
) -> None:
    assert rate.label == label


@pytest.mark.parametrize(
    ("name", "percent", "reason"),
    [
        (" ", "20", "needs a name"),
        ("VAT", "-1", "between 0 and 100"),
        ("VAT", "100.5", "between 0 and 100"),
        ("VAT", "20.12345", "four decimals at most"),
    ],
)
def test_a_tax_rate_needs_a_name_and_a_plausible_percent(
    name: str, percent: str, reason: str
) -> None:
    with pytest.raises(InvalidTaxRate, match=reason):
        TaxRate(name, Decimal(percent), inclusive=False)
