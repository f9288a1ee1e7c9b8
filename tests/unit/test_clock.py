"""The clock is injected: the simulated one moves only when told to, and only forwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ledger.clock import Clock, SimulatedClock, SystemClock, ensure_utc
from ledger.errors import ClockCannotGoBack

START = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)


def test_a_simulated_clock_stands_still_until_advanced() -> None:
    clock = SimulatedClock(START)
    assert clock.now() == START
    assert clock.now() == START


def test_advancing_by_a_duration_moves_now_forward() -> None:
    clock = SimulatedClock(START)
    assert clock.advance(timedelta(days=30)) == datetime(2025, 3, 2, 9, 0, tzinfo=UTC)
    assert clock.now() == datetime(2025, 3, 2, 9, 0, tzinfo=UTC)
    assert clock.advance(timedelta(0)) == datetime(2025, 3, 2, 9, 0, tzinfo=UTC)


def test_advancing_to_an_instant_moves_now_there() -> None:
    clock = SimulatedClock(START)
    a_year_later = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
    assert clock.advance_to(a_year_later) == a_year_later
    assert clock.now() == a_year_later
    assert clock.advance_to(a_year_later) == a_year_later


def test_the_simulated_clock_refuses_to_go_back() -> None:
    clock = SimulatedClock(START)
    with pytest.raises(ClockCannotGoBack, match="negative"):
        clock.advance(timedelta(microseconds=-1))
    with pytest.raises(ClockCannotGoBack, match="before"):
        clock.advance_to(START - timedelta(seconds=1))
    assert clock.now() == START


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2025, 1, 31, 9, 0)
    with pytest.raises(ValueError, match="naive"):
        ensure_utc(naive)
    with pytest.raises(ValueError, match="naive"):
        SimulatedClock(naive)
    clock = SimulatedClock(START)
    with pytest.raises(ValueError, match="naive"):
        clock.advance_to(naive + timedelta(days=1))
    assert clock.now() == START


def test_other_time_zones_are_converted_to_utc() -> None:
    paris_summer = timezone(timedelta(hours=2))
    local = datetime(2025, 7, 1, 11, 0, tzinfo=paris_summer)
    utc = ensure_utc(local)
    assert utc == local
    assert utc.tzinfo is UTC
    assert (utc.hour, utc.minute) == (9, 0)
    assert SimulatedClock(local).now().tzinfo is UTC


def test_the_system_clock_reads_the_wall_in_utc() -> None:
    clock: Clock = SystemClock()
    before = datetime.now(UTC)
    now = clock.now()
    after = datetime.now(UTC)
    assert now.tzinfo is UTC
    assert before <= now <= after


def test_the_simulated_clock_is_a_clock() -> None:
    clock: Clock = SimulatedClock(START)
    assert clock.now() == START
