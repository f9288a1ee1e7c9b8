"""Personal data is sealed with each customer's own key before it is stored, opened when
it is read, and unreadable for good once the key is destroyed (``ledger.personal_data``)."""

from __future__ import annotations

import os
import stat
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from commands import schemas as s
from commands.bootstrap import bootstrap, personal_data_key
from commands.dispatch import handle
from commands.integration_events import integration_event
from commands.settings import Settings, persistence_env
from ledger.application import PERSONAL_DATA_KEY, Ledger
from ledger.clock import SimulatedClock
from ledger.customers import ERASED, Customer, CustomerErased
from ledger.key_store import MemoryKeyStore
from ledger.personal_data import (
    PREFIX,
    PersonalData,
    PersonalDataKeyMismatch,
    PersonalDataKeyMissing,
)

AT = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
KEY = b64encode(bytes(range(32))).decode()


def memory_ledger() -> Ledger:
    return Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo", PERSONAL_DATA_KEY: KEY})


def register(ledger: Ledger, email: str = "ann@example.com", name: str = "Ann Lee") -> Customer:
    customer = Customer.register(uuid4(), email, name, "EUR", AT, phone="+442071234567")
    ledger.save(customer)
    return customer


def stored_states(ledger: Ledger, customer_id: UUID) -> bytes:
    events = ledger.recorder.select_events(customer_id)
    snapshots = ledger.snapshots.recorder.select_events(customer_id) if ledger.snapshots else []
    return b"".join(e.state for e in [*events, *snapshots])


def test_the_store_holds_contact_data_sealed_and_the_aggregate_reads_it_plain() -> None:
    ledger = memory_ledger()
    customer = register(ledger)
    customer.change_contact("ann.lee@example.org", "Ann B. Lee", AT)
    ledger.save(customer)
    ledger.take_snapshot(customer.id)

    stored = stored_states(ledger, customer.id)
    for plain in (b"ann@example.com", b"ann.lee@example.org", b"Ann Lee", b"Ann B. Lee", b"2071"):
        assert plain not in stored
    assert stored.count(PREFIX.encode()) == 3 + 3 + 3  # two events and a snapshot
    loaded = ledger.customer(customer.id)
    assert (loaded.email, loaded.name, loaded.phone) == (
        "ann.lee@example.org",
        "Ann B. Lee",
        "+442071234567",
    )
    # From the snapshot alone, as from the events.
    snapshot = ledger.snapshots.get(customer.id) if ledger.snapshots else None
    assert snapshot is not None
    assert [e.state["name"] for e in snapshot] == ["Ann B. Lee"]  # type: ignore[attr-defined]


def test_the_same_value_seals_differently_each_time_and_per_customer() -> None:
    ledger = memory_ledger()
    first, second = register(ledger), register(ledger)
    assert ledger.personal_data is not None
    sealed = {ledger.personal_data.seal(c.id, "ann@example.com") for c in (first, second, first)}
    assert len(sealed) == 3  # a fresh nonce every time: equal values are not linkable


def test_once_the_key_is_destroyed_the_contact_data_reads_as_erased_everywhere() -> None:
    ledger = memory_ledger()
    customer = register(ledger)
    other = register(ledger, "bob@example.com", "Bob")
    stored_before = stored_states(ledger, customer.id)
    assert ledger.personal_data is not None

    ledger.personal_data.forget(customer.id, AT)
    customer = ledger.customer(customer.id)
    customer.erase(AT)
    customer.erase(AT)  # once
    ledger.save(customer)

    loaded = ledger.customer(customer.id)
    assert (loaded.email, loaded.name, loaded.phone, loaded.erased) == (ERASED, ERASED, None, True)
    assert loaded.version == 2
    # The stored events are untouched: only the key went.
    assert stored_states(ledger, customer.id).startswith(stored_before)
    registered = ledger.mapper.to_domain_event(ledger.recorder.select_events(customer.id)[0])
    assert isinstance(registered, Customer.Registered)
    published = integration_event(registered, customer.id)["data"]
    assert (published["email"], published["name"], published["phone"]) == (ERASED,) * 3
    assert ledger.customer(other.id).email == "bob@example.com"
    with pytest.raises(CustomerErased):
        loaded.change_contact("ann@example.com", "Ann", AT)


