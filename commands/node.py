"""What a production node runs: the bus worker and, every ``serve_interval`` seconds, a
tick of the periodic work (projections, billing clock, payment processor, outbox).

SIGTERM or SIGINT stops it cleanly: the batch of commands in hand is answered and
acknowledged, the tick in hand finishes, then the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import redis
from faststream import FastStream
from redis.asyncio import Redis

from commands.billing_clock import BillingClock, TickReport
from commands.bootstrap import gateways
from commands.bus import BusWorker
from commands.bus_app import broker_for
from commands.outbox import OutboxPublisher
from commands.payments import PaymentProcessor, ProcessorReport
from commands.settings import Settings
from commands.streams import Streams
from ledger.clock import Clock
from projections.runner import Projector

log = logging.getLogger("subledger.node")


def consumer_name(settings: Settings) -> str:
    """This worker's name in the consumer group: one per process."""
    return settings.bus_consumer or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class TickSummary:
    due: TickReport
    payments: ProcessorReport
    published: int

    def line(self) -> str:
        due, paid = self.due, self.payments
        return (
            f"due: {due.subscriptions} subscriptions, {due.retries} retries, {due.gave_up} "
            f"given up; payments: {paid.charged} charged, {paid.declined} declined, "
            f"{paid.refunded} refunded; {self.published} integration events published"
        )


class Ticker:
    """The periodic work of a node, one tick at a time."""

    def __init__(self, projector: Projector, clock: Clock, settings: Settings) -> None:
        ledger = projector.ledger
        self.billing_clock = BillingClock(ledger, projector, clock)
        self.processor = PaymentProcessor(ledger, gateways(settings), projector.database, clock)
        client = redis.Redis.from_url(settings.redis_url)
        self.outbox = OutboxPublisher(ledger, client, clock, Streams(settings.bus_prefix))

    def tick(self) -> TickSummary:
        return TickSummary(self.billing_clock.tick(), self.processor.run(), self.outbox.run())


def run_node(
    projector: Projector,
    clock: Clock,
    settings: Settings,
    *,
    ticks: bool = True,
    on_tick: Callable[[TickSummary], None] = lambda _: None,
) -> None:
    """Runs the bus worker (and, with ``ticks``, the periodic work) until SIGTERM/SIGINT."""
    asyncio.run(_run(projector, clock, settings, ticks, on_tick))


async def _run(
    projector: Projector,
    clock: Clock,
    settings: Settings,
    ticks: bool,
    on_tick: Callable[[TickSummary], None],
) -> None:
    streams = Streams(settings.bus_prefix)
    client = Redis.from_url(settings.redis_url)
    worker = BusWorker(projector.ledger, clock, client, streams, settings.bus_max_deliveries)
    consumer = consumer_name(settings)
    batch, idle_ms = settings.bus_batch, settings.bus_claim_idle_ms
    broker = broker_for(worker, settings.redis_url, streams, consumer, batch, idle_ms)
    app = FastStream(broker)
    stopped = asyncio.Event()
    ticking: list[asyncio.Task[None]] = []

    async def tick_until_stopped() -> None:
        ticker = Ticker(projector, clock, settings)
        while not stopped.is_set():
            try:
                on_tick(await asyncio.to_thread(ticker.tick))
            except Exception:  # the next tick tries again; the node keeps serving
                log.exception("a tick failed")
            try:
                await asyncio.wait_for(stopped.wait(), settings.serve_interval)
            except TimeoutError:
                continue

    @app.after_startup
    async def start_ticking() -> None:
        if ticks:
            ticking.append(asyncio.create_task(tick_until_stopped()))

    @app.on_shutdown
    async def stop_work() -> None:
        worker.stopping = True
        stopped.set()
        await asyncio.gather(*ticking)

    try:
        await worker.ensure_group()
        await worker.recover(consumer, idle_ms, batch)
        await app.run()
    finally:
        await client.aclose()
