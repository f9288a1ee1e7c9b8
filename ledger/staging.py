"""A stage for a batch of commands handled in one transaction.

Each command of the batch sees what the earlier ones changed, and a command that fails
leaves no trace: an aggregate an earlier command changed is handed out as a copy, which
replaces the staged one only when the command succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from uuid import UUID

from eventsourcing.domain import Aggregate


class Stage:
    def __init__(self) -> None:
        # What the batch's successful commands loaded or changed, not saved yet.
        self._kept: dict[UUID, Aggregate] = {}
        # What the command in hand loaded or changed.
        self._scope: dict[UUID, Aggregate] = {}

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
        self._kept.update(self._scope)
        self._scope = {}

    def drop(self) -> None:
        """The command in hand failed (or only looked): forget what it touched."""
        self._scope = {}

    def changed(self) -> list[Aggregate]:
        """What the batch's successful commands changed, to be saved in one go."""
        return [a for a in self._kept.values() if a.pending_events]
