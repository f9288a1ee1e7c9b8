"""The audit export: stored events as JSON Lines, each with what an auditor needs to check
its chain hash with nothing but the file (docs/audit.md states the format and the recipe;
docs/verify_chain.py checks it).

One object per stored event, in sequence order, then one summary line. The chain is read
page by page, so an export of the whole ledger never holds more than a page in memory; a
one-customer export reads the whole chain too, since each line carries the hash of the row
before it in the whole sequence.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent

from commands.audit import chain_recorder
from commands.audit_replay import event_fields, event_type
from commands.integration_events import to_json
from ledger.application import Ledger
from ledger.chain import FIRST_POSITION, GENESIS, ChainRow

PAGE = 1000


@dataclass(frozen=True)
class ExportSummary:
    """The export's last line: how many events it holds, and the chain's head when it was
    read (a whole export's last event is the head)."""

    customer_id: UUID | None
    events: int
    head_position: int
    head_hash: bytes | None

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": {
                "customer_id": None if self.customer_id is None else str(self.customer_id),
                "events": self.events,
                "head_position": self.head_position,
                "head_hash": _hex(self.head_hash),
            }
        }


def chain_rows(ledger: Ledger, page: int = PAGE) -> Iterator[ChainRow]:
    """Every stored event with its chain hash, in sequence order, read ``page`` at a time."""
    recorder = chain_recorder(ledger)
    start = FIRST_POSITION
    while True:
        rows = recorder.select_chain(start, page)
        yield from rows
        if len(rows) < page:
            return
        start = rows[-1].position + 1


def _hex(chain_hash: bytes | None) -> str | None:
    return None if chain_hash is None else chain_hash.hex()


def export_line(ledger: Ledger, row: ChainRow, previous: bytes | None) -> dict[str, Any]:
    """One stored event as an export line."""
    stored = StoredEvent(
        originator_id=row.originator_id,
        originator_version=row.originator_version,
        topic=row.topic,
        state=row.state,
    )
    event = cast(Aggregate.Event, ledger.mapper.to_domain_event(stored))
    return {
        "position": row.position,
        "originator_id": str(row.originator_id),
        "originator_version": row.originator_version,
        "topic": row.topic,
        "account_id": None if row.account_id is None else str(row.account_id),
        "state": base64.b64encode(row.state).decode("ascii"),
        # None for a row stored without a hash, which no check can pass.
        "hash": _hex(row.chain_hash),
        "previous_hash": _hex(previous),
        "event": {
            "type": event_type(event),
            "timestamp": to_json(event.timestamp),
            "fields": event_fields(event),
        },
    }


def export(
    ledger: Ledger, out: IO[str], customer_id: UUID | None = None, page: int = PAGE
) -> ExportSummary:
    """Writes the events of ``customer_id``'s account (None: every stored event) to
    ``out`` as JSON Lines, then the summary line; returns the summary."""
    previous: bytes | None = GENESIS
    position, count = 0, 0
    for row in chain_rows(ledger, page):
        if customer_id is None or row.account_id == customer_id:
            out.write(json.dumps(export_line(ledger, row, previous)) + "\n")
            count += 1
        previous, position = row.chain_hash, row.position
    summary = ExportSummary(customer_id, count, position, previous)
    out.write(json.dumps(summary.as_json()) + "\n")
    return summary
