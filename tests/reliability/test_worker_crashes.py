"""The bus worker is killed with SIGKILL at random moments, and started again each time,
while three services stream commands at it: customers register, add cards, subscribe,
change plan, pause, resume and cancel. Meanwhile a projection runner follows the store.

Afterwards every command has exactly one reply entry and one command record; each
aggregate's event history is the one a clean serial replay of the same commands (in the
order the ledger recorded them, on a fresh ledger) produces, and so is each reply's
outcome; and the projections built bit by bit during the storm equal a rebuild from
scratch. On PostgreSQL, as several processes run in production.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from commands.bootstrap import bootstrap, projector
from commands.streams import Streams
from commands.wire import Reply
from ledger.application import Ledger
from ledger.clock import SystemClock
from projections.runner import Projector
from tests.integration.test_projections import assert_caught_up_as_a_rebuild
from tests.reliability.crashing_worker import CrashingWorker
from tests.reliability.ledger_checks import (
    RECORD_TOPICS,
    histories,
    notifications,
    outcome,
    recorded_command_ids,
    replay,
)
from tests.reliability.producers import Producer, Running
from tests.reliability.stories import CATALOG, workload

pytestmark = pytest.mark.postgres

COMMANDS = 5_000  # times --scale, after the catalog
KILLS = 20  # times --scale
PRODUCERS = 3
SEED = 9
# A restarted worker answers this many commands before the next kill: the kills spread
# over the stream, and each worker gets some work done.
PROGRESS_BETWEEN_KILLS = 20
# Each kill counts a delivery of the commands in hand: none may be dead-lettered for
# being in hand at several kills (burying is tested in tests/integration/test_bus.py).
SETTINGS = {"bus_batch": "50", "bus_claim_idle_ms": "1000", "bus_max_deliveries": "100"}
TIMEOUT = 120.0  # for any one round's replies, across restarts


@contextmanager
def following(runner: Projector) -> Iterator[None]:
    """``runner`` catching up over and over in a thread, as ``subledger serve`` ticks it,
    until the block ends; then once more."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def follow() -> None:
        while not stop.wait(0.1):
            try:
                runner.catch_up()
            except BaseException as error:
                failures.append(error)
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures
    runner.catch_up()


@dataclass
class Kills:
    made: int = 0
    # Commands stored but not yet answered when their worker died: each is answered
    # by the next worker from its record, not applied again.
    in_doubt: int = 0


def await_a_commit(ledger: Ledger) -> None:
    """Returns as soon as a transaction is stored (or after a while without one)."""
    head = ledger.recorder.max_notification_id()
    deadline = time.monotonic() + 10
    while ledger.recorder.max_notification_id() == head and time.monotonic() < deadline:
        continue


def kill_now_and_then(
    worker: CrashingWorker,
    ledger: Ledger,
    answered: Callable[[], int],
    running: Running,
    kills: int,
    total: int,
    rng: random.Random,
) -> Kills:
    """Kills the worker ``kills`` times, once so many commands were answered (random
    points of the stream); then at once, or as soon as a batch is stored (before its
    replies, if quick enough), or a few milliseconds later (anywhere in a batch).
    Restarts it at once each time."""
    points = sorted(rng.sample(range(total // 20, total * 9 // 10), kills))
    done = Kills()
    for point in points:
        enough = max(point, answered() + PROGRESS_BETWEEN_KILLS)
        while answered() < enough and running.alive():
            time.sleep(0.005)
        if not running.alive():
            break
        if rng.random() < 0.5:
            await_a_commit(ledger)
        else:
            time.sleep(rng.uniform(0, 0.05))
        worker.kill()
        done.in_doubt += sum(1 for _ in notifications(ledger, RECORD_TOPICS)) - answered()
        done.made += 1
        worker.start()
    return done


def test_killed_workers_lose_and_double_nothing(
    postgres_url: str,
    sqlite_url: str,
    redis_url: str,
    streams: Streams,
    tmp_path: Path,
    scale: int,
) -> None:
    total, kills = COMMANDS * scale, KILLS * scale
    rng = random.Random(SEED)
    work = workload(total, PRODUCERS, SEED)
    producers = [Producer(redis_url, streams, f"service-{p}") for p in range(PRODUCERS)]
    worker = CrashingWorker(
        postgres_url, redis_url, streams, tmp_path / "worker.log", rng, **SETTINGS
    )
    with bootstrap(postgres_url) as ledger, projector(ledger, postgres_url) as runner:
        try:
            worker.start()
            producers[0].run([CATALOG], TIMEOUT)
            with following(runner):
                running = Running(producers, work, TIMEOUT)
                kills_made = kill_now_and_then(
                    worker,
                    ledger,
                    lambda: sum(p.client.xlen(p.reply_to) for p in producers),
                    running,
                    kills,
                    total,
                    rng,
                )
                running.join()
        finally:
            worker.stop()
        assert kills_made.made == kills
        # Some kills fell between storing a batch and replying to it: the case that
        # would apply a command twice, were records not unique per command id.
        assert kills_made.in_doubt > 0
        # The tables built page by page as the events came (none of them empty) equal
        # those built at once.
        assert_caught_up_as_a_rebuild(ledger, postgres_url)
        order = recorded_command_ids(ledger)
        stored = histories(ledger)

    sent = {c["command_id"]: c for c in [*CATALOG, *(c for w in work for r in w for c in r)]}
    replies = [Reply.model_validate(r) for p in producers for r in p.replies()]
    # Exactly one reply entry per command: none missing, none twice.
    assert Counter(r.command_id for r in replies) == dict.fromkeys(sent, 1)
    service = producers[0]
    assert service.pending() == 0
    assert service.client.xlen(streams.dead) == 0

    # One record per command: each was applied once, whatever was redelivered.
    assert sorted(order) == sorted(sent)
    with bootstrap(sqlite_url) as fresh:
        again = replay([sent[i] for i in order], fresh, SystemClock(), streams)
        assert histories(fresh) == stored
    assert {r.command_id: outcome(r) for r in replies} == {i: outcome(r) for i, r in again.items()}
    # The stream was the mix it was meant to be, each kind of aggregate in the histories.
    kinds = Counter(topic.partition(".")[0] for h in stored.values() for topic in h[:1])
    assert kinds["Customer"] > total // 6
    assert kinds["Subscription"] > total // 6
    assert kinds["Invoice"] > total // 10
    assert Counter(outcome(r)[0] for r in replies)["rejected"] > 0
