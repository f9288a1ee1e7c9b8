"""Dunning: when a failed charge is retried, and when the business gives up on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.dunning import HARD_DECLINES, DunningPolicy, ExhaustedAction, is_hard_decline

FIRST_FAILURE = datetime(2025, 3, 1, 9, tzinfo=UTC)


def days(n: int) -> datetime:
    return FIRST_FAILURE + timedelta(days=n)


def test_by_default_a_soft_decline_is_retried_after_1_3_5_and_7_days() -> None:
    policy = DunningPolicy()
    failures = [FIRST_FAILURE, days(1), days(3), days(5), days(7)]
    retries = [policy.next_retry(FIRST_FAILURE, at, "card_declined") for at in failures]
    assert retries == [days(1), days(3), days(5), days(7), None]
    assert policy.ends_at(FIRST_FAILURE) == days(7)
    assert policy.on_exhausted is ExhaustedAction.CANCEL


def test_retries_count_from_the_first_failure_on_a_schedule_of_the_business() -> None:
    policy = DunningPolicy((2, 10), ExhaustedAction.LEAVE_UNPAID)
    failures = [FIRST_FAILURE, days(2), days(10)]
    retries = [policy.next_retry(FIRST_FAILURE, at, "insufficient_funds") for at in failures]
    assert retries == [days(2), days(10), None]
    assert policy.ends_at(FIRST_FAILURE) == days(10)


def test_without_retries_dunning_ends_at_the_first_failure() -> None:
    policy = DunningPolicy(())
    assert policy.next_retry(FIRST_FAILURE, FIRST_FAILURE, "card_declined") is None
    assert policy.ends_at(FIRST_FAILURE) == FIRST_FAILURE


def test_a_failure_after_overdue_retry_days_waits_for_the_next_one_to_come() -> None:
    # A new card tried on day 4 (after a hard decline) fails softly: days 1 and 3 are past,
    # so the next retry is day 5, not three overdue ones at once.
    assert DunningPolicy().next_retry(FIRST_FAILURE, days(4), "card_declined") == days(5)


@pytest.mark.parametrize("code", sorted(HARD_DECLINES))
def test_a_hard_decline_is_never_retried_with_the_same_card(code: str) -> None:
    assert is_hard_decline(code)
    assert DunningPolicy().next_retry(FIRST_FAILURE, FIRST_FAILURE, code) is None


@pytest.mark.parametrize("code", ["card_declined", "insufficient_funds", "processing_error"])
def test_soft_declines_are_not_hard(code: str) -> None:
    assert not is_hard_decline(code)


@pytest.mark.parametrize("retry_days", [(0, 3), (-1,), (3, 1), (1, 1, 3)])
def test_retry_days_are_positive_and_increasing(retry_days: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="positive and increasing"):
        DunningPolicy(retry_days)
