"""Time-based proration, exact to the microsecond, rounded once per line.

A plan change at instant ``at`` inside a period credits the unused part of the old
price and charges the rest of the period at the new price (as Stripe and Chargebee do).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ledger.calendar import Period
from ledger.money import Money


def unused_part(amount: Money, current: Period, at: datetime) -> Money:
    """The share of ``amount`` for the rest of ``current`` after ``at``."""
    return amount.scaled(current.remaining_fraction(at))


@dataclass(frozen=True, slots=True)
class Proration:
    """The two lines of a mid-period change: a credit and a charge."""

    credit: Money
    charge: Money

    @property
    def net(self) -> Money:
        """What the customer owes now (negative: what they are owed)."""
        return self.charge - self.credit


def prorate_change(old: Money, new: Money, current: Period, at: datetime) -> Proration:
    """The credit for ``old``'s unused time and the charge for ``new`` over the same time."""
    return Proration(credit=unused_part(old, current, at), charge=unused_part(new, current, at))
