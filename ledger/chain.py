"""The audit chain: every stored event carries a SHA-256 hash over the hash of the event
before it (in the event sequence) and its own stored fields, so that an edited, deleted,
inserted or moved row breaks the chain at that row.

The recipe, which docs/audit.md states for auditors who check it with their own tools:

    link = SHA-256( previous link                       32 bytes (the first: 32 zero bytes)
                  || originator_id                      16 bytes, the UUID's bytes
                  || originator_version                 8 bytes, big-endian, signed
                  || len(topic)    || topic             4 bytes big-endian, then UTF-8
                  || account_id                         16 bytes (the customer's UUID; zeros
                                                        for events of no customer's account)
                  || len(state)    || state )           4 bytes big-endian, then the bytes
                                                        stored (sealed fields stay sealed)

The position (notification id) is not hashed: ids may have gaps (an insert that failed),
and the order of the rows by id is what the chain links.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from ledger.ids import as_uuid

GENESIS = bytes(32)
# Where a walk of the chain starts: below any position a row could be given by hand, so
# that none escapes the walk (the ledger itself numbers from 1).
FIRST_POSITION = -(2**63)
_NO_ACCOUNT = bytes(16)


def link(
    previous: bytes,
    originator_id: UUID,
    originator_version: int,
    topic: str,
    account_id: UUID | None,
    state: bytes,
) -> bytes:
    """The chain hash of an event stored after the event whose hash is ``previous``."""
    topic_bytes = topic.encode()
    digest = hashlib.sha256(previous)
    digest.update(originator_id.bytes)
    digest.update(originator_version.to_bytes(8, "big", signed=True))
    digest.update(len(topic_bytes).to_bytes(4, "big"))
    digest.update(topic_bytes)
    digest.update(account_id.bytes if account_id is not None else _NO_ACCOUNT)
    digest.update(len(state).to_bytes(4, "big"))
    digest.update(state)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One stored event as the chain covers it, with its position (notification id)."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    account_id: UUID | None
    state: bytes
    chain_hash: bytes | None  # None: a row stored without one (never by our recorders)
    # False when the stored fields are not in the one form the recorder writes (a UUID's
    # text in other case or with dashes): read back the same, yet not what was hashed.
    canonical: bool = True

    def follows(self, previous: bytes) -> bool:
        """Whether this row's hash is the link from ``previous`` over its fields."""
        return self.canonical and self.chain_hash == link(
            previous,
            self.originator_id,
            self.originator_version,
            self.topic,
            self.account_id,
            self.state,
        )


def links(
    previous: bytes, events: Sequence[StoredEvent], accounts: Sequence[UUID | None]
) -> list[bytes]:
    """The chain hashes of ``events`` (with their ``accounts``) stored in this order after
    the event whose hash is ``previous``."""
    hashes = []
    for event, account_id in zip(events, accounts, strict=True):
        previous = link(
            previous,
            as_uuid(event.originator_id),
            event.originator_version,
            event.topic,
            account_id,
            event.state,
        )
        hashes.append(previous)
    return hashes


class ChainRecorder(Protocol):
    """What both of the ledger's recorders offer the audit (verify, anchor, replay, export)."""

    def select_chain(self, start: int, limit: int) -> list[ChainRow]:
        """Up to ``limit`` rows from position ``start`` on, in order."""

    def select_head(self) -> tuple[ChainRow, int] | None:
        """The newest row and how many rows there are up to it (None: no events)."""

    def select_account(self, account_id: UUID) -> list[tuple[int, StoredEvent]]:
        """The events of an account (position, event), in sequence order."""
