"""Clocks: time is passed into the domain, never read from the wall inside it.

``SystemClock`` is for production; ``SimulatedClock`` is the "test clock" that tests and
the demo advance, so that a year of billing runs in seconds.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ledger.errors import ClockCannotGoBack


def ensure_utc(at: datetime) -> datetime:
    """``at`` as an aware UTC datetime; a naive datetime is a programming error."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: times in subledger are timezone-aware UTC")
    return at.astimezone(UTC)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware and in UTC."""
        ...


class SystemClock:
    """The wall clock; the only place subledger reads it."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class SimulatedClock:
    """A clock that only moves when told to, and only forwards."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ClockCannotGoBack(f"cannot advance by a negative duration {delta}")
        with self._lock:
            self._now += delta
            return self._now

    def advance_to(self, instant: datetime) -> datetime:
        instant = ensure_utc(instant)
        with self._lock:
            if instant < self._now:
                raise ClockCannotGoBack(f"{instant.isoformat()} is before {self._now.isoformat()}")
            self._now = instant
            return self._now
