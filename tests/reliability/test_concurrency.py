"""Four bus workers answer at once conflicting commands on the same subscriptions:
upgrades, downgrades, pauses, resumptions, cancellations and their revocations, four
on each subscription in every burst, each taken by another worker.

Optimistic concurrency refuses all but one of the writes that race on a subscription;
the others are retried on fresh state. Afterwards: every command has exactly one reply;
replaying the commands one at a time, in the order the ledger recorded them, on a fresh
ledger gives the same replies, the same event histories and the same final
subscriptions and invoices (the outcome is that of a serial order); and no accepted
change is lost: each accepted pause, resumption and revocation is one event in its
subscription's history.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from threading import Lock
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from commands.accounts import derived_id
from commands.bootstrap import bootstrap, projection_database
from commands.settings import persistence_env
from commands.streams import Streams
from commands.wire import Reply
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.invoices import Invoice
from tests.integration.bus_driver import worker_thread
from tests.integration.test_bus import card, customer, signup
from tests.reliability.ledger_checks import histories, recorded_command_ids, replay
from tests.reliability.producers import Command, Producer, Rounds
from tests.reliability.serial_order import SerialReplay, writers
from tests.reliability.stories import CATALOG, CHANGES

pytestmark = pytest.mark.postgres

SUBSCRIPTIONS = 20
BURSTS = 20  # times --scale
WORKERS = 4
SEED = 9
# Past dispatch's own retries, a command still conflicting is answered on its next
# delivery, claimed after this idle time.
CLAIM_IDLE_MS = 2000
TIMEOUT = 120.0
# Changes that may race; a cancellation taking effect now would end the race early.
RACING = [kind for kind in CHANGES if kind != "cancel_now"]
# Accepted, these always record exactly this one event on the subscription.
ONE_EVENT = {"pause": "Paused", "resume": "Resumed", "revoke": "CancelRevoked"}


class ConflictCount:
    """Counts the version conflicts that a ledger's saves ran into (and raised on, for
    dispatch to retry)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = Lock()

    def watch(self, ledger: Ledger) -> Ledger:
        for name in ("save", "save_in_order"):
            setattr(ledger, name, self._counted(getattr(ledger, name)))
        return ledger

    def _counted(self, save: Callable[..., object]) -> Callable[..., object]:
        def counted(*args: Any, **kwargs: Any) -> object:
            try:
                return save(*args, **kwargs)
            except IntegrityError:
                with self._lock:
                    self.count += 1
                raise

        return counted


@contextmanager
def workers(
    database_url: str, clock: SimulatedClock, redis_url: str, streams: Streams
) -> Iterator[ConflictCount]:
    """``WORKERS`` bus workers, each a thread with a ledger (and connections) of its own,
    reading one entry at a time: a burst's four commands on a subscription go to four
    workers."""
    conflicts = ConflictCount()
    with ExitStack() as stack:
        for n in range(WORKERS):
            ledger = conflicts.watch(stack.enter_context(bootstrap(database_url)))
            stack.enter_context(
                worker_thread(
                    ledger,
                    clock,
                    redis_url,
                    streams,
                    consumer=f"worker-{n}",
                    batch=1,
                    claim_idle_ms=CLAIM_IDLE_MS,
                )
            )
        yield conflicts


def bursts(subscriptions: list[str], count: int, rng: random.Random) -> Rounds:
    """``count`` rounds of four random changes on each subscription, a subscription's
    four next to each other in the stream."""
    return [
        [
            CHANGES[kind][0](subscription) | {"command_id": f"{kind}-{n}-{burst}-{k}"}
            for n, subscription in enumerate(subscriptions)
            for k, kind in enumerate(rng.choices(RACING, k=WORKERS))
        ]
        for burst in range(count)
    ]


def final_states(ledger: Ledger, ids: list[UUID]) -> dict[UUID, Any]:
    """The subscriptions' and their invoices' current state."""
    states: dict[UUID, Any] = {i: ledger.subscription(i) for i in ids}
    states.update({i: ledger.invoice(i) for i in ledger.ids_of(Invoice)})
    return states


def test_racing_changes_end_as_a_serial_order_would(
    postgres_url: str,
    sqlite_url: str,
    redis_url: str,
    streams: Streams,
    clock: SimulatedClock,
    scale: int,
) -> None:
    signups = [[customer(n), card(n), signup(n)] for n in range(SUBSCRIPTIONS)]
    setup: list[Command] = [*CATALOG, *(c for pair in signups for c in pair)]
    subscriptions = [str(derived_id("subscription", f"signup-{n}")) for n in range(SUBSCRIPTIONS)]
    rounds = bursts(subscriptions, BURSTS * scale, random.Random(SEED))
    producer = Producer(redis_url, streams, "service")
    with bootstrap(postgres_url) as ledger:
        replay(setup, ledger, clock, streams)
        with workers(postgres_url, clock, redis_url, streams) as conflicts:
            producer.run(rounds, TIMEOUT)
        order = recorded_command_ids(ledger)
        with closing(projection_database(persistence_env(postgres_url))) as database:
            changed = writers(ledger, database)
        stored = histories(ledger)
        ids = [UUID(s) for s in subscriptions]
        states = final_states(ledger, ids)

    raced = {c["command_id"]: c for r in rounds for c in r}
    sent = {c["command_id"]: c for c in setup} | raced
    replies = [Reply.model_validate(r) for r in producer.replies()]
    assert Counter(r.command_id for r in replies) == dict.fromkeys(raced, 1)
    assert producer.pending() == 0
    assert conflicts.count > 0  # the writes did race
    assert sorted(order) == sorted(sent)

    answered = {str(r.command_id): r for r in replies}
    position = {command_id: n for n, command_id in enumerate(order)}
    with bootstrap(sqlite_url) as fresh:
        serial = SerialReplay(fresh, clock, streams)
        for command in setup:
            serial.answer(command)
        for burst in rounds:
            recorded = sorted(burst, key=lambda c: position[c["command_id"]])
            serial.round(recorded, changed, answered, subject="subscription_id")
        assert {i: serial.replies[i] for i in raced} == answered
        assert histories(fresh) == stored
        assert final_states(fresh, ids) == states

    # No lost update: each accepted pause, resumption and revocation is in the history.
    accepted = Counter(
        (raced[i]["subscription_id"], i.partition("-")[0])
        for i, r in answered.items()
        if r.status == "accepted"
    )
    for subscription in ids:
        events = Counter(stored[subscription])
        for kind, event in ONE_EVENT.items():
            assert events[f"Subscription.{event}"] == accepted[str(subscription), kind]
