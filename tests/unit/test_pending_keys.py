"""A new customer's key is pending until the save of the events sealed with it stores it:
each save sealing with it carries it (``keys_to_store``), a save that succeeds confirms
it, and one that fails drops it. Without a save (an in-memory ledger), it is stored at
once."""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from ledger.key_store import MemoryKeyStore
from ledger.personal_data import PersonalData, keys_to_store


def test_a_new_key_goes_with_every_save_sealing_with_it_until_one_succeeds() -> None:
    keys = MemoryKeyStore()
    personal = PersonalData(bytes(32), keys)
    ann = uuid4()
    with personal.saving():
        sealed = personal.seal(ann, "Ann")
        carried = dict(keys_to_store())
        assert list(carried) == [ann]
        assert keys.rows == {}  # the recorder stores it, with the events
        keys.rows |= carried  # as the recorder does
    with personal.saving():
        personal.seal(ann, "Ann Lee")
        assert keys_to_store() == {}  # stored: no longer carried
    assert personal.open(ann, sealed) == "Ann"


def test_a_failed_save_drops_its_new_key_and_the_next_one_makes_another() -> None:
    keys = MemoryKeyStore()
    personal = PersonalData(bytes(32), keys)
    ann = uuid4()
    failed: dict[UUID, bytes] = {}

    def save_failing() -> None:
        with personal.saving():
            personal.seal(ann, "Ann")
            failed.update(keys_to_store())
            raise IntegrityError("the events conflicted")

    with pytest.raises(IntegrityError):
        save_failing()
    with personal.saving():
        personal.seal(ann, "Ann")
        again = dict(keys_to_store())
    assert list(again) == [ann]
    assert again[ann] != failed[ann]


def test_a_key_stored_meanwhile_by_another_process_replaces_the_pending_one() -> None:
    keys = MemoryKeyStore()
    ours, theirs = PersonalData(bytes(32), keys), PersonalData(bytes(32), keys)
    ann = uuid4()
    ours.prepare([ann])
    sealed = theirs.seal(ann, "Ann")  # no save under way: stored at once
    assert list(keys.rows) == [ann]
    # Our pending key cannot be stored any more: sealing with it alone fails, and forgets it.
    with pytest.raises(IntegrityError):
        ours.seal(ann, "Ann")
    assert ours.open(ann, sealed) == "Ann"
    with ours.saving():
        ours.seal(ann, "Ann")
        assert keys_to_store() == {}


def test_a_customer_being_registered_costs_no_key_read_until_a_save_of_theirs_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = MemoryKeyStore()
    personal = PersonalData(bytes(32), keys)
    reads: list[list[UUID]] = []
    read = keys.wrapped

    def counted(customer_ids: Collection[UUID]) -> dict[UUID, bytes | None]:
        reads.append(list(customer_ids))
        return read(customer_ids)

    monkeypatch.setattr(keys, "wrapped", counted)
    ann, bo = uuid4(), uuid4()

    personal.prepare([ann, bo], new=[ann])
    assert reads == [[bo]]

    def save_failing() -> None:
        with personal.saving():
            personal.seal(ann, "Ann")
            raise IntegrityError("a key was stored meanwhile")

    with pytest.raises(IntegrityError):
        save_failing()
    personal.prepare([ann], new=[ann])
    assert reads == [[bo], [ann]]  # met before: read, in case the failure was a conflict
