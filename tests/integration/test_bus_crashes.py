"""Workers die: killed outright mid-stream, or stopped by SIGTERM. Another worker
finishes the stream, and every command is answered once and applied once."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from commands.bootstrap import bootstrap
from commands.streams import Streams
from tests.integration.bus_driver import Service, worker_process
from tests.integration.test_bus import PLAN, PRICE, customer, signup

pytestmark = pytest.mark.postgres

CUSTOMERS = 999  # with the plan and its price: 2,000 commands


def stream_of_commands(service: Service) -> list[dict[str, Any]]:
    commands = [PLAN, PRICE]
    for n in range(CUSTOMERS):
        commands += [customer(n), signup(n)]
    with service.client.pipeline(transaction=False) as pipe:
        for command in commands:
            data = json.dumps(command | {"reply_to": service.reply_to})
            pipe.xadd(service.streams.commands, {"data": data})
        pipe.execute()
    return commands


def another_worker_finishes(
    service: Service,
    commands: list[dict[str, Any]],
    postgres_url: str,
    redis_url: str,
    log: Path,
    settings: dict[str, str],
) -> None:
    """A second worker finishes the stream: each command answered and applied once."""
    second = worker_process(postgres_url, redis_url, service.streams, log, **settings)
    try:
        assert_each_answered_and_applied_once(service, commands, postgres_url)
    finally:
        second.terminate()
        assert second.wait(30) == 0


def assert_each_answered_and_applied_once(
    service: Service, commands: list[dict[str, Any]], postgres_url: str
) -> None:
    replies = service.wait_for_replies(len(commands), timeout=120)
    service.wait_until_none_pending()
    assert len(replies) == len(commands)  # no reply twice
    assert [r["command_id"] for r in replies] == [c["command_id"] for c in commands]
    assert Counter(r["status"] for r in replies) == {"accepted": len(commands)}
    with bootstrap(postgres_url) as ledger:
        counts = ledger.event_counts_by_type()
    assert counts["Customer.Registered"] == CUSTOMERS
    assert counts["Subscription.Started"] == CUSTOMERS
    assert counts["CommandRecord.Handled"] == len(commands)
    assert counts["CommandRecord.Rejected"] == 0


def test_a_worker_killed_mid_stream_leaves_its_commands_to_another(
    postgres_url: str, redis_url: str, streams: Streams, tmp_path: Path
) -> None:
    service = Service(redis_url, streams)
    commands = stream_of_commands(service)
    settings = {"bus_batch": "50", "bus_claim_idle_ms": "1000"}
    first = worker_process(postgres_url, redis_url, streams, tmp_path / "worker.log", **settings)
    try:
        service.wait_for_replies(500, timeout=60)
    finally:
        first.kill()  # kill -9: in the middle of a batch, or between two
        first.wait()
    answered = service.client.xlen(service.reply_to)
    assert answered < len(commands)
    time.sleep(1.0)  # the idle timeout: the next worker claims them before new ones
    log = tmp_path / "worker.log"
    another_worker_finishes(service, commands, postgres_url, redis_url, log, settings)


def test_sigterm_finishes_the_batch_in_hand_then_exits(
    postgres_url: str, redis_url: str, streams: Streams, tmp_path: Path
) -> None:
    service = Service(redis_url, streams)
    commands = stream_of_commands(service)
    settings = {"bus_batch": "50", "bus_claim_idle_ms": "60000"}
    first = worker_process(postgres_url, redis_url, streams, tmp_path / "worker.log", **settings)
    service.wait_for_replies(500, timeout=60)
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    # Whatever it read, it answered and acknowledged: nothing waits for a claim.
    assert service.pending() == 0
    log = tmp_path / "worker.log"
    another_worker_finishes(service, commands, postgres_url, redis_url, log, settings)
