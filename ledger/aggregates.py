"""The base of the ledger's aggregates."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, CanMutateAggregate


class LedgerAggregate(Aggregate):
    """An aggregate whose history never goes back in time.

    Workers' clocks can disagree by a little: an event stamped before the aggregate's
    last event takes that event's time instead, so that replaying an account as of any
    instant sees its facts in the order they were recorded.
    """

    def trigger_event(self, event_class: type[CanMutateAggregate[UUID]], **kwargs: Any) -> None:
        at = kwargs.get("timestamp")
        if at is not None and at < self.modified_on:
            kwargs["timestamp"] = self.modified_on
        super().trigger_event(event_class, **kwargs)
