"""The billing calendar: intervals, periods, and a billing anchor kept across short months.

Every boundary is computed from the anchor, never from the previous boundary, so a
subscription anchored on the 31st bills on Jan 31, Feb 28 (29), Mar 31, Apr 30, ...
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction

from ledger.clock import ensure_utc
from ledger.errors import InvalidInterval

MAX_INTERVAL_COUNT = 100


class IntervalUnit(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


# How many of each unit make one month, for normalising a price to MRR (the usual
# subscription-analytics convention: 365/12 days, 52/12 weeks per month).
_UNITS_PER_MONTH = {
    IntervalUnit.DAY: Fraction(365, 12),
    IntervalUnit.WEEK: Fraction(52, 12),
    IntervalUnit.MONTH: Fraction(1),
    IntervalUnit.YEAR: Fraction(1, 12),
}


@dataclass(frozen=True, slots=True)
class Interval:
    """A billing interval: a unit times a count (``Interval(MONTH, 3)`` is quarterly)."""

    unit: IntervalUnit
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.unit, IntervalUnit):
            object.__setattr__(self, "unit", _parse_unit(self.unit))
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise InvalidInterval(f"interval count must be an integer, got {self.count!r}")
        if not 1 <= self.count <= MAX_INTERVAL_COUNT:
            raise InvalidInterval(
                f"interval count must be between 1 and {MAX_INTERVAL_COUNT}, got {self.count}"
            )

    @classmethod
    def parse(cls, text: str) -> Interval:
        """``"month"``, ``"3 month"``, ``"3 months"`` or ``"3-month"`` as an Interval."""
        parts = text.replace("-", " ").split()
        if len(parts) == 1:
            return cls(_parse_unit(parts[0]))
        if len(parts) == 2 and parts[0].isdigit():
            return cls(_parse_unit(parts[1]), int(parts[0]))
        raise InvalidInterval(f"cannot read {text!r} as an interval (e.g. 'month', '3 months')")

    @property
    def months(self) -> Fraction:
        """The interval's length in months, for normalising prices to a month."""
        return self.count / _UNITS_PER_MONTH[self.unit]

    def __str__(self) -> str:
        return str(self.unit) if self.count == 1 else f"{self.count} {self.unit}s"


def _parse_unit(text: object) -> IntervalUnit:
    word = str(text).strip().lower().removesuffix("s")
    try:
        return IntervalUnit(word)
    except ValueError:
        raise InvalidInterval(f"unknown interval unit {text!r} (day, week, month, year)") from None


def _add_months(anchor: datetime, months: int) -> datetime:
    month_index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(month_index, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def boundary(anchor: datetime, interval: Interval, n: int) -> datetime:
    """The start of period ``n`` (0 is the anchor itself)."""
    steps = n * interval.count
    if interval.unit is IntervalUnit.DAY:
        return anchor + timedelta(days=steps)
    if interval.unit is IntervalUnit.WEEK:
        return anchor + timedelta(weeks=steps)
    if interval.unit is IntervalUnit.MONTH:
        return _add_months(anchor, steps)
    return _add_months(anchor, 12 * steps)


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open service period ``[start, end)`` numbered from the billing anchor."""

    index: int
    start: datetime
    end: datetime

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def remaining_fraction(self, at: datetime) -> Fraction:
        """The unused share of the period at ``at``: 1 at its start, 0 at its end, exact."""
        at = min(max(ensure_utc(at), self.start), self.end)
        return Fraction(_microseconds(self.end - at), _microseconds(self.end - self.start))


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def period(anchor: datetime, interval: Interval, index: int) -> Period:
    """Period number ``index`` of a schedule anchored at ``anchor``."""
    return Period(index, boundary(anchor, interval, index), boundary(anchor, interval, index + 1))


def period_at(anchor: datetime, interval: Interval, at: datetime) -> Period:
    """The period that contains ``at`` (``at`` must not be before the anchor)."""
    at = ensure_utc(at)
    if at < anchor:
        raise ValueError(f"{at.isoformat()} is before the billing anchor {anchor.isoformat()}")
    # Estimate from the average length, then step to the exact period.
    average = (boundary(anchor, interval, 64) - anchor) / 64
    index = max(0, int((at - anchor) / average))
    while boundary(anchor, interval, index) > at:
        index -= 1
    while boundary(anchor, interval, index + 1) <= at:
        index += 1
    return period(anchor, interval, index)
