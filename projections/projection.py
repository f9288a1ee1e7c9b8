"""What a projection is: SQL tables of its own, fed in batches of stored events.

A projection names the event classes it reads, the tables and views it owns (with the
statements that create them) and a version. ``process`` gets one batch of events, in the
order of the event sequence, inside the transaction that also moves the projection's
position past them (see ``projections.runner``): the batch counts once or not at all.

Change what a projection writes, or how, and raise its version: the runner then drops its
tables and replays every event into the new shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from eventsourcing.utils import get_topic

from projections.database import Transaction

# (position in the event sequence, the decoded domain event)
Positioned = tuple[int, Any]


class Projection(ABC):
    name: ClassVar[str]
    version: ClassVar[int]
    tables: ClassVar[tuple[str, ...]]
    views: ClassVar[tuple[str, ...]] = ()
    # Creates the tables, their indexes, then the views, in this order.
    schema: ClassVar[tuple[str, ...]]
    handles: ClassVar[frozenset[type]]

    @classmethod
    def topics(cls) -> frozenset[str]:
        return frozenset(get_topic(event_class) for event_class in cls.handles)

    def drop(self, tx: Transaction) -> None:
        for view in self.views:
            tx.execute(f"DROP VIEW IF EXISTS {view}")
        for table in self.tables:
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    def create(self, tx: Transaction) -> None:
        for statement in self.schema:
            tx.execute(statement)

    @abstractmethod
    def process(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        """Applies ``events`` (only classes in ``handles``, in sequence order) to the tables."""
