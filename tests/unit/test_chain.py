"""The audit chain's recipe, as docs/audit.md states it, and the anchors auditors keep."""

from __future__ import annotations

import hashlib
import struct
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given
from hypothesis import strategies as st

from commands.audit import Anchor
from ledger.chain import GENESIS, ChainRow, link, links

ANN = UUID("0b0e5f7e-8a44-4c1e-9a51-3f0d0c1e2a01")
EVENT = UUID("6f1c2d3e-4b5a-4978-8c9d-0e1f2a3b4c5d")
TOPIC = "ledger.customers:Customer.Registered"
STATE = b'{"email":"ann@example.com"}'


def by_the_documented_recipe(
    previous: bytes,
    originator_id: UUID,
    version: int,
    topic: str,
    account: UUID | None,
    state: bytes,
) -> bytes:
    """The recipe written out again from docs/audit.md, field by field, with struct."""
    topic_bytes = topic.encode("utf-8")
    return hashlib.sha256(
        previous
        + originator_id.bytes
        + struct.pack(">q", version)
        + struct.pack(">I", len(topic_bytes))
        + topic_bytes
        + (account.bytes if account else b"\0" * 16)
        + struct.pack(">I", len(state))
        + state
    ).digest()


def test_the_first_link_follows_the_documented_recipe() -> None:
    first = link(GENESIS, EVENT, 1, TOPIC, ANN, STATE)
    assert GENESIS == b"\0" * 32
    assert first == by_the_documented_recipe(GENESIS, EVENT, 1, TOPIC, ANN, STATE)
    assert len(first) == 32
    second = link(first, EVENT, 2, TOPIC, None, b"")
    assert second == by_the_documented_recipe(first, EVENT, 2, TOPIC, None, b"")


@given(
    version=st.integers(-(2**63), 2**63 - 1),
    topic=st.text(max_size=40),
    state=st.binary(max_size=200),
    account=st.none() | st.uuids(),
)
def test_every_field_is_covered(
    version: int, topic: str, state: bytes, account: UUID | None
) -> None:
    hashed = link(GENESIS, EVENT, version, topic, account, state)
    assert hashed == by_the_documented_recipe(GENESIS, EVENT, version, topic, account, state)
    assert hashed != link(b"\1" * 32, EVENT, version, topic, account, state)
    assert hashed != link(GENESIS, ANN, version, topic, account, state)
    assert hashed != link(GENESIS, EVENT, version ^ 1, topic, account, state)
    assert hashed != link(GENESIS, EVENT, version, topic + "x", account, state)
    assert hashed != link(GENESIS, EVENT, version, topic, account, state + b"x")
    assert hashed != link(GENESIS, EVENT, version, topic, None if account else ANN, state)


def test_lengths_keep_topic_and_state_apart() -> None:
    """Moving bytes from the end of the topic to the start of the state changes the link."""
    assert link(GENESIS, EVENT, 1, "ab", None, b"c") != link(GENESIS, EVENT, 1, "a", None, b"bc")


def test_links_chain_events_in_order_and_rows_check_theirs() -> None:
    events = [StoredEvent(EVENT, v, TOPIC, STATE + bytes([v])) for v in (1, 2, 3)]
    accounts = [ANN, None, ANN]
    hashes = links(GENESIS, events, accounts)
    previous = GENESIS
    for event, account, hashed in zip(events, accounts, hashes, strict=True):
        assert hashed == link(
            previous, EVENT, event.originator_version, TOPIC, account, event.state
        )
        previous = hashed
    row = ChainRow(7, EVENT, 2, TOPIC, None, events[1].state, hashes[1])
    assert row.follows(hashes[0])
    assert not row.follows(GENESIS)
    assert not ChainRow(7, EVENT, 2, TOPIC, ANN, events[1].state, hashes[1]).follows(hashes[0])
    assert not ChainRow(7, EVENT, 2, TOPIC, None, events[1].state, None).follows(hashes[0])
    with pytest.raises(ValueError, match="zip"):
        links(GENESIS, events, accounts[:2])


def test_an_anchor_goes_to_json_and_back() -> None:
    anchor = Anchor(42, link(GENESIS, EVENT, 1, TOPIC, ANN, STATE).hex(), 40)
    assert Anchor.from_json(anchor.to_json()) == anchor
    for text in ("", "[]", "{}", '{"position": 1, "head": "zz", "count": 1}'):
        with pytest.raises(ValueError, match="not an anchor"):
            Anchor.from_json(text)
