"""A stage for a batch of commands handled in one transaction.

Each command of the batch sees what the earlier ones changed, and a command that fails
leaves no trace: an aggregate an earlier command changed is handed out as a copy, which
replaces the staged one only when the command succeeds. One that no command changed
(no pending events: aggregates change only through events) is as stored, and is shared;
should a failing command change it, it is forgotten, and read again if needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from copy import deepcopy
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate, CanMutateAggregate


class Stage:
    def __init__(
        self, loaded: dict[UUID, Aggregate] | None = None, missing: Iterable[UUID] = ()
    ) -> None:
        # Read in bulk for the batch, before its first command: each is handed out once,
        # as if loaded then; ids known not to exist then need no query either.
        self._loaded = dict(loaded or {})
        self._missing = set(missing)
        # What the batch's successful commands changed, not saved yet; and what its
        # commands read without changing it.
        self._kept: dict[UUID, Aggregate] = {}
        self._clean: dict[UUID, Aggregate] = {}
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
            if kept is not None:
                aggregate = deepcopy(kept)
            elif aggregate_id in self._clean:
                aggregate = self._clean[aggregate_id]
            elif aggregate_id in self._missing:
                raise AggregateNotFoundError(aggregate_id)
            else:
                aggregate = self._loaded.pop(aggregate_id, None) or load(aggregate_id)
            self._scope[aggregate_id] = aggregate
        return aggregate

    def add(self, *aggregates: Aggregate) -> None:
        """Aggregates the command in hand created or changed."""
        for aggregate in aggregates:
            self._scope[aggregate.id] = aggregate

    def keep(self) -> None:
        """The command in hand succeeded: later ones see its changes."""
        for aggregate_id, aggregate in self._scope.items():
            if aggregate.pending_events:
                counted = self._counted.get(aggregate_id, 0)
                self._events.extend(aggregate.pending_events[counted:])
                self._counted[aggregate_id] = len(aggregate.pending_events)
                self._kept[aggregate_id] = aggregate
                self._clean.pop(aggregate_id, None)
            else:
                self._clean[aggregate_id] = aggregate
        self._scope = {}

    def drop(self) -> None:
        """The command in hand failed (or only looked): forget what it changed."""
        for aggregate_id, aggregate in self._scope.items():
            if aggregate_id in self._kept:
                continue  # it had a copy
            if aggregate.pending_events:
                self._clean.pop(aggregate_id, None)
            else:
                self._clean[aggregate_id] = aggregate
        self._scope = {}

    def to_save(self) -> tuple[list[CanMutateAggregate[UUID]], list[Aggregate]]:
        """What the batch's successful commands did, for one save: their events in the
        order they made them (a customer's events stay in order in the sequence), and the
        aggregates they changed (for their snapshots; their pending events are taken, the
        events are saved instead)."""
        changed = list(self._kept.values())
        for aggregate in changed:
            aggregate.collect_events()
        return self._events, changed
