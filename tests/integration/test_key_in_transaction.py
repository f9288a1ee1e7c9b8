"""A new customer's personal data key is stored in the transaction of the events sealed
with it: a key is stored if and only if its events are, a key stored meanwhile by another
process fails the save (``IntegrityError``) and the retry seals with that key, and a
failed save leaves nothing half stored. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL, Identifier

from commands import schemas as s
from commands.bootstrap import bootstrap
from commands.dispatch import handle
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.customers import Customer
from ledger.key_store import PostgresKeyStore, SQLiteKeyStore
from ledger.personal_data import PersonalData
from ledger.postgres_recorder import LeanPostgresApplicationRecorder

AT = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def other(database_url: str) -> Iterator[Ledger]:
    """A second ledger process on the same database (its own connections, same key)."""
    with bootstrap(database_url) as ledger:
        yield ledger


def personal(ledger: Ledger) -> PersonalData:
    assert ledger.personal_data is not None
    return ledger.personal_data


def stored_key(ledger: Ledger, customer_id: UUID) -> dict[UUID, bytes | None]:
    return personal(ledger).keys.wrapped([customer_id])


def fail_on_separate_adds(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key stored in a transaction of its own (the key store's ``add``) fails the test."""

    def refused(*_: Any) -> set[UUID]:
        raise AssertionError("a key was stored outside the events' transaction")

    monkeypatch.setattr(type(personal(ledger).keys), "add", refused)


def test_a_new_customers_key_is_stored_with_their_events_in_one_transaction(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_on_separate_adds(ledger, monkeypatch)
    ann = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
    ledger.save(ann)

    assert stored_key(ledger, ann.id)[ann.id] is not None
    assert ledger.customer(ann.id).email == "ann@example.com"
    if isinstance(personal(ledger).keys, PostgresKeyStore):
        key_tx, events_tx = writing_transactions(ledger, ann.id)
        assert key_tx == events_tx


def writing_transactions(ledger: Ledger, customer_id: UUID) -> tuple[str, str]:
    """The ids of the PostgreSQL transactions that wrote the customer's key row and
    their first event (``xmin``)."""
    recorder = ledger.recorder
    assert isinstance(recorder, LeanPostgresApplicationRecorder)
    schema = Identifier(recorder.datastore.schema)
    statement = SQL(
        "SELECT (SELECT xmin::text FROM {0}.personal_keys WHERE customer_id = %s) AS k, "
        "(SELECT xmin::text FROM {0}.{1} WHERE originator_id = %s "
        "AND originator_version = 1) AS e"
    ).format(schema, Identifier(recorder.events_table_name))
    with recorder.datastore.get_connection() as conn:
        row = conn.execute(statement, (customer_id, customer_id)).fetchone()
    assert row is not None
    return row["k"], row["e"]


def test_a_failed_save_stores_neither_the_events_nor_the_new_key(ledger: Ledger) -> None:
    ann = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
    ledger.save(ann)
    stale = ledger.customer(ann.id)
    ann.change_contact("ann@example.org", "Ann", AT)
    ledger.save(ann)
    stale.change_contact("ann@example.net", "Ann", AT)
    bo = Customer.register(uuid4(), "bo@example.com", "Bo", "EUR", AT)

    # Bo's key goes in before the events, whose insert then fails on Ann's stale version.
    with pytest.raises(IntegrityError):
        ledger.save(bo, stale)

    assert stored_key(ledger, bo.id) == {}
    assert not ledger.exists(bo.id)
    # The unstored key was forgotten: registered again (a failed save consumed the
    # aggregate's events), Bo's events and a new key go in together.
    ledger.save(Customer.register(bo.id, "bo@example.com", "Bo", "EUR", AT))
    assert stored_key(ledger, bo.id)[bo.id] is not None
    assert ledger.customer(bo.id).email == "bo@example.com"


def test_a_crash_between_the_key_and_the_events_leaves_neither(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_: Any) -> list[bytes]:
        raise RuntimeError("the process dies while linking the events")

    monkeypatch.setattr(f"{type(ledger.recorder).__module__}.links", crash)
    bo = Customer.register(uuid4(), "bo@example.com", "Bo", "EUR", AT)
    with pytest.raises(RuntimeError):
        ledger.save(bo)
    monkeypatch.undo()

    assert stored_key(ledger, bo.id) == {}
    assert not ledger.exists(bo.id)


def test_a_key_stored_meanwhile_elsewhere_fails_the_save_and_the_retry_seals_with_it(
    ledger: Ledger, other: Ledger
) -> None:
    ann = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
    personal(other).seal(ann.id, "stored on its own")  # Ann's key, made elsewhere
    theirs = stored_key(other, ann.id)

    # A customer being registered is taken to have no key (no query): one is made here.
    with pytest.raises(IntegrityError):
        ledger.save(ann)
    assert not ledger.exists(ann.id)
    ledger.save(Customer.register(ann.id, "ann@example.com", "Ann", "EUR", AT))

    assert stored_key(ledger, ann.id) == theirs
    assert ledger.customer(ann.id).email == "ann@example.com"
    assert other.customer(ann.id).name == "Ann"  # sealed with the other process's key


def test_a_command_whose_key_conflicts_is_handled_again_with_the_stored_key(
    ledger: Ledger, other: Ledger, clock: SimulatedClock
) -> None:
    cid = uuid4()
    command = s.RegisterCustomer(
        command_id="k-1", customer_id=cid, email="c@example.com", name="C", currency="EUR"
    )
    personal(ledger).prepare([cid])  # this worker read no key for C, made one...
    personal(other).seal(cid, "C")  # ...when another process stored its own

    answer = handle(command, ledger, clock)

    assert answer["customer_id"] == str(cid)
    assert ledger.event_counts_by_type()["Customer.Registered"] == 1
    assert other.customer(cid).email == "c@example.com"  # sealed with the stored key


def test_adding_a_key_stores_it_once_and_refuses_another_or_a_destroyed_one(
    ledger: Ledger,
) -> None:
    keys = personal(ledger).keys
    assert isinstance(keys, PostgresKeyStore | SQLiteKeyStore)
    ann, bo = uuid4(), uuid4()
    assert keys.add({ann: b"k1", bo: b"k2"}) == {ann, bo}
    # Two saves of one process may carry the same pending key: both count as stored.
    assert keys.add({ann: b"k1"}) == {ann}
    assert keys.add({ann: b"k3", bo: b"k2"}) == {bo}
    keys.destroy(ann, AT)
    assert keys.add({ann: b"k1"}) == set()
    assert keys.wrapped([ann, bo]) == {ann: None, bo: b"k2"}
