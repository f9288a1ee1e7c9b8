"""When a failed webhook delivery is attempted again: 30 s doubling to an hour, when the
endpoint says on a 429 or 503, and never later than a day after the first attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from commands.webhook_deliveries import Due
from commands.webhooks import Answer, backoff, outcome_of, retry_after

AT = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
FIRST = Due(UUID(int=1), "event-1", 0, None, "{}", "https://crm.example/h")


def test_the_wait_doubles_from_30_seconds_to_an_hour() -> None:
    waits = [backoff(attempt).total_seconds() for attempt in range(1, 11)]
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert backoff(1000) == timedelta(hours=1)


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("120", timedelta(minutes=2)),
        ("0", timedelta(seconds=1)),  # never at once: no hammering
        ("86400", timedelta(hours=1)),  # not past the longest backoff
        ("Fri, 31 Jan 2025 09:05:00 GMT", timedelta(minutes=5)),
        (None, None),
        ("soon", None),
    ],
)
def test_retry_after_is_seconds_or_a_date_within_an_hour(
    header: str | None, wait: timedelta | None
) -> None:
    assert retry_after(header, AT) == wait


def test_a_2xx_delivers_anything_else_is_retried_then_given_up_after_a_day() -> None:
    ok = outcome_of(FIRST, AT, Answer(204, None, None, 3))
    assert (ok.status, ok.attempt, ok.next_attempt_at) == ("delivered", 1, None)

    failed = Answer(500, "HTTP 500", None, 3)
    retried = outcome_of(FIRST, AT, failed)
    assert (retried.status, retried.next_attempt_at) == ("pending", AT + timedelta(seconds=30))

    later = Due(UUID(int=1), "event-1", 25, AT, "{}", "https://crm.example/h")
    near_end = AT + timedelta(hours=23, minutes=30)
    last = outcome_of(later, near_end, failed)
    assert last.next_attempt_at == AT + timedelta(days=1)  # the last one, a day after
    given_up = outcome_of(later, AT + timedelta(days=1), failed)
    assert (given_up.status, given_up.next_attempt_at, given_up.attempt) == ("failed", None, 26)

    told = outcome_of(FIRST, AT, Answer(429, "HTTP 429", timedelta(minutes=10), 3))
    assert told.next_attempt_at == AT + timedelta(minutes=10)
