"""Personal data sealed at rest, field by field, with each customer's own key; erasing a
customer destroys their key, so that what was sealed with it is unreadable for good
(crypto-shredding) while every other byte of the store stays as it was.

The sealed fields are a customer's ``email``, ``name`` and ``phone``: in the events that
carry them (``Customer.Registered``, ``Customer.ContactChanged``) and in the customer's
snapshots. ``PersonalDataMapper`` seals them before an event is encoded and opens them
after it is decoded, so the aggregates, the projections and the integration events only
ever see plain values, or ``ERASED`` once the customer is erased.

A sealed value is a string, ``sealed:1:`` then the base64 of eventsourcing's AES-GCM
ciphertext (nonce, tag, ciphertext; its ``cryptography``-based cipher, some twenty times
faster than the pycryptodome one, whose ciphertext is the same), so that events stored
before sealing existed (plain text) still load as they are. Each customer's data key is
random, and kept in the store wrapped (AES-GCM) by the master key, which comes from the
settings and never from the database (see ``ledger.key_store`` for where the wrapped keys
live).

A new customer's key is stored in the same transaction as the first events sealed with it
(the recorders store what ``keys_to_store`` gives them while ``PersonalData.saving``):
no event is ever stored sealed with a key that is not, and a save that fails stores
neither. Until then the key is pending: every save sealing with it carries it, and a
save that fails drops it, so that the next use reads the store again (another process
may have stored the customer's key meanwhile; the save then fails with ``IntegrityError``
and is tried again on fresh state, like any conflict).

Opened keys are kept in memory for ``KEY_TTL`` seconds: a process that opened a key
shortly before another process erased its customer can still read their data until its
copy runs out; the process that erases drops its own copy at once.
"""

from __future__ import annotations

import binascii
import time
from base64 import b64decode, b64encode
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from eventsourcing.cryptography import AESCipher
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import IntegrityError, Mapper, StoredEvent
from eventsourcing.utils import Environment, get_topic

from ledger.customers import ERASED, Customer
from ledger.ids import as_uuid

PREFIX = "sealed:1:"
PERSONAL_FIELDS = ("email", "name", "phone")
# The events whose personal fields are sealed (a snapshot is told by the aggregate it
# holds), and the stored topics whose originators' keys a page of events may need.
SEALED_EVENTS: tuple[type[Customer.Event], ...] = (Customer.Registered, Customer.ContactChanged)
SEALED_TOPICS = frozenset({*(get_topic(e) for e in SEALED_EVENTS), get_topic(Snapshot)})
_CUSTOMER_TOPIC = get_topic(Customer)
# Seconds an opened key (or the news that it was destroyed) is kept in memory, and how
# many are kept before the memory starts again.
KEY_TTL = 60.0
# The key store's row that pins the master key (no customer has the nil UUID).
CHECK_ROW = UUID(int=0)
CHECK_PLAINTEXT = b"subledger personal data master key"
KEYS_KEPT = 100_000
DATA_KEY_BYTES = 32
# The wrapped keys the save under way in this thread or task must store with its events
# (see ``PersonalData.saving``), by customer.
_carried: ContextVar[dict[UUID, bytes] | None] = ContextVar("carried_keys", default=None)


def keys_to_store() -> Mapping[UUID, bytes]:
    """The wrapped keys that the events being recorded were sealed with and that may not
    be stored yet: the recorder stores them in the events' transaction, and fails the
    save (``IntegrityError``) if a customer's row holds another key."""
    return _carried.get() or {}


class PersonalDataKeyMismatch(RuntimeError):
    """The master key does not open the data keys in this store: a wrong or changed
    ``SUBLEDGER_PERSONAL_DATA_KEY``. Nothing is read or written with it."""


class PersonalDataKeyMissing(RuntimeError):
    """Sealed data whose customer has no key at all (not even a destroyed one): the key
    table was emptied or the store copied without it."""


