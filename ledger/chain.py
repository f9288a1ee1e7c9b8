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
from uuid import UUID

GENESIS = bytes(32)
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
