"""Discounts: what a coupon takes off a subscription's period charges, and for how long.

A discount covers a range of billing periods: ``once`` one, ``repeating`` N, ``forever``
every one from its first. It takes a percentage (rounded once, half to even) or a fixed
amount (never more than the charge) off each period charge it covers, and off MRR while
it is in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from fractions import Fraction

from ledger.catalog import Price, normalised_to_month
from ledger.errors import CurrencyMismatch, InvalidCoupon
from ledger.money import Money


# A plain Enum, not a StrEnum: a str subclass would be stored as a bare string and the
# registered transcoding would never run.
class Duration(Enum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


def check_reduction(percent_off: Decimal | None, amount_off: Money | None) -> None:
    """Exactly one of a percentage in (0, 100] with at most two decimals, or an amount > 0."""
    if (percent_off is None) == (amount_off is None):
        raise InvalidCoupon("a coupon takes either a percentage or an amount off, not both")
    if percent_off is not None:
        exponent = percent_off.as_tuple().exponent
        if not 0 < percent_off <= 100 or not isinstance(exponent, int) or exponent < -2:
            raise InvalidCoupon(
                f"percent off must be in (0, 100] with two decimals at most, got {percent_off}"
            )
    if amount_off is not None and amount_off.amount <= 0:
        raise InvalidCoupon(f"amount off must be positive, got {amount_off}")


@dataclass(frozen=True, slots=True)
class Discount:
    """A coupon as applied to one subscription: periods ``first_period`` to
    ``last_period`` (None: forever)."""

    coupon_code: str
    percent_off: Decimal | None
    amount_off: Money | None
    first_period: int
    last_period: int | None
    # The plans the coupon was restricted to (empty: every plan). Discounts stored before
    # this field existed come back without it: they applied to every plan.
    plan_codes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Stored as a JSON list: back to a tuple, so that the value stays hashable.
        object.__setattr__(self, "plan_codes", tuple(self.plan_codes))

    def applies_to(self, plan_code: str) -> bool:
        return not self.plan_codes or plan_code in self.plan_codes

    def covers(self, index: int) -> bool:
        return self.first_period <= index and (
            self.last_period is None or index <= self.last_period
        )

    def ends_before(self, index: int) -> bool:
        """Whether period ``index`` comes after the last one this discount covers."""
        return self.last_period is not None and index > self.last_period

    def off(self, charge: Money) -> Money:
        """What this discount takes off ``charge``: never more than the charge."""
        if self.percent_off is not None:
            return charge.scaled(Fraction(self.percent_off) / 100)
        assert self.amount_off is not None
        if self.amount_off.currency != charge.currency:
            raise CurrencyMismatch(
                f"a {self.amount_off.currency} discount cannot apply to a {charge.currency} charge"
            )
        return min(self.amount_off, charge)


def discounted_mrr(price: Price, discount: Discount | None) -> Money:
    """The price's MRR after ``discount``: the discounted period charge, normalised."""
    if discount is None or not discount.applies_to(price.plan_code):
        return price.mrr
    return normalised_to_month(price.amount - discount.off(price.amount), price.interval)