class KeyStore(Protocol):
    """Where the wrapped data keys live: one row per customer, whose key is None once
    destroyed (a tombstone, so that no key is ever made again for an erased customer)."""

    def setup(self) -> None:
        """Creates the table if it does not exist."""

    def wrapped(self, customer_ids: Collection[UUID]) -> dict[UUID, bytes | None]:
        """The row of each of ``customer_ids`` that has one (None: destroyed)."""

    def add(self, keys: Mapping[UUID, bytes]) -> set[UUID]:
        """Stores these wrapped keys, leaving a customer's existing row as it is; returns
        the customers whose row holds the key given (stored now or before)."""

    def destroy(self, customer_id: UUID, at: datetime) -> None:
        """Destroys the customer's key for good (a row with no key, made if missing)."""

    def check_value(self, candidate: bytes) -> bytes:
        """The master key's check value: ``candidate`` if the store has none yet (it is
        kept), else the one kept, to be opened with the master key."""


def master_key(text: str) -> bytes:
    """The master key written as base64 of 16, 24 or 32 bytes; ValueError otherwise (an
    empty or cut-short key file too: never taken as "no sealing")."""
    try:
        key = b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ValueError("not base64 (make one: openssl rand -base64 32)") from None
    if len(key) not in (16, 24, 32):
        raise ValueError(f"an AES key is 16, 24 or 32 bytes, this one is {len(key)}")
    return key


def aes(key: bytes) -> AESCipher:
    """eventsourcing's AES-GCM cipher on ``key`` (16, 24 or 32 bytes)."""
    return AESCipher(Environment(env={AESCipher.CIPHER_KEY: b64encode(key).decode()}))


class _Kept(NamedTuple):
    """A customer's key as kept in memory."""

    until: float  # the moment it runs out
    cipher: AESCipher | None  # None: the key was destroyed
    pending: bytes | None  # the wrapped key, made here, while not known to be stored


