"""Redis, then PostgreSQL, restarted in the middle of a stream of commands, under a
running node (``subledger serve``: bus worker, projections, billing clock, payment
processor, outbox). Nobody restarts the node: it reconnects by itself, and afterwards
every command has exactly one reply and one set of events, every customer was charged
once, the outbox published every stored event once and in order, and the projections
equal a clean rebuild.

Each test restarts a private server of its own (tests/reliability/servers.py); the other
server is the shared one."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from commands.bootstrap import bootstrap, prepare_storage, projection_database
from commands.settings import persistence_env
from commands.streams import Streams
from gateways.sandbox import SandboxGateway
from tests.integration.bus_driver import Service, environment, subledger_process
from tests.integration.test_bus import PLAN, PRICE, card, customer, signup
from tests.integration.test_outbox import published_ids, stored
from tests.integration.test_projections import assert_caught_up_as_a_rebuild, make_projector
from tests.reliability.servers import (
    REDIS_SERVER,
    PrivatePostgres,
    PrivateRedis,
    missing,
    postgres_unavailable,
)

# Each registers, adds a card and subscribes: with the plan and its price, 1,001 commands.
CUSTOMERS = 333
# The node's settings: ticks close together, small batches (many in flight when the
# server goes), and pending entries claimed soon after their worker lost them.
SETTINGS = {"serve_interval": "0.5", "bus_batch": "25", "bus_claim_idle_ms": "2000"}
ONE_PER_CUSTOMER = (
    "Customer.Registered",
    "Customer.PaymentMethodAdded",
    "Subscription.Started",
    "Invoice.Issued",
    "Invoice.PaymentRequested",
    "Invoice.PaymentSucceeded",
)
# Bounds on waits, per scale unit: far above what a run takes on a loaded machine.
SECONDS_PER_SCALE = 150.0


def commands_for(customers: int) -> list[dict[str, Any]]:
    commands = [PLAN, PRICE]
    for n in range(customers):
        commands += [customer(n), card(n), signup(n)]
    return commands


def send_all(service: Service, commands: list[dict[str, Any]]) -> None:
    """Adds the commands in one round trip, in order."""
    with service.client.pipeline(transaction=False) as pipe:
        for command in commands:
            data = json.dumps(command | {"reply_to": service.reply_to})
            pipe.xadd(service.streams.commands, {"data": data})
        pipe.execute()


def answered(service: Service) -> int:
    return int(service.client.xlen(service.reply_to))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.25)


@dataclass
class Node:
    """A ``subledger serve`` process, its stderr in ``log``."""

    process: subprocess.Popen[bytes]
    log: Path
    restarted_at: int = 0  # the log's size when the server was restarted

    def log_since(self, offset: int) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace")


@contextmanager
def running_node(
    database_url: str, redis_url: str, streams: Streams, folder: Path
) -> Iterator[Node]:
    """A node, stopped by SIGTERM at the end, which it must survive to exit cleanly.

    One node: a second worker would answer a customer's signup before another worker
    registered the customer (the bus orders nothing across workers)."""
    sandbox = str(folder / "sandbox.db")
    env = environment(database_url, redis_url, streams, sandbox_path=sandbox, **SETTINGS)
    env["COLUMNS"] = "1000"  # a tick's summary on one line of the log (rich wraps at 80)
    log = folder / "node.log"
    node = Node(subledger_process("serve", env, log), log)
    try:
        yield node
    finally:
        node.process.send_signal(signal.SIGTERM)
        try:
            code = node.process.wait(60)
        except subprocess.TimeoutExpired:
            node.process.kill()  # no process left behind on a shared machine
            raise
    assert code == 0, node.log_since(0)[-4000:]


def wait_until_settled(database_url: str, service: Service, customers: int, bound: float) -> None:
    """Until every customer is charged, and the outbox and every projection are at the
    head of the sequence."""
    with bootstrap(database_url) as ledger, make_projector(ledger, database_url) as runner:

        def settled() -> bool:
            if ledger.event_counts_by_type()["Invoice.PaymentSucceeded"] < customers:
                return False
            head = ledger.recorder.max_notification_id() or 0
            positions = {status.position for status in runner.status()}
            outbox = int(service.client.get(service.streams.outbox_position) or 0)
            return positions == {head} and outbox == head

        wait_for(settled, bound, "payments, outbox and projections at the head")


def stream_with_a_restart(
    node: Node,
    service: Service,
    commands: list[dict[str, Any]],
    restart: Callable[[], None],
    bound: float,
) -> None:
    """Sends half the commands, restarts the server once a tenth are answered (the rest
    of the half still in the worker's hands, even for a fast worker between two polls),
    then sends the other half."""
    half = len(commands) // 2
    send_all(service, commands[:half])
    wait_for(lambda: answered(service) >= half // 5, bound, "a tenth answered")
    node.restarted_at = node.log.stat().st_size
    restart()
    assert answered(service) < half, "the restart came after the first half was answered"
    send_all(service, commands[half:])
    wait_for(lambda: answered(service) >= len(commands), bound, "every reply")


def assert_nothing_lost_or_doubled(
    service: Service, commands: list[dict[str, Any]], database_url: str, sandbox: Path
) -> None:
    """Each command answered once, applied once, charged once; the outbox and the
    projections hold every stored event once."""
    customers = (len(commands) - 2) // 3
    replies = service.replies()
    assert sorted(r["command_id"] for r in replies) == sorted(c["command_id"] for c in commands)
    assert Counter(r["status"] for r in replies) == {"accepted": len(commands)}
    with bootstrap(database_url) as ledger:
        counts = ledger.event_counts_by_type()
        assert {event: counts[event] for event in ONE_PER_CUSTOMER} == dict.fromkeys(
            ONE_PER_CUSTOMER, customers
        )
        assert counts["CommandRecord.Handled"] == len(commands)
        assert counts["CommandRecord.Rejected"] == 0
        # Every stored event published once, in the order stored.
        assert published_ids(service.client, service.streams) == [i for _, i in stored(ledger)]
        assert_caught_up_as_a_rebuild(ledger, database_url)
    with SandboxGateway(str(sandbox)) as gateway:
        charges = gateway.charges()
    assert len({charge.key for charge in charges}) == len(charges) == customers
    assert {(charge.amount.amount, charge.outcome) for charge in charges} == {(1000, "succeeded")}


def assert_ticks_went_on(node: Node) -> None:
    """After the restart, whole ticks ran: the billing clock, payments and the outbox."""
    log = node.log_since(node.restarted_at)
    ticks = [line for line in log.splitlines() if "; payments: " in line]
    whole = ("due: ", "charged", "integration events published")
    assert any(all(part in line for part in whole) for line in ticks), ticks[-5:]


def scenario(
    database_url: str,
    redis_url: str,
    streams: Streams,
    customers: int,
    folder: Path,
    restart: Callable[[], None],
) -> Node:
    """The stream, with ``restart`` in its middle, under a node; checked
    once the node settled. Returns the node (stopped), for what its log says."""
    commands = commands_for(customers)
    service = Service(redis_url, streams)
    bound = SECONDS_PER_SCALE * customers / CUSTOMERS
    with running_node(database_url, redis_url, streams, folder) as node:
        stream_with_a_restart(node, service, commands, restart, bound)
        wait_until_settled(database_url, service, customers, bound)
    assert_nothing_lost_or_doubled(service, commands, database_url, folder / "sandbox.db")
    assert_ticks_went_on(node)
    return node


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if absent := missing(REDIS_SERVER):
        pytest.skip(f"needs {', '.join(absent)} for a private Redis the test can kill")
    server = PrivateRedis(tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop(kill=True)  # its files go with tmp_path: nothing to flush


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if reason := postgres_unavailable():
        pytest.skip(reason)
    server = PrivatePostgres()
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.postgres
@pytest.mark.parametrize("kill", [True, False], ids=["kill-9", "shutdown"])
def test_redis_restarted_mid_stream(
    kill: bool, private_redis: PrivateRedis, postgres_url: str, scale: int, tmp_path: Path
) -> None:
    """The bus's Redis killed (or shut down) with commands in the worker's hands and
    answers on their way: its append-only file keeps the stream, the group and what is
    pending; the node reads on, claims what lost its answer, and publishes on."""
    scenario(
        postgres_url,
        private_redis.url,
        Streams("restarts"),
        CUSTOMERS * scale,
        tmp_path,
        lambda: private_redis.restart(kill),
    )


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_postgres_restarted_mid_stream(
    mode: str,
    private_postgres: PrivatePostgres,
    redis_url: str,
    streams: Streams,
    scale: int,
    tmp_path: Path,
) -> None:
    """The ledger's PostgreSQL crashed (``immediate``: recovery from its log at start)
    or stopped (``fast``) mid-batch: the worker retries the batch until the store is
    back, and every connection of the node, pooled or not, is made again."""
    node = scenario(
        private_postgres.url,
        redis_url,
        streams,
        CUSTOMERS * scale,
        tmp_path,
        lambda: private_postgres.restart(mode),
    )
    # The restart did cut the node's connections: the proof that it was felt.
    assert "the billing clock failed this tick" in node.log_since(node.restarted_at)


def test_the_projections_connection_is_made_again_after_a_restart(
    private_postgres: PrivatePostgres,
) -> None:
    """What was in hand when the server went fails; the next use connects again, in the
    same schema and time zone."""
    env = persistence_env(f"{private_postgres.url}?schema=shop")
    prepare_storage(env)
    database = projection_database(env)
    try:
        with database.transaction() as tx:
            tx.execute("CREATE TABLE paid (at TIMESTAMPTZ NOT NULL)")
            tx.execute("INSERT INTO paid (at) VALUES (?)", ("2025-01-31T10:00:00+01:00",))
        private_postgres.restart("immediate")
        with pytest.raises(psycopg.OperationalError):
            database.query("SELECT at FROM paid")
        assert database.query("SELECT at FROM paid") == [(datetime(2025, 1, 31, 9, tzinfo=UTC),)]
        assert database.query("SHOW TIME ZONE") == [("UTC",)]
    finally:
        database.close()
