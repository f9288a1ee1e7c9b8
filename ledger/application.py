"""The event store: one eventsourcing Application holding every aggregate of the ledger.

One application means one totally ordered event sequence, which the projections and the
audit chain follow, and one SQLite file for the embedded default.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import JSONTranscoder
from eventsourcing.utils import Environment, EnvType, get_topic

from ledger.catalog import Plan, plan_id
from ledger.customers import Customer
from ledger.errors import NotFound
from ledger.idempotency import CommandRecord, command_record_id
from ledger.subscriptions import Subscription
from ledger.transcodings import register_ledger_transcodings

A = TypeVar("A", bound=Aggregate)


class Ledger(Application[UUID]):
    name = "Ledger"
    # Customers and subscriptions live for years; snapshots keep their loading fast.
    snapshotting_intervals = {Customer: 50, Subscription: 50}

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """The given environment alone, when one is given: the library would let stray
        ``LEDGER_*`` or ``PERSISTENCE_MODULE`` variables override the database we were
        told to use."""
        if env is None:
            return super().construct_env(name, env)
        given = {"IS_SNAPSHOTTING_ENABLED": "y", **type(self).env, **env}
        return Environment(name, given)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_ledger_transcodings(transcoder)

    def _get(self, kind: type[A], aggregate_id: UUID, label: str) -> A:
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"no {label} {aggregate_id}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"no {label} {aggregate_id}")
        return aggregate

    def plan(self, code: str) -> Plan:
        try:
            return self._get(Plan, plan_id(code), "plan")
        except NotFound:
            raise NotFound(f"no plan {code!r}") from None

    def plans(self) -> list[Plan]:
        return [self._get(Plan, i, "plan") for i in self.ids_of(Plan)]

    def has_plan(self, code: str) -> bool:
        return plan_id(code) in self.repository

    def customer(self, customer_id: UUID) -> Customer:
        return self._get(Customer, customer_id, "customer")

    def subscription(self, subscription_id: UUID) -> Subscription:
        return self._get(Subscription, subscription_id, "subscription")

    def command_record(self, command_id: str) -> CommandRecord | None:
        try:
            return self._get(CommandRecord, command_record_id(command_id), "command record")
        except NotFound:
            return None

    def ids_of(self, kind: type[Aggregate], page: int = 500) -> Iterator[UUID]:
        """Ids of every aggregate of ``kind``, in creation order, read page by page from
        the event sequence (projections answer this faster; this needs none)."""
        created = next(
            cls
            for cls in vars(kind).values()
            if isinstance(cls, type) and issubclass(cls, Aggregate.Created)
        )
        topic = get_topic(created)
        start = 1
        while True:
            batch = self.recorder.select_notifications(start, page, topics=[topic])
            yield from (UUID(str(n.originator_id)) for n in batch)
            if len(batch) < page:
                return
            start = batch[-1].id + 1

    def event_counts_by_type(self, page: int = 10_000) -> Counter[str]:
        """Stored events counted by type (``Subscription.Renewed``), read page by page."""
        counts: Counter[str] = Counter()
        start = 1
        while batch := self.recorder.select_notifications(start, page):
            counts.update(n.topic.rpartition(":")[2] for n in batch)
            start = batch[-1].id + 1
        return counts
