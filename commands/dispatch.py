"""Runs a command exactly once per command id, whatever the concurrency or restarts.

The handler's events and the command record are saved in one transaction; a refusal is
saved as a record of its own. A duplicate cannot commit (its record collides), so on a
conflict we look for the first record: found, its answer is given again (the result, or
the refusal raised anew); not found, the conflict was another writer on the same
aggregates and the command runs again on fresh state.

A batch of commands (what one read of the bus returns) is handled in one transaction:
each command sees what the earlier ones did, and one that fails leaves no trace (see
``ledger.staging``). Should the batch's save conflict, its commands run one by one.
Queries (``quote.preview``) record nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from commands.handlers import HANDLERS, prefetch
from commands.quotes import preview_quote
from commands.schemas import Command, PreviewQuote
from commands.webhook_handlers import REVEALED
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.errors import CommandIdReused, DomainError, TooManyConflicts
from ledger.idempotency import CommandRecord, command_record_id, fingerprint
from ledger.staging import Stage
from ledger.subscriptions import Subscription

MAX_ATTEMPTS = 8
QUERIES: dict[type[Command], Callable[[Any, Ledger, datetime], dict[str, Any]]] = {
    PreviewQuote: preview_quote,
}
# The store cannot be reached: no command's fault, so no command's answer.
UNREACHABLE = (OperationalError, InterfaceError, psycopg.OperationalError)
# What a command of a batch got: its result, a refusal (DomainError), or the error that
# kept it from an answer (to be retried later).
Answer = dict[str, Any] | Exception


def handle(command: Command, ledger: Ledger, clock: Clock) -> dict[str, Any]:
    """Applies ``command`` (or recognises it as already answered) and returns its answer.

    A refusal by a business rule is recorded too, and raised again for the same id; a
    reference to something that does not exist (yet) is not, so a retry can succeed.

    Handled as a batch of one, as the bus does: what it reads (its record included) is
    loaded in one query, not two per aggregate, and a conflict falls back to
    ``_handle_alone``.
    """
    (answer,) = handle_batch([command], ledger, clock)
    if isinstance(answer, Exception):
        raise answer
    return answer


def _handle_alone(command: Command, ledger: Ledger, clock: Clock) -> dict[str, Any]:
    """``handle`` without the stage: tried again on fresh state while it conflicts."""
    if (query := QUERIES.get(type(command))) is not None:
        return query(command, ledger, clock.now())
    command_type, digest = _identity(command)
    handler = HANDLERS[type(command)]
    for _ in range(MAX_ATTEMPTS):
        now = clock.now()
        try:
            outcome = handler(command, ledger, now)
            record = CommandRecord.handled(
                command.command_id, command_type, digest, outcome.result, now
            )
            ledger.save(record, *outcome.changed)
            return _revealed(command, outcome.result)
        except IntegrityError:
            pass  # a duplicate, or a concurrent writer on the same aggregates: see below
        except DomainError as refusal:
            if refusal.final:
                try:
                    ledger.save(_rejected(command, refusal, now))
                except IntegrityError:
                    pass  # this command id was answered already: see below
                else:
                    raise
            elif ledger.command_record(command.command_id) is None:
                raise
        first = ledger.command_record(command.command_id)
        if first is not None:
            return _revealed(command, _again(first, command))
    raise TooManyConflicts(
        f"command {command.command_id!r} conflicted {MAX_ATTEMPTS} times with concurrent writers"
    )


def handle_batch(commands: Sequence[Command], ledger: Ledger, clock: Clock) -> list[Answer]:
    """Answers each of ``commands``, in order, saving all their events in one transaction."""
    stage, records = _prefetched(commands, ledger)
    with ledger.staged(stage):
        answers = [_staged_answer(command, ledger, clock, stage, records) for command in commands]
    try:
        ledger.save_in_order(*stage.to_save())
    except IntegrityError:
        # A concurrent writer (another worker, the billing clock) got there first.
        return [_answer(command, ledger, clock) for command in commands]
    return answers


def _prefetched(
    commands: Sequence[Command], ledger: Ledger
) -> tuple[Stage, dict[str, CommandRecord]]:
    """A stage holding what the batch will read (its commands' records, what they name,
    and the customers of the subscriptions they name), loaded in bulk."""
    wanted = {command_record_id(c.command_id) for c in commands}
    wanted.update(i for command in commands for i in prefetch(command))
    loaded = ledger.load_many(wanted)
    owners = {a.customer_id for a in loaded.values() if isinstance(a, Subscription)}
    wanted |= owners
    loaded |= ledger.load_many(owners - set(loaded))
    records = {r.command_id: r for r in loaded.values() if isinstance(r, CommandRecord)}
    return Stage(ledger.repository.get, loaded, wanted - set(loaded)), records


def _staged_answer(
    command: Command,
    ledger: Ledger,
    clock: Clock,
    stage: Stage,
    records: dict[str, CommandRecord],
) -> Answer:
    """One command of a batch: applied to the stage, whose changes it keeps on success."""
    now = clock.now()
    first = records.get(command.command_id)
    try:
        if (query := QUERIES.get(type(command))) is not None:
            return query(command, ledger, now)  # recorded nowhere, whatever its id
        if first is not None:
            return _revealed(command, _again(first, command))
        command_type, digest = _identity(command)
        outcome = HANDLERS[type(command)](command, ledger, now)
        record = CommandRecord.handled(
            command.command_id, command_type, digest, outcome.result, now
        )
        stage.lead(record)
        stage.add(*outcome.changed)
        stage.keep()
        records[command.command_id] = record
        return _revealed(command, outcome.result)
    except DomainError as refusal:
        stage.drop()
        if refusal.final and first is None:
            rejected = _rejected(command, refusal, now)
            stage.add(rejected)
            stage.keep()
            records[command.command_id] = rejected
        return refusal
    except UNREACHABLE:
        raise  # the whole batch waits for the store
    except Exception as error:  # a bug: this command stays unanswered
        stage.drop()
        return error
    finally:
        stage.drop()  # what a query touched


def _answer(command: Command, ledger: Ledger, clock: Clock) -> Answer:
    try:
        return _handle_alone(command, ledger, clock)
    except UNREACHABLE:
        raise
    except Exception as error:  # as in a batch: a refusal, or no answer yet
        return error


def _identity(command: Command) -> tuple[str, str]:
    """The command's type and the fingerprint of what it asks (not of its envelope)."""
    command_type = str(getattr(command, "type", type(command).__name__))
    payload = command.model_dump(mode="json", exclude={"command_id", "reply_to"})
    return command_type, fingerprint(command_type, payload)


def _rejected(command: Command, refusal: DomainError, at: datetime) -> CommandRecord:
    command_type, digest = _identity(command)
    return CommandRecord.rejected(command.command_id, command_type, digest, refusal, at)


def _revealed(command: Command, result: dict[str, Any]) -> dict[str, Any]:
    """The answer as replied: the recorded one, plus what is derived anew for each reply
    and never recorded (a webhook endpoint's signing secret)."""
    reveal = REVEALED.get(type(command))
    return result if reveal is None else reveal(result)


def _again(first: CommandRecord, command: Command) -> dict[str, Any]:
    """The first answer to the command's id, if it was this same command."""
    if first.fingerprint != _identity(command)[1]:
        raise CommandIdReused(
            f"command id {command.command_id!r} was already used for a different "
            f"{first.command_type} command"
        )
    return first.answer()
