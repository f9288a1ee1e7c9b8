"""What a ledger holds, read for comparison with another: each aggregate's event history,
the commands in the order their records were stored, and a serial replay of those
commands."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from commands.bus import answer_directly
from commands.streams import Streams
from commands.wire import Reply
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.idempotency import CommandRecord

PAGE = 10_000
RECORD_TOPICS = [get_topic(CommandRecord.Handled), get_topic(CommandRecord.Rejected)]


def notifications(ledger: Ledger, topics: Sequence[str] = ()) -> Iterator[Notification]:
    """The stored event sequence (of ``topics`` only, if given), page by page."""
    start = 1
    while batch := ledger.recorder.select_notifications(start, PAGE, topics=topics):
        yield from batch
        start = batch[-1].id + 1


def histories(ledger: Ledger) -> dict[UUID, list[str]]:
    """Each aggregate's event types, in the order they were stored."""
    found: dict[UUID, list[str]] = {}
    for n in notifications(ledger):
        found.setdefault(UUID(str(n.originator_id)), []).append(n.topic.rpartition(":")[2])
    return found


def recorded_command_ids(ledger: Ledger) -> list[str]:
    """The id of every command record, in the order the records were stored: the order
    in which the ledger applied the commands (a batch's records in the batch's order)."""
    records = list(notifications(ledger, RECORD_TOPICS))
    return [event.command_id for event in ledger.decode(records)]  # type: ignore[attr-defined]


def replay(
    commands: Sequence[dict[str, Any]], ledger: Ledger, clock: Clock, streams: Streams
) -> dict[str, Reply]:
    """Each command answered on ``ledger`` one at a time, in this order, as
    ``subledger send --direct`` answers it: a clean serial execution."""
    return {
        c["command_id"]: answer_directly(json.dumps(c).encode(), ledger, clock, streams)
        for c in commands
    }


def outcome(reply: Reply) -> tuple[str, str | None]:
    """What a reply says happened: accepted, or rejected with which code."""
    return reply.status, reply.error.code if reply.error else None
