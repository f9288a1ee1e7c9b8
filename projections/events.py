"""The subscription events the projections read, and which subscriptions a batch must
load from a projection's own tables."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.subscriptions import Subscription
from projections.projection import Positioned

SUBSCRIPTION_EVENTS: frozenset[type] = frozenset(
    {
        Subscription.Started,
        Subscription.TrialEnded,
        Subscription.Renewed,
        Subscription.PlanChanged,
        Subscription.ChangeScheduled,
        Subscription.ScheduledChangeCanceled,
        Subscription.CancelScheduled,
        Subscription.CancelRevoked,
        Subscription.Canceled,
        Subscription.Paused,
        Subscription.ResumeScheduled,
        Subscription.Resumed,
        Subscription.DiscountApplied,
        Subscription.DiscountEnded,
        Subscription.PastDue,
        Subscription.Recovered,
        Subscription.DunningExhausted,
    }
)


def subscriptions_to_load(events: Sequence[Positioned]) -> list[str]:
    """The ids (as text) of the subscriptions the batch's events touch but did not start:
    their state so far is in the projection's tables."""
    started = {e.originator_id for _, e in events if isinstance(e, Subscription.Started)}
    touched = {e.originator_id for _, e in events if type(e) in SUBSCRIPTION_EVENTS}
    return [str(key) for key in touched - started]
