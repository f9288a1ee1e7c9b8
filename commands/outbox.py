"""The outbox publisher: follows the stored event sequence and adds every domain event,
as an integration event, to the stream ``<prefix>:events``, then fires the lifecycle
signals that fell due (trial ending, card expiring).

Each page of the sequence is published in one Redis MULTI/EXEC transaction: its entries
(one field ``data``, the event as JSON text, readable by any Redis client), the signals
it schedules, and the new position. A crash anywhere therefore loses nothing, duplicates
nothing and reorders nothing: the page is either all published with the position moved
past it, or not at all. The position is watched (WATCH), so two publishers on the same
keys never publish a page twice. A fired signal is removed from the schedule in the same
transaction as its entry is added.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast
from uuid import UUID

import redis
from eventsourcing.domain import Aggregate
from redis.client import Pipeline

from commands.integration_events import (
    IntegrationEvent,
    TrialEnding,
    customer_named_by,
    integration_event,
    is_domain_event,
    signal_from_member,
    signal_member,
    signals_scheduled_by,
)
from commands.streams import Streams
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.ids import as_uuid
from ledger.invoices import Invoice
from ledger.subscriptions import Subscription

# Owners of subscriptions and invoices kept in memory; past this many the cache starts
# again (a page reloads the few it needs), so that memory stays bounded for years.
OWNERS_KEPT = 100_000


def _watch(pipe: Pipeline, key: str) -> None:
    pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def _add(pipe: Pipeline, stream: str, event: IntegrationEvent) -> None:
    pipe.xadd(stream, {"data": json.dumps(event, separators=(",", ":"))})


class OutboxPublisher:
    def __init__(
        self, ledger: Ledger, client: redis.Redis, clock: Clock, streams: Streams, page: int = 500
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.clock = clock
        self.streams = streams
        self.page = page
        # Subscription or invoice id -> its customer: it never changes.
        self._owners: dict[UUID, UUID] = {}

    def position(self) -> int:
        """The last stored event (notification id) whose page was published."""
        return int(self.client.get(self.streams.outbox_position) or 0)

    def run(self) -> int:
        """Publishes every stored event after the position, then the signals due by now;
        returns how many entries it added."""
        published = 0
        while (added := self._publish_page()) is not None:
            published += added
        return published + self._fire_due_signals()

    def _publish_page(self) -> int | None:
        """Publishes the next page, or returns None when there is none; another
        publisher moving the position first makes it read the page again."""
        key = self.streams.outbox_position
        with self.client.pipeline() as pipe:
            while True:
                try:
                    _watch(pipe, key)
                    start = int(pipe.get(key) or 0) + 1
                    page = self.ledger.recorder.select_notifications(start, self.page)
                    if not page:
                        return None
                    decoded = self.ledger.decode(page)
                    events = [e for e in decoded if is_domain_event(e)]
                    self._resolve_owners(events)
                    pipe.multi()
                    for event in events:
                        customer_id = self._customer_of(event)
                        _add(pipe, self.streams.events, integration_event(event, customer_id))
                        for signal in signals_scheduled_by(event):
                            score = signal.due.timestamp()
                            pipe.zadd(
                                self.streams.scheduled_signals, {signal_member(signal): score}
                            )
                    pipe.set(key, page[-1].id)
                    pipe.execute()
                    return len(events)
                except redis.WatchError:
                    continue

    def _resolve_owners(self, events: Sequence[Aggregate.Event]) -> None:
        """Learns the customer of each subscription and invoice a page's events touch:
        named by its first event, else loaded (all the missing ones together)."""
        if len(self._owners) > OWNERS_KEPT:
            self._owners.clear()
        owned = [e for e in events if isinstance(e, Subscription.Event | Invoice.Event)]
        for event in owned:
            if (named := customer_named_by(event)) is not None:
                self._owners[as_uuid(event.originator_id)] = named
        missing = {as_uuid(e.originator_id) for e in owned} - set(self._owners)
        for aggregate_id, aggregate in self.ledger.load_many(missing).items():
            if isinstance(aggregate, Subscription | Invoice):
                self._owners[aggregate_id] = aggregate.customer_id

    def _customer_of(self, event: Aggregate.Event) -> UUID | None:
        if isinstance(event, Subscription.Event | Invoice.Event):
            return self._owners[as_uuid(event.originator_id)]
        return customer_named_by(event)

    def _fire_due_signals(self) -> int:
        """Fires the signals due by now, a page per transaction, each with its removal
        from the schedule; one no longer true (trial canceled, card expired) is dropped."""
        key = self.streams.scheduled_signals
        fired = 0
        with self.client.pipeline() as pipe:
            while True:
                try:
                    _watch(pipe, key)
                    now = self.clock.now()
                    due = pipe.zrangebyscore(key, "-inf", now.timestamp(), start=0, num=self.page)
                    if not due:
                        return fired
                    members = cast(list[bytes | str], due)  # asked without scores
                    events = self._signal_events(members, now)
                    pipe.multi()
                    for member, event in zip(members, events, strict=True):
                        if event is not None:
                            _add(pipe, self.streams.events, event)
                        pipe.zrem(key, member)
                    pipe.execute()
                    fired += sum(event is not None for event in events)
                except redis.WatchError:
                    continue

    def _signal_events(
        self, members: Iterable[bytes | str], now: datetime
    ) -> list[IntegrationEvent | None]:
        signals = [signal_from_member(m) for m in members]
        wanted: list[UUID] = []
        for signal in signals:
            wanted.append(signal.customer_id)
            if isinstance(signal, TrialEnding):
                wanted.append(signal.subscription_id)
        aggregates = self.ledger.load_many(wanted)
        return [signal.event(aggregates, now) for signal in signals]