class PersonalData:
    """Seals and opens personal data with each customer's key, made on first use."""

    def __init__(
        self,
        master_key: bytes,
        keys: KeyStore,
        ttl: float = KEY_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._master = aes(master_key)
        self.keys = keys
        self._ttl = ttl
        self._monotonic = monotonic
        # One entry per customer: a seal reads its cipher and its pending key together,
        # while other threads confirm, drop or replace it.
        self._opened: dict[UUID, _Kept] = {}

    def check(self) -> None:
        """Raises ``PersonalDataKeyMismatch`` unless the master key is the one the store
        was first opened with: at start, rather than at the first customer read."""
        kept = self.keys.check_value(self._master.encrypt(CHECK_PLAINTEXT))
        if self._unwrap(kept) != CHECK_PLAINTEXT:
            raise PersonalDataKeyMismatch("the personal data keys' check value is not ours")

    def seal(self, customer_id: UUID, value: str) -> str:
        """``value`` sealed with the customer's key; for an erased customer, ``ERASED``
        (personal data given after the erasure is not kept)."""
        kept = self._kept(customer_id, make=True)
        if kept.cipher is None:
            return ERASED
        if kept.pending is not None:
            self._carry(customer_id, kept.pending)
        return PREFIX + b64encode(kept.cipher.encrypt(value.encode())).decode()

    def open(self, customer_id: UUID, value: str) -> str:
        """A sealed value in plain text, ``ERASED`` if its key was destroyed; a value that
        is not sealed (stored before sealing existed) as it is."""
        if not value.startswith(PREFIX):
            return value
        cipher = self._kept(customer_id, make=False).cipher
        if cipher is None:
            return ERASED
        try:
            return cipher.decrypt(b64decode(value[len(PREFIX) :], validate=True)).decode()
        except (ValueError, binascii.Error) as error:
            raise ValueError(f"sealed personal data of customer {customer_id}: {error}") from None

    def prepare(self, customer_ids: Iterable[UUID], new: Iterable[UUID] = ()) -> None:
        """Opens the keys of ``customer_ids`` in one query, rather than one query per
        customer as they are met; makes those missing, pending. Customers ``new`` (being
        registered) have none, unless met here before (a failed save): no query for them;
        if another process stored one meanwhile, the save fails and its retry reads it."""
        wanted = self._not_opened(customer_ids)
        if not wanted:
            return
        unseen = {i for i in new if i not in self._opened}
        read = [i for i in wanted if i not in unseen]
        found = self.keys.wrapped(read) if read else {}
        self._keep(found)
        for customer_id in wanted:
            if customer_id not in found:
                self._make(customer_id)

    @contextmanager
    def saving(self) -> Iterator[None]:
        """Within the block, in this thread or task, the pending keys that sealing uses go
        with the save (``keys_to_store``), whose recorder stores them with its events.
        Once the block ends they are stored; if it fails they are dropped: the next use
        reads the store again (which holds them if the commit happened after all)."""
        carried: dict[UUID, bytes] = {}
        token = _carried.set(carried)
        try:
            yield
        except BaseException:
            self._drop(carried)
            raise
        finally:
            _carried.reset(token)
        self._stored(carried)

    def prefetch(self, stored: Iterable[StoredEvent]) -> None:
        """Opens, in one query, the keys that decoding ``stored`` will need."""
        ids = {as_uuid(s.originator_id) for s in stored if s.topic in SEALED_TOPICS}
        if wanted := self._not_opened(ids):
            self._keep(self.keys.wrapped(wanted))

    def destroyed(self, customer_id: UUID) -> bool:
        """Whether the customer's key was destroyed (erased, maybe before the event that
        says so was stored)."""
        if self._not_opened([customer_id]):
            self._keep(self.keys.wrapped([customer_id]))
        kept = self._opened.get(customer_id)
        return kept is not None and kept.cipher is None

    def forget(self, customer_id: UUID, at: datetime) -> None:
        """Destroys the customer's key: their sealed data is unreadable from now on."""
        self.keys.destroy(customer_id, at)
        self._opened[customer_id] = _Kept(self._monotonic() + self._ttl, None, None)

    def _make(self, customer_id: UUID) -> None:
        """A new data key for the customer, pending until stored; or the pending one whose
        memory ran out, which a save under way may be storing."""
        old = self._opened.get(customer_id)
        wrapped = old.pending if old is not None else None
        if wrapped is None:
            wrapped = self._master.encrypt(AESCipher.random_bytes(DATA_KEY_BYTES))
        self._opened[customer_id] = _Kept(self._until(), aes(self._unwrap(wrapped)), wrapped)

    def _carry(self, customer_id: UUID, wrapped: bytes) -> None:
        """A pending key goes with the save under way; with none (an in-memory ledger, a
        snapshot), it is stored now, before the event sealed with it."""
        if (carried := _carried.get()) is not None:
            carried[customer_id] = wrapped
            return
        alone = {customer_id: wrapped}
        if customer_id not in self.keys.add(alone):
            self._drop(alone)
            raise IntegrityError(f"customer {customer_id} has another personal data key")
        self._stored(alone)

    def _stored(self, keys: Mapping[UUID, bytes]) -> None:
        """These pending keys are stored now."""
        for customer_id, wrapped in keys.items():
            if (kept := self._opened.get(customer_id)) is not None and kept.pending == wrapped:
                self._opened[customer_id] = kept._replace(pending=None)

    def _drop(self, keys: Mapping[UUID, bytes]) -> None:
        """These pending keys may not be stored (their save failed): forgotten, and their
        customers no longer new, so that the next use reads the store."""
        for customer_id, wrapped in keys.items():
            if (kept := self._opened.get(customer_id)) is not None and kept.pending == wrapped:
                self._opened[customer_id] = _Kept(0.0, None, None)  # run out already

    def _not_opened(self, customer_ids: Iterable[UUID]) -> list[UUID]:
        now = self._monotonic()
        return [
            i
            for i in dict.fromkeys(customer_ids)
            if (kept := self._opened.get(i)) is None or kept.until <= now
        ]

    def _kept(self, customer_id: UUID, make: bool) -> _Kept:
        """The customer's key, opened (or made if ``make``) if need be."""
        kept = self._opened.get(customer_id)
        if kept is not None and kept.until > self._monotonic():
            return kept  # the common case, every sealed field: no list, no query
        if self._not_opened([customer_id]):
            if make:
                self.prepare([customer_id])
            else:
                self._keep(self.keys.wrapped([customer_id]))
        kept = self._opened.get(customer_id)
        if kept is None:
            raise PersonalDataKeyMissing(
                f"customer {customer_id} has sealed personal data but no key in this store"
            )
        return kept

    def _keep(self, found: Mapping[UUID, bytes | None]) -> None:
        """Keeps the stored rows ``found`` (a key of ours still pending for one of them is
        no longer: it is stored, or another process stored the customer's)."""
        until = self._until()
        for customer_id, wrapped in found.items():
            cipher = None if wrapped is None else aes(self._unwrap(wrapped))
            self._opened[customer_id] = _Kept(until, cipher, None)

    def _until(self) -> float:
        """When a key kept now runs out; the memory starts again once it holds too many
        (a save carrying a pending key forgotten so stores it all the same)."""
        if len(self._opened) > KEYS_KEPT:
            self._opened.clear()
        return self._monotonic() + self._ttl

    def _unwrap(self, wrapped: bytes) -> bytes:
        try:
            return self._master.decrypt(wrapped)
        except ValueError:
            raise PersonalDataKeyMismatch(
                "SUBLEDGER_PERSONAL_DATA_KEY does not open the personal data keys stored "
                "in this database: it is not the key they were made with"
            ) from None


class PersonalDataMapper(Mapper[UUID]):
    """eventsourcing's mapper, sealing personal fields before encoding and opening them
    after decoding; without ``personal_data`` (an in-memory ledger with no master key)
    it stores them as they are."""

    personal_data: PersonalData | None = None

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        personal = self.personal_data
        holder = _personal_fields(domain_event)
        if personal is None or holder is None:
            return super().to_stored_event(domain_event)
        customer_id = as_uuid(domain_event.originator_id)
        sealed = {**holder, **_changed(holder, lambda v: personal.seal(customer_id, v))}
        state = vars(domain_event)
        state = {**state, "state": sealed} if isinstance(domain_event, Snapshot) else sealed
        # A copy of the event holding the sealed values: the caller's event is unchanged.
        copy = object.__new__(type(domain_event))
        object.__setattr__(copy, "__dict__", state)
        return super().to_stored_event(copy)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        event = super().to_domain_event(stored_event)
        personal = self.personal_data
        if personal is not None and (holder := _personal_fields(event)) is not None:
            customer_id = as_uuid(stored_event.originator_id)
            # A decoded event is a fresh object: its state is ours to change.
            holder.update(_changed(holder, lambda v: personal.open(customer_id, v)))
        return event

    def to_domain_events(self, stored: list[StoredEvent]) -> list[Any]:
        """Decodes a page of stored events, opening the keys it needs in one query."""
        if self.personal_data is not None:
            self.personal_data.prefetch(stored)
        return [self.to_domain_event(s) for s in stored]


def _personal_fields(event: Any) -> dict[str, Any] | None:
    """The dict holding the event's personal fields (a customer snapshot's state, or the
    event's own attributes), if it has any."""
    if isinstance(event, SEALED_EVENTS):
        return vars(event)
    if isinstance(event, Snapshot) and event.topic == _CUSTOMER_TOPIC:
        state: dict[str, Any] = event.state
        return state
    return None


def _changed(holder: Mapping[str, Any], change: Callable[[str], str]) -> dict[str, str]:
    """``change`` applied to each personal field of ``holder`` that holds text (a phone
    may be None)."""
    return {f: change(v) for f in PERSONAL_FIELDS if isinstance(v := holder.get(f), str)}
