"""The event store: one eventsourcing Application holding every aggregate of the ledger.

One application means one totally ordered event sequence, which the projections and the
audit chain follow, and one SQLite file for the embedded default.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import (
    Aggregate,
    CanMutateAggregate,
    CanMutateProtocol,
    DomainEventProtocol,
    MutableOrImmutableAggregate,
)
from eventsourcing.persistence import JSONTranscoder, Recording, StoredEvent
from eventsourcing.utils import Environment, EnvType, get_topic

from ledger.accounts import recording
from ledger.catalog import Plan, plan_id
from ledger.coupons import Coupon, coupon_id
from ledger.customers import Customer, CustomerErased
from ledger.dunning import DunningPolicy
from ledger.errors import NotFound
from ledger.idempotency import CommandRecord, command_record_id
from ledger.ids import as_uuid
from ledger.invoices import Invoice
from ledger.key_store import key_store_for
from ledger.personal_data import SEALED_EVENTS, PersonalData, PersonalDataMapper, master_key
from ledger.postgres_recorder import LeanPostgresApplicationRecorder
from ledger.sqlite_recorder import ChainedSQLiteApplicationRecorder
from ledger.staging import Stage
from ledger.subscriptions import Subscription
from ledger.transcodings import register_ledger_transcodings

A = TypeVar("A", bound=Aggregate)
# The stage loads go through, per thread or task (see ``Ledger.staged``).
_staged: ContextVar[tuple[Ledger, Stage] | None] = ContextVar("staged", default=None)
# The environment key of the master key that wraps each customer's personal data key
# (base64 of 16, 24 or 32 bytes); bootstrap sets it from settings.
PERSONAL_DATA_KEY = "PERSONAL_DATA_KEY"


class Ledger(Application[UUID]):
    name = "Ledger"
    # Customers and subscriptions live for years, and a coupon may be redeemed many
    # thousand times: snapshots keep their loading fast.
    snapshotting_intervals = {Customer: 50, Subscription: 50, Coupon: 100}
    # The business's dunning rules; bootstrap sets them from settings.
    dunning_policy = DunningPolicy()

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        # Personal data is sealed when a master key is given (bootstrap always gives
        # one); a wrong one fails here, before anything is read or written with it.
        self.personal_data: PersonalData | None = None
        if PERSONAL_DATA_KEY in self.env:  # even empty: an empty key is an error, not none
            keys = key_store_for(self.recorder)
            keys.setup()
            self.personal_data = PersonalData(master_key(self.env[PERSONAL_DATA_KEY]), keys)
            self.personal_data.check()
        self._personal_mapper.personal_data = self.personal_data

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """The given environment alone, when one is given: the library would let stray
        ``LEDGER_*`` or ``PERSISTENCE_MODULE`` variables override the database we were
        told to use."""
        if env is None:
            return super().construct_env(name, env)
        given = {"IS_SNAPSHOTTING_ENABLED": "y", **type(self).env, **env}
        return Environment(name, given)

    def construct_mapper(self) -> PersonalDataMapper:
        self._personal_mapper = PersonalDataMapper(
            transcoder=self.construct_transcoder(),
            compressor=self.factory.compressor(),
            cipher=self.factory.cipher(),
        )
        return self._personal_mapper

    def refuse_if_erased(self, customer: Customer, what: str) -> None:
        """Refuses ``what`` for an erased customer: one whose ``Customer.Erased`` is
        stored, or whose key is already destroyed (the erasure's event not stored yet)."""
        if self.personal_data is not None and self.personal_data.destroyed(customer.id):
            raise CustomerErased(f"customer {customer.id} was erased: {what} is refused")
        customer.refuse_if_erased(what)

    def decode(self, stored: Sequence[StoredEvent]) -> list[object]:
        """Decodes a page of stored events, opening the personal data keys it needs in
        one query rather than one per customer."""
        return self._personal_mapper.to_domain_events(list(stored))

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_ledger_transcodings(transcoder)

    @contextmanager
    def staged(self, stage: Stage) -> Iterator[Stage]:
        """Within the block, in this thread or task only, loads see what ``stage`` holds
        (the changes of a batch not saved yet) before the store."""
        token = _staged.set((self, stage))
        try:
            yield stage
        finally:
            _staged.reset(token)

    def _stage(self) -> Stage | None:
        staged = _staged.get()
        return staged[1] if staged is not None and staged[0] is self else None

    def _load(self, aggregate_id: UUID) -> Aggregate:
        if (stage := self._stage()) is not None:
            return stage.get(aggregate_id)
        aggregate: Aggregate = self.repository.get(aggregate_id)
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        if self._stage() is None:
            # One look-up of its first event, not a load (snapshot, then events).
            return bool(self.recorder.select_events(aggregate_id, limit=1))
        try:
            self._load(aggregate_id)
        except AggregateNotFoundError:
            return False
        return True

    def _get(self, kind: type[A], aggregate_id: UUID, label: str) -> A:
        try:
            aggregate = self._load(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"no {label} {aggregate_id}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"no {label} {aggregate_id}")
        return aggregate

    def _record(self, processing: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        if self.personal_data is not None:
            # The customers' keys read, or made, in one go, not one query each.
            sealed = [e for e in processing.events if isinstance(e, SEALED_EVENTS)]
            self.personal_data.prepare(
                (e.originator_id for e in sealed),
                new=(e.originator_id for e in sealed if isinstance(e, Customer.Registered)),
            )
        # The recorders store each event's account (see ledger.accounts), and new
        # customers' keys in the events' transaction.
        with recording(processing.aggregates.values()), self._keys_with_events():
            return super()._record(processing)

    def _keys_with_events(self) -> AbstractContextManager[None]:
        """Around a save: its recorder stores the new personal data keys it seals with,
        where it can (elsewhere, sealing stores them first, each on its own)."""
        recorders = LeanPostgresApplicationRecorder | ChainedSQLiteApplicationRecorder
        if self.personal_data is None or not isinstance(self.recorder, recorders):
            return nullcontext()
        return self.personal_data.saving()

    def save(
        self,
        *objs: MutableOrImmutableAggregate[UUID] | DomainEventProtocol[UUID] | None,
        **kwargs: Any,
    ) -> list[Recording[UUID]]:
        """eventsourcing's save; plain aggregates skip its runtime protocol checks (two
        per object: more than encoding its events costs), as ``save_in_order`` does."""
        aggregates = [o for o in objs if isinstance(o, Aggregate)]
        if kwargs or len(aggregates) != len(objs):
            return super().save(*objs, **kwargs)
        return self.save_in_order([e for a in aggregates for e in a.collect_events()], aggregates)

    def save_in_order(
        self, events: Sequence[CanMutateAggregate[UUID]], aggregates: Iterable[Aggregate]
    ) -> list[Recording[UUID]]:
        """Saves ``events`` in this order (those of several aggregates interleaved, as a
        batch of commands made them), then snapshots the ``aggregates`` they belong to as
        ``save`` does; without ``save``'s runtime protocol check of every object passed,
        which costs more than encoding the event."""
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        processing.events = list(events)
        processing.aggregates = {a.id: a for a in aggregates}
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings

    def load_many(self, ids: Iterable[UUID]) -> dict[UUID, Aggregate]:
        """The current state of each of ``ids`` that exists: on PostgreSQL in one query
        (newest snapshots and the events after them), elsewhere (or staged) one by one."""
        wanted = list(dict.fromkeys(ids))
        recorder = self.recorder
        if not wanted:
            return {}
        if (
            not isinstance(recorder, LeanPostgresApplicationRecorder)
            or self.snapshots is None
            or self._stage() is not None
        ):
            return self._load_each(wanted)
        snapshots_table = getattr(self.snapshots.recorder, "events_table_name", "")
        loaded: dict[UUID, Aggregate] = {}
        rows = recorder.select_current(snapshots_table, wanted)
        for stored, decoded in zip(rows, self.decode(rows), strict=True):
            # A cast, not an isinstance check: a runtime protocol check costs more than
            # decoding the event.
            event = cast(CanMutateProtocol[Aggregate], decoded)
            aggregate_id = cast(UUID, stored.originator_id)  # psycopg reads uuid as UUID
            mutated = event.mutate(loaded.get(aggregate_id))
            assert isinstance(mutated, Aggregate)
            loaded[aggregate_id] = mutated
        return loaded

    def _load_each(self, ids: list[UUID]) -> dict[UUID, Aggregate]:
        loaded: dict[UUID, Aggregate] = {}
        for aggregate_id in ids:
            try:
                loaded[aggregate_id] = self._load(aggregate_id)
            except AggregateNotFoundError:
                continue
        return loaded

    def plan(self, code: str) -> Plan:
        try:
            return self._get(Plan, plan_id(code), "plan")
        except NotFound:
            raise NotFound(f"no plan {code!r}") from None

    def plans(self) -> list[Plan]:
        return [self._get(Plan, i, "plan") for i in self.ids_of(Plan)]

    def has_plan(self, code: str) -> bool:
        return self.exists(plan_id(code))

    def customer(self, customer_id: UUID) -> Customer:
        return self._get(Customer, customer_id, "customer")

    def subscription(self, subscription_id: UUID) -> Subscription:
        return self._get(Subscription, subscription_id, "subscription")

    def invoice(self, invoice_id: UUID) -> Invoice:
        return self._get(Invoice, invoice_id, "invoice")

    def coupon(self, code: str) -> Coupon:
        try:
            return self._get(Coupon, coupon_id(code), "coupon")
        except NotFound:
            raise NotFound(f"no coupon {code!r}") from None

    def coupons(self) -> list[Coupon]:
        return [self._get(Coupon, i, "coupon") for i in self.ids_of(Coupon)]

    def has_coupon(self, code: str) -> bool:
        return self.exists(coupon_id(code))

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
            yield from (as_uuid(n.originator_id) for n in batch)
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
