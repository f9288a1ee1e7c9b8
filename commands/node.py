"""What a production node runs: the bus worker and, every ``serve_interval`` seconds, a
tick of the periodic work (projections, billing clock, payment processor, outbox,
outbound webhooks).

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
from datetime import timedelta
from typing import TypeVar

import redis
from faststream import FastStream
from redis.asyncio import Redis

from commands.billing_clock import BillingClock, TickReport
from commands.bootstrap import gateways
from commands.bus import BusConfig, BusWorker, GroupLost
from commands.bus_app import broker_for
from commands.outbox import OutboxPublisher
from commands.payments import PaymentProcessor, ProcessorReport
from commands.settings import Settings
from commands.streams import Streams
from commands.suggestions import SuggestionPublisher
from commands.webhooks import WebhookReport, Webhooks
from ledger.clock import Clock
from projections.runner import Projector

log = logging.getLogger("subledger.node")
SUGGESTIONS_EVERY = timedelta(hours=1)
T = TypeVar("T")


def bus_config(settings: Settings) -> BusConfig:
    """The bus as settings describe it; this worker's name in the consumer group is one
    per process unless set."""
    return BusConfig(
        Streams(settings.bus_prefix),
        settings.bus_consumer or f"{socket.gethostname()}-{os.getpid()}",
        settings.bus_batch,
        settings.bus_claim_idle_ms,
        settings.bus_max_deliveries,
    )


@dataclass(frozen=True)
class TickSummary:
    """What each part of a tick did (None: it failed, see the log)."""

    due: TickReport | None
    payments: ProcessorReport | None
    published: int | None
    webhooks: WebhookReport | None
    suggestions: int | None

    def line(self) -> str:
        due, paid, published = self.due, self.payments, self.published
        return "; ".join(
            [
                "billing clock failed"
                if due is None
                else f"due: {due.subscriptions} subscriptions, {due.retries} retries, "
                f"{due.gave_up} given up",
                "payments failed"
                if paid is None
                else f"payments: {paid.charged} charged, {paid.declined} declined, "
                f"{paid.refunded} refunded",
                "outbox failed"
                if published is None
                else f"{published} integration events published",
                "webhooks failed" if self.webhooks is None else self.webhooks.line(),
                "suggestions failed"
                if self.suggestions is None
                else f"{self.suggestions} plan suggestions published",
            ]
        )


class Ticker:
    """The periodic work of a node, one tick at a time."""

    def __init__(self, projector: Projector, clock: Clock, settings: Settings) -> None:
        ledger = projector.ledger
        self.billing_clock = BillingClock(ledger, projector, clock)
        self.processor = PaymentProcessor(ledger, gateways(settings), projector.database, clock)
        client = redis.Redis.from_url(settings.redis_url)
        self.outbox = OutboxPublisher(ledger, client, clock, Streams(settings.bus_prefix))
        self.webhooks = Webhooks(
            ledger,
            projector.database,
            client,
            clock,
            Streams(settings.bus_prefix),
            settings.webhook_signing_key,
            settings.webhook_timeout,
        )
        self.clock = clock
        self.suggestions = SuggestionPublisher(
            projector, client, clock, Streams(settings.bus_prefix)
        )
        self.suggestions_due = clock.now()

    def tick(self) -> TickSummary:
        """One tick; a part that fails is logged and the others still run."""
        return TickSummary(
            _attempt("billing clock", self.billing_clock.tick),
            _attempt("payment processor", self.processor.run),
            _attempt("outbox", self.outbox.run),
            _attempt("webhooks", self.webhooks.run),
            _attempt("suggestions", self._suggest),
        )

    def _suggest(self) -> int:
        """Plan suggestions, at most once per ``SUGGESTIONS_EVERY``: they read every
        monthly subscription's invoices, and an hour's lateness changes no offer."""
        now = self.clock.now()
        if now < self.suggestions_due:
            return 0
        published = self.suggestions.run()
        self.suggestions_due = now + SUGGESTIONS_EVERY
        return published


def _attempt(part: str, work: Callable[[], T]) -> T | None:
    try:
        return work()
    except Exception:
        log.exception("the %s failed this tick", part)
        return None


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
    client = Redis.from_url(settings.redis_url)
    config = bus_config(settings)
    worker = BusWorker(projector.ledger, clock, client, config)
    broker = broker_for(config, settings.redis_url, worker)
    app = FastStream(broker)
    stopped = asyncio.Event()
    ticking: list[asyncio.Task[None]] = []

    async def tick_until_stopped() -> None:
        ticker = Ticker(projector, clock, settings)
        while not stopped.is_set():
            on_tick(await asyncio.to_thread(ticker.tick))
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
        await worker.recover()
        await app.run()
        # FastStream stops by itself (and exits 0) when the group is gone: fail instead,
        # so that a supervisor restarts the worker, which creates the group again.
        if not await worker.group_exists():
            raise GroupLost(f"the stream {config.streams.commands} or its group was lost")
    finally:
        await client.aclose()
