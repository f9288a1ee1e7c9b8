"""A stage for a batch of commands handled in one transaction.

Each command of the batch sees what the earlier ones did, and a command that fails
leaves no trace. Aggregates change only through events, so an aggregate whose pending
events did not grow while a command had it is as that command found it: aggregates are
handed from command to command as they are, and one that a failing command changed is
rebuilt from what the store holds and the events the batch's kept commands made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, CanMutateAggregate, CanMutateProtocol

Event = CanMutateAggregate[UUID]


class Stage:
    def __init__(
        self,
        load: Callable[[UUID], Aggregate],
        loaded: dict[UUID, Aggregate] | None = None,
        missing: Iterable[UUID] = (),
    ) -> None:
        self._load = load
        # Every aggregate the batch has touched, as its kept commands left it; at first,
        # what was read in bulk before the batch (ids then missing need no query).
        self._current = dict(loaded or {})
        self._missing = set(missing)
        # The command in hand's aggregates: how many pending events each had then.
        self._scope: dict[UUID, int] = {}
        # The kept commands' events, in the order they made them, and by aggregate.
        self._events: list[Event] = []
        self._made: dict[UUID, list[Event]] = {}

    def get(self, aggregate_id: UUID) -> Aggregate:
        """The aggregate as the batch left it so far."""
        aggregate = self._current.get(aggregate_id)
        if aggregate is None:
            if aggregate_id in self._missing:
                raise AggregateNotFoundError(aggregate_id)
            aggregate = self._current[aggregate_id] = self._load(aggregate_id)
        self._scope.setdefault(aggregate_id, len(aggregate.pending_events))
        return aggregate

    def add(self, *aggregates: Aggregate) -> None:
        """Aggregates the command in hand created or changed."""
        for aggregate in aggregates:
            if self._current.get(aggregate.id) is not aggregate:
                self._current[aggregate.id] = aggregate  # created: all its events are new
                self._scope[aggregate.id] = 0
            self._scope.setdefault(aggregate.id, len(aggregate.pending_events))

    def lead(self, aggregate: Aggregate) -> None:
        """An aggregate the command in hand created whose events go before the others'
        (its command record: as a command saved on its own stores it)."""
        self._current[aggregate.id] = aggregate
        self._scope = {aggregate.id: 0, **self._scope}

    def keep(self) -> None:
        """The command in hand succeeded: its events join the batch's."""
        for aggregate_id, before in self._scope.items():
            made = self._current[aggregate_id].pending_events[before:]
            self._events.extend(made)
            self._made.setdefault(aggregate_id, []).extend(made)
        self._scope = {}

    def drop(self) -> None:
        """The command in hand failed (or only looked): undo what it changed."""
        for aggregate_id, before in self._scope.items():
            if len(self._current[aggregate_id].pending_events) > before:
                self._rebuild(aggregate_id)
        self._scope = {}

    def _rebuild(self, aggregate_id: UUID) -> None:
        made = self._made.get(aggregate_id)
        if not made:  # as stored (read again when next needed), or never created
            del self._current[aggregate_id]
            return
        aggregate = None if isinstance(made[0], Aggregate.Created) else self._load(aggregate_id)
        for event in made:
            aggregate = cast(CanMutateProtocol[Aggregate], event).mutate(aggregate)
        assert aggregate is not None
        self._current[aggregate_id] = aggregate

    def to_save(self) -> tuple[list[Event], list[Aggregate]]:
        """What the batch's kept commands did, for one save: their events in the order
        they made them (a customer's events stay in order in the sequence), and the
        aggregates they changed (for their snapshots)."""
        return self._events, [self._current[i] for i in self._made if self._made[i]]
