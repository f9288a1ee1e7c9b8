"""Aggregate ids as UUIDs: eventsourcing types an originator id as ``UUID | str``."""

from __future__ import annotations

from uuid import UUID


def as_uuid(value: UUID | str) -> UUID:
    """``value`` as a UUID, with no round trip through its text when it is one already
    (that round trip, on every event of a save, cost a twentieth of a batch's time)."""
    return value if isinstance(value, UUID) else UUID(value)


# How many ids each function deriving them (uuid5: slow Python) keeps: a batch's worth
# and more, as each is derived again within its batch.
IDS_KEPT = 4096
