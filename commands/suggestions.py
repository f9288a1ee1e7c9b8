"""Publishes plan suggestions (``projections.suggestions``) as integration events on
``<prefix>:events``: ``suggestion.annual_plan`` and ``suggestion.retention_offer``, in the
envelope of ``commands.integration_events`` (docs/events.md), each once.

``published_suggestions`` remembers the ids published. A run adds the new suggestions'
entries to the stream (one MULTI/EXEC), then records their ids: at least once. A crash
between the two publishes them again at the next run with the same ids (the id derives
from the subscription, the kind and the basis), so consumers de-duplicate by id, as they
do for every integration event. A suggestion that goes away and comes back on the same
basis is not published again; on a new basis (a cancel scheduled again, a streak rebuilt)
it is a new event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis

from commands.integration_events import IntegrationEvent
from commands.streams import Streams
from ledger.clock import Clock
from projections.database import Database, select_in
from projections.runner import Projector
from projections.suggestions import Suggestion, suggestions
from projections.values import instant

TABLE = """
CREATE TABLE IF NOT EXISTS published_suggestions (
    event_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subscription_id UUID NOT NULL,
    published_at TIMESTAMPTZ NOT NULL
)"""
# What the envelope carries, or the event's id: not repeated in ``data``.
ENVELOPE = frozenset({"kind", "id", "customer_id", "since"})


def suggestion_event(suggestion: Suggestion) -> IntegrationEvent:
    """A suggestion as an integration event; it occurs when it became true."""
    found = suggestion.as_json()
    return IntegrationEvent(
        type=f"suggestion.{suggestion.kind}",
        id=suggestion.id,
        customer_id=str(suggestion.customer_id),
        occurred_at=found["since"],
        data={key: value for key, value in found.items() if key not in ENVELOPE},
    )


class SuggestionPublisher:
    def __init__(
        self, projector: Projector, client: redis.Redis, clock: Clock, streams: Streams
    ) -> None:
        self.projector = projector
        self.client = client
        self.clock = clock
        self.streams = streams
        with projector.database.transaction(exclusive=True) as tx:
            tx.execute(TABLE)

    def run(self) -> int:
        """Brings the projections up to date, publishes the suggestions not yet
        published, and returns how many."""
        self.projector.catch_up()
        now = self.clock.now()
        found = suggestions(self.projector.database, self.projector.ledger.plans(), now)
        new = _unpublished(self.projector.database, found)
        if not new:
            return 0
        with self.client.pipeline() as pipe:  # MULTI/EXEC: all the entries or none
            for suggestion in new:
                entry = json.dumps(suggestion_event(suggestion), separators=(",", ":"))
                pipe.xadd(self.streams.events, {"data": entry})
            pipe.execute()
        with self.projector.database.transaction() as tx:
            tx.insert_rows(
                "INSERT INTO published_suggestions (event_id, kind, subscription_id, published_at)",
                [(s.id, str(s.kind), str(s.subscription_id), instant(now)) for s in new],
                "ON CONFLICT (event_id) DO NOTHING",
            )
        return len(new)


def _unpublished(database: Database, found: Sequence[Suggestion]) -> list[Suggestion]:
    with database.transaction() as tx:
        select = "SELECT event_id FROM published_suggestions"
        published = {
            str(row[0]) for row in select_in(tx, select, "event_id", [s.id for s in found])
        }
    return [s for s in found if s.id not in published]
