"""A serial order that explains what concurrent workers did, rebuilt on a fresh ledger.

A command that changed an aggregate committed under a version check: the order of the
records of such commands is the order their changes took effect. A command that changed
nothing (a refusal, or a no-op such as cancelling what already cancels) checked no
version: it was decided on the state it read, and its record may have been stored after
a concurrent change it did not see. So the serial order keeps the writers in recorded
order and puts each of the others at a point of its round where, on the fresh ledger,
it changes nothing and gets the very reply it got (found by trying it unrecorded).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence

from commands.bus import answer_directly
from commands.handlers import HANDLERS
from commands.schemas import parse_command
from commands.streams import Streams
from commands.wire import Reply, accepted, refusal, rejected
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.errors import DomainError
from ledger.postgres_recorder import LeanPostgresApplicationRecorder
from projections.database import Database
from projections.values import read_int
from tests.reliability.ledger_checks import RECORD_TOPICS, notifications
from tests.reliability.producers import Command


def writers(ledger: Ledger, database: Database) -> set[str]:
    """Ids of the commands that changed something: whose record was stored in a
    transaction (PostgreSQL's ``xmin`` of the rows) with other events. Exact when each
    transaction holds one command (batches of one); a batch would count all its
    commands in."""
    recorder = ledger.recorder
    assert isinstance(recorder, LeanPostgresApplicationRecorder)
    records = list(notifications(ledger, RECORD_TOPICS))
    command_ids = {
        n.id: event.command_id  # type: ignore[attr-defined]
        for n, event in zip(records, ledger.decode(records), strict=True)
    }
    stored = defaultdict(list)
    for position, transaction in database.query(
        f"SELECT notification_id, xmin::text FROM {recorder.events_table_name}"
    ):
        stored[transaction].append(read_int(position))
    return {
        command_ids[n]
        for positions in stored.values()
        if not set(positions) <= command_ids.keys()
        for n in positions
        if n in command_ids
    }


def trial(command: Command, ledger: Ledger, clock: Clock) -> Reply | None:
    """The reply ``command`` would get now if it changed nothing (None if it would
    change something), recording nothing."""
    parsed = parse_command(json.dumps(command))
    try:
        outcome = HANDLERS[type(parsed)](parsed, ledger, clock.now())
    except DomainError as error:
        return rejected(parsed.command_id, refusal(error))
    if any(aggregate.pending_events for aggregate in outcome.changed):
        return None
    return accepted(parsed.command_id, outcome.result)


class SerialReplay:
    """Replays rounds of commands on ``ledger``, one command at a time."""

    def __init__(self, ledger: Ledger, clock: Clock, streams: Streams) -> None:
        self.ledger, self.clock, self.streams = ledger, clock, streams
        self.replies: dict[str, Reply] = {}

    def answer(self, command: Command) -> None:
        raw = json.dumps(command).encode()
        self.replies[command["command_id"]] = answer_directly(
            raw, self.ledger, self.clock, self.streams
        )

    def round(
        self,
        recorded: Sequence[Command],
        changed: set[str],
        expected: dict[str, Reply],
        subject: str,
    ) -> None:
        """One round's commands (as recorded): writers in this order, every other one
        where it gets the ``expected`` reply, among the commands on the same ``subject``
        (a field naming what they change: commands on different ones commute)."""
        floating = [c for c in recorded if c["command_id"] not in changed]
        for writer in [c for c in recorded if c["command_id"] in changed]:
            floating = self._place(floating, expected, subject, writer[subject])
            self.answer(writer)
        for left in {c[subject] for c in floating}:
            floating = self._place(floating, expected, subject, left)
        assert not floating, f"no point of the round gives these their reply: {floating}"

    def _place(
        self, floating: list[Command], expected: dict[str, Reply], subject: str, on: str
    ) -> list[Command]:
        """Answers those of ``floating`` on ``on`` that now get their expected reply and
        change nothing; returns the others."""
        left = []
        for command in floating:
            if (
                command[subject] == on
                and trial(command, self.ledger, self.clock) == expected[command["command_id"]]
            ):
                self.answer(command)
            else:
                left.append(command)
        return left
