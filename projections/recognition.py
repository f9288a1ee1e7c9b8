"""Revenue recognition: when an invoice's revenue is earned, UTC day by UTC day.

Each service line is earned over its service period, each day in proportion to the part
of the period in it; a discount over the service period of the invoice's period lines.
Rounding is done on running sums, once per day, half to even, so that the days of a line
add up to the line exactly: no minor unit is lost or made up across a month.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

from ledger.invoices import Invoice, InvoiceLine, LineKind

_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (which must add up to more than 0): the
    running sum is rounded half to even, so the parts add up to ``total`` exactly and each
    is within one minor unit of its exact share."""
    whole = sum(weights)
    parts: list[int] = []
    running, reached = 0, 0
    for weight in weights:
        running += weight
        rounded = _divide_half_even(total * running, whole)
        parts.append(rounded - reached)
        reached = rounded
    return parts


def _divide_half_even(numerator: int, denominator: int) -> int:
    """``round(Fraction(numerator, denominator))`` for a positive denominator, in integers:
    a rebuild apportions every invoice over every day it serves."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def daily(amount: int, start: datetime, end: datetime) -> list[tuple[date, int]]:
    """``amount`` over ``[start, end)``, per UTC day in proportion to the time of it in that
    day; all of it on ``start``'s day when the period is empty."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first = start.date()
    if end <= start:
        return [(first, amount)]
    count = ((end - _MICROSECOND).date() - first).days + 1
    midnight = datetime.combine(first, time(), UTC)
    # Whole days, less what the first day has before ``start`` and the last after ``end``.
    weights = [_DAY // _MICROSECOND] * count
    weights[0] -= (start - midnight) // _MICROSECOND
    weights[-1] -= (midnight + count * _DAY - end) // _MICROSECOND
    days = [first + timedelta(days=n) for n in range(count)]
    return list(zip(days, apportion(amount, weights), strict=True))


def _span(lines: Sequence[InvoiceLine], issued_at: datetime) -> tuple[datetime, datetime]:
    """The service period the lines cover together; a line without one is earned when the
    invoice is issued."""
    starts = [line.service_start for line in lines if line.service_start is not None]
    ends = [line.service_end for line in lines if line.service_end is not None]
    return min(starts, default=issued_at), max(ends, default=issued_at)


def recognition(event: Invoice.Issued) -> dict[date, tuple[int, int]]:
    """Per UTC day, the revenue the invoice earns net of tax and discount, and the discount's
    share of that day (so the gross revenue is their sum).

    Inclusive tax is taken out of every line in proportion to it; each service line is
    spread over its own service period, and a discount over the service period of the
    invoice's period lines. The days add up to ``total - tax`` exactly."""
    charges = [line for line in event.lines if line.kind is not LineKind.TAX]
    amounts = [line.amount.amount for line in charges]
    net = (event.total - event.tax).amount
    taxed = (event.subtotal - event.discount).amount
    # Only inclusive tax makes them differ, and then ``taxed`` > 0 (there is tax).
    untaxed = amounts if net == taxed else apportion(net, amounts)
    services = [line for line in charges if line.kind is not LineKind.DISCOUNT]
    periods = [line for line in services if line.kind is LineKind.PERIOD] or services
    discounted = _span(periods, event.timestamp)
    days: defaultdict[date, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for line, amount in zip(charges, untaxed, strict=True):
        is_discount = line.kind is LineKind.DISCOUNT
        start, end = discounted if is_discount else _span([line], event.timestamp)
        for day, part in daily(amount, start, end):
            earned, discount = days[day]
            days[day] = (earned + part, discount - part if is_discount else discount)
    return {day: figures for day, figures in sorted(days.items()) if figures != (0, 0)}
