"""Audit of issue 7's personal data sealing and erasure: each test fails because of a bug
found (see the report); none edits the code under test."""

from __future__ import annotations

import json
import os
from base64 import b64encode
from pathlib import Path
from typing import cast
from uuid import UUID, uuid4

import pytest
import redis

from commands import schemas as s
from commands.bootstrap import bootstrap
from commands.dispatch import handle
from commands.settings import Settings
from commands.streams import Streams
from ledger.clock import SimulatedClock
from ledger.customers import ERASED, CustomerErased
from ledger.errors import InvalidCustomer
from ledger.personal_data import PersonalDataKeyMismatch
from tests.integration.bus_driver import Service, worker_thread

EMAIL, NAME = "annabel.quixote@example.com", "Annabel Quixote"


def sqlite_bytes(path: Path) -> bytes:
    """The SQLite database as an intruder with a copy reads it (file, WAL), not the key."""
    return b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*") if p.suffix != ".key")


def register(ledger, clock, command_id: str = "reg", email: str = EMAIL, name: str = NAME) -> UUID:  # type: ignore[no-untyped-def]
    reply = handle(
        s.RegisterCustomer(command_id=command_id, email=email, name=name, currency="EUR"),
        ledger,
        clock,
    )
    return UUID(reply["customer_id"])


# 1. Two processes with different master keys on one store: the second is accepted while
#    the store holds no live key yet, and each then wraps keys with its own master key.


@pytest.mark.postgres
def test_a_second_process_with_another_master_key_is_refused_even_on_a_new_store(
    postgres_url: str, clock: SimulatedClock
) -> None:
    one = b64encode(os.urandom(32)).decode()
    two = b64encode(os.urandom(32)).decode()
    with bootstrap(postgres_url, Settings(personal_data_key=one)) as first:
        # Before any customer: the check value pins the store to the first master key.
        with pytest.raises(PersonalDataKeyMismatch):
            bootstrap(postgres_url, Settings(personal_data_key=two))
        ann = register(first, clock, "reg-ann")
    with bootstrap(postgres_url, Settings(personal_data_key=one)) as again:
        assert again.customer(ann).email == EMAIL


@pytest.mark.postgres
def test_a_process_with_another_development_key_is_refused_and_one_setting_is_shared(
    postgres_url: str,
    clock: SimulatedClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes in two directories without SUBLEDGER_PERSONAL_DATA_KEY (each makes
    its own development key file): the second is refused at start, never left to wrap
    keys under a second master key; given the setting, both read the same data."""
    monkeypatch.delenv("SUBLEDGER_PERSONAL_DATA_KEY", raising=False)
    (tmp_path / "node").mkdir()
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "node")
    with bootstrap(postgres_url, Settings()) as node:
        ann = register(node, clock)
    monkeypatch.chdir(tmp_path / "worker")
    with pytest.raises(PersonalDataKeyMismatch):
        bootstrap(postgres_url, Settings())
    shared = (tmp_path / "node" / ".subledger" / "personal-data.key").read_text().strip()
    monkeypatch.setenv("SUBLEDGER_PERSONAL_DATA_KEY", shared)
    with bootstrap(postgres_url, Settings()) as worker:
        assert worker.customer(ann).email == EMAIL


# 2. A key file that is empty (a crash before its bytes reached the disk; a `touch`):
#    the ledger silently stops sealing and stores personal data in clear.


def test_an_empty_key_file_is_refused_not_taken_as_no_sealing(
    tmp_path: Path, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUBLEDGER_PERSONAL_DATA_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "ledger.db"
    (tmp_path / "ledger.db.key").write_text("")
    with pytest.raises(ValueError, match="holds no usable key"):
        bootstrap(f"sqlite:///{db}", Settings())


# 3. A refused contact change is recorded (CommandRecord.Rejected, in the event store,
#    unsealed) with the refusal's message, which quotes the email given.


def test_a_refused_contact_change_keeps_no_email_in_clear_in_the_store(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    db = tmp_path / "ledger.db"
    typo = "annabel quixote@example.com"
    with bootstrap(f"sqlite:///{db}") as ledger:
        ann = register(ledger, clock)
        change = s.ChangeCustomerContact(command_id="chg", customer_id=ann, email=typo, name=NAME)
        with pytest.raises(InvalidCustomer):
            handle(change, ledger, clock)
        handle(s.EraseCustomer(command_id="erase", customer_id=ann), ledger, clock)
        assert ledger.customer(ann).email == ERASED
    # The erased customer's email, as she typed it, is still in the event store in clear
    # (and in `audit export`'s readable `event` of that command record).
    assert typo.encode() not in sqlite_bytes(db)


# 4. The bus: the commands stream is never trimmed, and the rejections stream quotes each
#    refused payload; erasure touches neither, so an erased customer's email and name
#    stay in Redis (appendonly: on disk) for good.


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_after_erasure_the_bus_streams_hold_no_email_or_name_in_clear(
    tmp_path: Path,
    clock: SimulatedClock,
    redis_url: str,
    streams: Streams,
    client: redis.Redis,
) -> None:
    service = Service(redis_url, streams)
    with bootstrap(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        with worker_thread(ledger, clock, redis_url, streams):
            ann = str(uuid4())
            service.send(
                {
                    "type": "customer.register",
                    "command_id": "reg",
                    "customer_id": ann,
                    "email": EMAIL,
                    "name": NAME,
                    "currency": "EUR",
                }
            )
            # A second registration of her, refused (conflict): quoted in rejections.
            service.send(
                {
                    "type": "customer.register",
                    "command_id": "reg-again",
                    "customer_id": ann,
                    "email": EMAIL,
                    "name": NAME,
                    "currency": "EUR",
                }
            )
            service.send({"type": "customer.erase", "command_id": "erase", "customer_id": ann})
            replies = service.wait_for_replies(3)
            assert [r["status"] for r in replies] == ["accepted", "rejected", "accepted"]
            service.wait_until_none_pending()
        assert ledger.customer(UUID(ann)).name == ERASED

    kept = {
        stream: b"".join(
            json.dumps({k.decode(): v.decode() for k, v in fields.items()}).encode()
            for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream))
        )
        for stream in (streams.commands, streams.rejections, streams.dead)
    }
    leaks = {stream: EMAIL.encode() in text for stream, text in kept.items()}
    assert leaks == {streams.commands: False, streams.rejections: False, streams.dead: False}


# 5. A crash between the key's destruction and Customer.Erased (the window the docs
#    accept): the customer is not `erased`, so new contact data is accepted, answered
#    "accepted", and silently dropped (stored as "erased").


def test_between_key_destruction_and_the_erased_event_contact_changes_are_refused(
    tmp_path: Path, clock: SimulatedClock
) -> None:
    with bootstrap(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ann = register(ledger, clock)
        assert ledger.personal_data is not None
        ledger.personal_data.forget(ann, clock.now())  # then the worker died
        change = s.ChangeCustomerContact(
            command_id="chg", customer_id=ann, email="new@example.com", name="New Name"
        )
        with pytest.raises(CustomerErased):
            handle(change, ledger, clock)
