"""Tax: one rate per customer (VAT 20%, say), exclusive or inclusive of the prices.

Exclusive: the tax is added on top of what is taxed. Inclusive: the prices already hold
it, and the invoice shows the part of them that is tax. Either way it is computed once
per invoice, exactly, and rounded half to even.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from ledger.errors import InvalidTaxRate
from ledger.money import Money

MAX_PERCENT = Decimal(100)


@dataclass(frozen=True, slots=True)
class TaxRate:
    name: str
    percent: Decimal
    inclusive: bool

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidTaxRate("a tax rate needs a name (VAT, GST, sales tax...)")
        exponent = self.percent.as_tuple().exponent
        if not 0 <= self.percent <= MAX_PERCENT or not isinstance(exponent, int) or exponent < -4:
            raise InvalidTaxRate(
                f"tax percent must be between 0 and {MAX_PERCENT} with four decimals at most, "
                f"got {self.percent}"
            )

    def tax_of(self, taxable: Money) -> Money:
        """The tax in ``taxable``: on top of it if exclusive, the part of it if inclusive."""
        rate = Fraction(self.percent) / 100
        if self.inclusive:
            return taxable.scaled(rate / (1 + rate))
        return taxable.scaled(rate)

    @property
    def label(self) -> str:
        kind = "included" if self.inclusive else "added"
        return f"{self.name} {self.percent.normalize():f}% ({kind})"
