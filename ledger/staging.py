"""A stage for a batch of commands handled in one transaction.

Each command of the batch sees what the earlier ones changed, and a command that fails
leaves no trace: an aggregate an earlier command changed is handed out as a copy, which
replaces the staged one only when the command succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from uuid import UUID

from eventsourcing.domain import Aggregate, CanMutateAggregate


class Stage:
    def __init__(self) -> None:
        # What the batch's successful commands loaded or changed, not saved yet.
        self._kept: dict[UUID, Aggregate] = {}
        # What the command in hand loaded or changed.
        self._scope: dict[UUID, Aggregate] = {}
        # The kept commands' events, in the order they made them; and how many of each
        # aggregate's pending events are among them.
        self._events: list[CanMutateAggregate[UUID]] = []
        self._counted: dict[UUID, int] = {}

    def get(self, aggregate_id: UUID, load: Callable[[UUID], Aggregate]) -> Aggregate:
        """The aggregate as the batch left it so far (``load`` reads the store)."""
        aggregate = self._scope.get(aggregate_id)
        if aggregate is None:
            kept = self._kept.get(aggregate_id)
            aggregate = load(aggregate_id) if kept is None else deepcopy(kept)
            self._scope[aggregate_id] = aggregate
        return aggregate

    def add(self, *aggregates: Aggregate) -> None:
        """Aggregates the command in hand created or changed."""
        for aggregate in aggregates:
            self._scope[aggregate.id] = aggregate

    def keep(self) -> None:
        """The command in hand succeeded: later ones see its changes."""
        for aggregate in self._scope.values():
            counted = self._counted.get(aggregate.id, 0)
            self._events.extend(aggregate.pending_events[counted:])
            self._counted[aggregate.id] = len(aggregate.pending_events)
        self._kept.update(self._scope)
        self._scope = {}

    def drop(self) -> None:
        """The command in hand failed (or only looked): forget what it touched."""
        self._scope = {}

    def to_save(self) -> list[Aggregate | CanMutateAggregate[UUID]]:
        """What the batch's successful commands did, for one save: their events in the
        order they made them (a customer's events stay in order in the sequence), then the
        aggregates they changed (for their snapshots; their pending events are taken, the
        events above are saved instead)."""
        changed = [a for a in self._kept.values() if a.pending_events]
        for aggregate in changed:
            aggregate.collect_events()
        return [*self._events, *changed]
