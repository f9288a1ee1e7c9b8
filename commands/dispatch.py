"""Runs a command exactly once per command id, whatever the concurrency or restarts.

The handler's events and the command record are saved in one transaction; a refusal is
saved as a record of its own. A duplicate cannot commit (its record collides), so on a
conflict we look for the first record: found, its answer is given again (the result, or
the refusal raised anew); not found, the conflict was another writer on the same
aggregates and the command runs again on fresh state.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import IntegrityError

from commands.handlers import HANDLERS
from commands.schemas import Command
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.errors import CommandIdReused, DomainError, TooManyConflicts
from ledger.idempotency import CommandRecord, fingerprint

MAX_ATTEMPTS = 8


def handle(command: Command, ledger: Ledger, clock: Clock) -> dict[str, Any]:
    """Applies ``command`` (or recognises it as already answered) and returns its answer.

    A refusal by a business rule is recorded too, and raised again for the same id; a
    reference to something that does not exist (yet) is not, so a retry can succeed.
    """
    command_type = str(getattr(command, "type", type(command).__name__))
    digest = fingerprint(command_type, command.model_dump(mode="json", exclude={"command_id"}))
    handler = HANDLERS[type(command)]
    for _ in range(MAX_ATTEMPTS):
        now = clock.now()
        try:
            outcome = handler(command, ledger, now)
            record = CommandRecord.handled(
                command.command_id, command_type, digest, outcome.result, now
            )
            ledger.save(record, *outcome.changed)
            return outcome.result
        except IntegrityError:
            pass  # a duplicate, or a concurrent writer on the same aggregates: see below
        except DomainError as refusal:
            if refusal.final:
                try:
                    rejected = CommandRecord.rejected(
                        command.command_id, command_type, digest, refusal, now
                    )
                    ledger.save(rejected)
                except IntegrityError:
                    pass  # this command id was answered already: see below
                else:
                    raise
            elif ledger.command_record(command.command_id) is None:
                raise
        first = ledger.command_record(command.command_id)
        if first is not None:
            if first.fingerprint != digest:
                raise CommandIdReused(
                    f"command id {command.command_id!r} was already used for a different "
                    f"{first.command_type} command"
                )
            return first.answer()
    raise TooManyConflicts(
        f"command {command.command_id!r} conflicted {MAX_ATTEMPTS} times with concurrent writers"
    )
