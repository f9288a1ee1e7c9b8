"""The billing calendar keeps the anchor day across short months and never skips a period."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.calendar import Interval, IntervalUnit, Period, boundary, period, period_at
from ledger.errors import InvalidInterval

MONTH = Interval(IntervalUnit.MONTH)
YEAR = Interval(IntervalUnit.YEAR)
TEN_YEARS = timedelta(days=3653)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# Vectors from Stripe's billing cycle anchor docs


def test_an_anchor_on_the_31st_bills_on_the_last_day_of_short_months() -> None:
    anchor = utc(2025, 1, 31, 9)
    starts = [boundary(anchor, MONTH, n) for n in range(6)]
    assert starts == [
        utc(2025, 1, 31, 9),
        utc(2025, 2, 28, 9),
        utc(2025, 3, 31, 9),
        utc(2025, 4, 30, 9),
        utc(2025, 5, 31, 9),
        utc(2025, 6, 30, 9),
    ]


def test_in_a_leap_year_february_ends_on_the_29th() -> None:
    anchor = utc(2024, 1, 31)
    assert [boundary(anchor, MONTH, n) for n in range(4)] == [
        utc(2024, 1, 31),
        utc(2024, 2, 29),
        utc(2024, 3, 31),
        utc(2024, 4, 30),
    ]


def test_an_anchor_on_the_30th_comes_back_after_february() -> None:
    anchor = utc(2025, 1, 30)
    assert [boundary(anchor, MONTH, n) for n in range(3)] == [
        utc(2025, 1, 30),
        utc(2025, 2, 28),
        utc(2025, 3, 30),
    ]


def test_a_yearly_anchor_on_february_29th_falls_back_to_the_28th() -> None:
    anchor = utc(2024, 2, 29, 12)
    assert [boundary(anchor, YEAR, n) for n in range(5)] == [
        utc(2024, 2, 29, 12),
        utc(2025, 2, 28, 12),
        utc(2026, 2, 28, 12),
        utc(2027, 2, 28, 12),
        utc(2028, 2, 29, 12),
    ]


def test_quarters_weeks_and_days_count_from_the_anchor() -> None:
    anchor = utc(2024, 11, 30, 8, 30)
    quarter = Interval(IntervalUnit.MONTH, 3)
    assert boundary(anchor, quarter, 1) == utc(2025, 2, 28, 8, 30)
    assert boundary(anchor, quarter, 2) == utc(2025, 5, 30, 8, 30)
    assert boundary(anchor, Interval(IntervalUnit.WEEK, 2), 3) == utc(2025, 1, 11, 8, 30)
    assert boundary(anchor, Interval(IntervalUnit.DAY), 32) == utc(2025, 1, 1, 8, 30)


def test_a_period_is_numbered_from_the_anchor_and_half_open() -> None:
    anchor = utc(2025, 1, 31, 9)
    march = period(anchor, MONTH, 2)
    assert march == Period(2, utc(2025, 3, 31, 9), utc(2025, 4, 30, 9))
    assert march.contains(utc(2025, 3, 31, 9))
    assert march.contains(utc(2025, 4, 30, 8, 59))
    assert not march.contains(utc(2025, 4, 30, 9))
    assert not march.contains(utc(2025, 3, 31, 8, 59))


def test_the_period_at_a_boundary_is_the_one_that_starts_there() -> None:
    anchor = utc(2025, 1, 31, 9)
    assert period_at(anchor, MONTH, anchor) == period(anchor, MONTH, 0)
    assert period_at(anchor, MONTH, utc(2025, 2, 28, 9)) == period(anchor, MONTH, 1)
    assert period_at(anchor, MONTH, utc(2025, 2, 28, 8, 59)) == period(anchor, MONTH, 0)
    assert period_at(anchor, YEAR, utc(2035, 6, 1)).index == 10


def test_there_is_no_period_before_the_anchor() -> None:
    anchor = utc(2025, 1, 31, 9)
    with pytest.raises(ValueError, match="before the billing anchor"):
        period_at(anchor, MONTH, utc(2025, 1, 31, 8))
    with pytest.raises(ValueError, match="naive"):
        period_at(anchor, MONTH, datetime(2025, 3, 1))


def test_the_remaining_fraction_runs_from_one_to_zero_exactly() -> None:
    april = Period(0, utc(2025, 4, 1), utc(2025, 5, 1))
    assert april.remaining_fraction(utc(2025, 4, 1)) == 1
    assert april.remaining_fraction(utc(2025, 4, 16)) == Fraction(1, 2)
    assert april.remaining_fraction(utc(2025, 4, 25)) == Fraction(6, 30)
    assert april.remaining_fraction(utc(2025, 5, 1)) == 0
    # Outside the period it is clamped.
    assert april.remaining_fraction(utc(2025, 3, 1)) == 1
    assert april.remaining_fraction(utc(2025, 6, 1)) == 0


# Intervals


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("month", Interval(IntervalUnit.MONTH, 1)),
        ("Month", Interval(IntervalUnit.MONTH, 1)),
        ("years", Interval(IntervalUnit.YEAR, 1)),
        ("3 months", Interval(IntervalUnit.MONTH, 3)),
        ("3 month", Interval(IntervalUnit.MONTH, 3)),
        ("3-month", Interval(IntervalUnit.MONTH, 3)),
        ("2 weeks", Interval(IntervalUnit.WEEK, 2)),
        ("day", Interval(IntervalUnit.DAY, 1)),
    ],
)
def test_an_interval_reads_as_people_write_it(text: str, interval: Interval) -> None:
    assert Interval.parse(text) == interval


@pytest.mark.parametrize(
    "text", ["fortnight", "month 3", "three months", "", "0 month", "101 days"]
)
def test_an_unreadable_interval_is_refused(text: str) -> None:
    with pytest.raises(InvalidInterval):
        Interval.parse(text)


def test_an_interval_count_is_a_positive_integer_up_to_100() -> None:
    assert Interval(IntervalUnit.DAY, 100).count == 100
    for count in (0, -1, 101):
        with pytest.raises(InvalidInterval, match="between 1 and 100"):
            Interval(IntervalUnit.MONTH, count)
    with pytest.raises(InvalidInterval, match="integer"):
        Interval(IntervalUnit.MONTH, True)


def test_an_interval_prints_and_normalises_to_months() -> None:
    assert str(MONTH) == "month"
    assert str(Interval(IntervalUnit.MONTH, 3)) == "3 months"
    assert Interval(IntervalUnit.MONTH, 3).months == 3
    assert YEAR.months == 12
    assert Interval(IntervalUnit.WEEK).months == Fraction(12, 52)
    assert Interval(IntervalUnit.DAY).months == Fraction(12, 365)


# Properties


@st.composite
def anchors(draw: st.DrawFn) -> datetime:
    """Any day of any month (the 29th-31st included), at any time of day."""
    year = draw(st.integers(1990, 2080))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    hour = draw(st.integers(0, 23))
    minute = draw(st.integers(0, 59))
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


intervals = st.builds(Interval, st.sampled_from(list(IntervalUnit)), st.integers(1, 12))


def _expected_start(anchor: datetime, interval: Interval, n: int) -> datetime:
    """Period n's start, computed independently of the calendar module."""
    if interval.unit is IntervalUnit.DAY:
        return anchor + timedelta(days=n * interval.count)
    if interval.unit is IntervalUnit.WEEK:
        return anchor + timedelta(days=7 * n * interval.count)
    months = n * interval.count * (12 if interval.unit is IntervalUnit.YEAR else 1)
    year, month = divmod(anchor.month - 1 + months, 12)
    year += anchor.year
    last_day = calendar.monthrange(year, month + 1)[1]
    return anchor.replace(year=year, month=month + 1, day=min(anchor.day, last_day))


@settings(max_examples=200, deadline=None)
@given(anchor=anchors(), interval=intervals)
def test_ten_years_of_periods_never_skip_or_repeat(anchor: datetime, interval: Interval) -> None:
    horizon = anchor + TEN_YEARS
    previous = period(anchor, interval, 0)
    assert previous.start == anchor
    n = 0
    while previous.end < horizon:
        n += 1
        current = period(anchor, interval, n)
        assert current.index == n
        assert current.start == previous.end
        assert current.start < current.end
        assert current.start == _expected_start(anchor, interval, n)
        assert current.start.time() == anchor.time()
        previous = current


@settings(max_examples=200, deadline=None)
@given(
    anchor=anchors(),
    interval=intervals,
    offset=st.integers(0, TEN_YEARS // timedelta(microseconds=1)),
)
def test_the_period_at_any_instant_contains_it(
    anchor: datetime, interval: Interval, offset: int
) -> None:
    at = anchor + timedelta(microseconds=offset)
    found = period_at(anchor, interval, at)
    assert found.contains(at)
    assert found == period(anchor, interval, found.index)
    assert found.index >= 0
