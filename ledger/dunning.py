"""Dunning: what happens when a charge fails.

Soft declines (insufficient funds, a generic decline, a gateway error) are retried on a
schedule counted from the first failure: by default after 1, 3, 5 and 7 days. Hard
declines (an expired, lost or stolen card) are not retried, since the same card would
fail again; a new payment method retries at once. When the last retry fails, or the
schedule runs out while waiting for a new method, the invoice becomes uncollectible and
the subscription is canceled (or left unpaid, if the business prefers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

# Codes a gateway adapter maps its provider's declines to, when they mean "this card or
# account will not work": retrying them only annoys the bank.
HARD_DECLINES = frozenset(
    {
        "expired_card",
        "lost_card",
        "stolen_card",
        "pickup_card",
        "fraudulent",
        "incorrect_number",
        "invalid_account",
        "card_not_supported",
        "no_payment_method",
        "idempotency_key_reused",
    }
)


def is_hard_decline(code: str) -> bool:
    return code in HARD_DECLINES


class ExhaustedAction(Enum):
    CANCEL = "cancel"
    LEAVE_UNPAID = "unpaid"


@dataclass(frozen=True, slots=True)
class DunningPolicy:
    retry_days: tuple[int, ...] = (1, 3, 5, 7)
    on_exhausted: ExhaustedAction = ExhaustedAction.CANCEL

    def __post_init__(self) -> None:
        days = self.retry_days
        if any(d <= 0 for d in days) or list(days) != sorted(set(days)):
            raise ValueError(f"retry days must be positive and increasing, got {days}")

    def ends_at(self, first_failure: datetime) -> datetime:
        """When dunning gives up on an invoice that first failed at ``first_failure``."""
        return first_failure + timedelta(days=self.retry_days[-1] if self.retry_days else 0)

    def next_retry(self, first_failure: datetime, at: datetime, code: str) -> datetime | None:
        """When to try again after a failure at ``at``: the first retry day of the
        schedule still to come (never a burst of overdue ones), if any."""
        if is_hard_decline(code):
            return None
        days = (first_failure + timedelta(days=d) for d in self.retry_days)
        return next((day for day in days if day > at), None)