def test_personal_data_given_after_the_erasure_is_not_kept() -> None:
    keys = MemoryKeyStore()
    personal = PersonalData(bytes(32), keys)
    customer_id = uuid4()
    personal.forget(customer_id, AT)
    assert personal.seal(customer_id, "ann@example.com") == ERASED
    assert keys.rows == {customer_id: None}  # no key made again


def test_another_process_stops_reading_an_erased_customer_when_its_copy_of_the_key_runs_out() -> (
    None
):
    now = [0.0]
    keys = MemoryKeyStore()
    worker = PersonalData(bytes(32), keys, ttl=60, monotonic=lambda: now[0])
    eraser = PersonalData(bytes(32), keys, ttl=60, monotonic=lambda: now[0])
    customer_id = uuid4()
    sealed = worker.seal(customer_id, "Ann Lee")

    eraser.forget(customer_id, AT)
    assert eraser.open(customer_id, sealed) == ERASED  # at once where it was erased
    now[0] = 59.0
    assert worker.open(customer_id, sealed) == "Ann Lee"  # its copy, for the TTL at most
    now[0] = 60.0
    assert worker.open(customer_id, sealed) == ERASED


def test_a_wrong_master_key_fails_loudly_at_start_not_silently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with bootstrap(url, Settings(personal_data_key=KEY)) as ledger:
        register(ledger)
    other = b64encode(os.urandom(32)).decode()
    with pytest.raises(PersonalDataKeyMismatch):
        bootstrap(url, Settings(personal_data_key=other))


def test_a_wrong_key_met_while_reading_fails_loudly_too() -> None:
    keys = MemoryKeyStore()
    customer_id = uuid4()
    sealed = PersonalData(bytes(32), keys).seal(customer_id, "Ann Lee")
    with pytest.raises(PersonalDataKeyMismatch):
        PersonalData(bytes(range(32)), keys).open(customer_id, sealed)


def test_sealed_data_whose_key_row_is_gone_fails_loudly() -> None:
    sealed = PersonalData(bytes(32), MemoryKeyStore()).seal(uuid4(), "Ann Lee")
    with pytest.raises(PersonalDataKeyMissing):
        PersonalData(bytes(32), MemoryKeyStore()).open(uuid4(), sealed)


def test_events_stored_before_sealing_existed_still_load(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(env=persistence_env(url)) as plain:  # no master key: stored as given
        assert plain.personal_data is None
        customer_id = register(plain).id
        assert b"ann@example.com" in stored_states(plain, customer_id)
    with bootstrap(url) as ledger:
        customer = ledger.customer(customer_id)
        assert (customer.email, customer.name) == ("ann@example.com", "Ann Lee")
        customer.change_contact("ann@example.org", "Ann Lee", AT)
        ledger.save(customer)
        assert b"ann@example.org" not in stored_states(ledger, customer_id)
        assert ledger.customer(customer_id).email == "ann@example.org"


def test_the_erase_command_is_idempotent_and_refuses_what_needs_contact_data(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(AT)
    with bootstrap(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        reply = handle(
            s.RegisterCustomer(command_id="r", email="ann@example.com", name="Ann", currency="EUR"),
            ledger,
            clock,
        )
        customer_id = UUID(reply["customer_id"])
        erase = s.EraseCustomer(command_id="e", customer_id=customer_id)
        assert handle(erase, ledger, clock) == {"customer_id": str(customer_id), "erased": True}
        assert handle(erase, ledger, clock) == {"customer_id": str(customer_id), "erased": True}
        again = s.EraseCustomer(command_id="e2", customer_id=customer_id)
        handle(again, ledger, clock)
        assert ledger.customer(customer_id).version == 2  # one Erased event
        change = s.ChangeCustomerContact(
            command_id="c", customer_id=customer_id, email="x@example.com", name="X"
        )
        with pytest.raises(CustomerErased):
            handle(change, ledger, clock)


def test_the_development_key_file_is_made_once_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    env = persistence_env(f"sqlite:///{tmp_path / 'ledger.db'}")
    key = personal_data_key(Settings(), env)
    path = tmp_path / "ledger.db.key"
    assert path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert personal_data_key(Settings(), env) == key
    assert personal_data_key(Settings(personal_data_key=KEY), env) == KEY


@pytest.mark.parametrize("bad", ["not base64!", b64encode(bytes(20)).decode()])
def test_a_master_key_that_is_no_aes_key_is_refused_by_the_settings(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(personal_data_key=bad)
