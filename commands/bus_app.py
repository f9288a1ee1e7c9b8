"""The FastStream app of the bus: two subscribers on the commands stream, in the consumer
group ``subledger`` under this worker's consumer name; one reads new entries, a read's
worth at a time, the other claims (XAUTOCLAIM) entries that another worker left pending
past the idle timeout. The publishers are declared for the AsyncAPI document: replies,
rejections, dead letters and integration events are written as plain ``data`` entries
(by Lua scripts and the outbox), readable by any Redis client.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Literal

from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import FAKE_CONSUMER, BatchStreamMessage, RedisBatchStreamMessage
from faststream.specification import AsyncAPI
from pydantic import SkipValidation

from commands.bus import BusConfig, BusWorker, Entry
from commands.integration_events import IntegrationEvent
from commands.schemas import AnyCommand
from commands.streams import GROUP, Streams
from commands.wire import DeadLetter, RejectionRecord, Reply

TITLE = "subledger"
DESCRIPTION = (
    "Commands to an event-sourced subscription ledger over Redis Streams. Add an entry "
    "whose field `data` is the command's JSON to the commands stream; the reply is added to "
    "the command's `reply_to` stream, its field `data` holding the Reply's JSON."
)
if TYPE_CHECKING:
    Commands = list[Entry]  # what our decoder hands the handlers
else:
    # For the AsyncAPI document: the payload's schema. Validation is ours: garbage must be
    # answered too, not dropped by the framework.
    Commands = SkipValidation[list[AnyCommand]]
# How long shutdown waits for the batch in hand to be answered and acknowledged.
GRACEFUL_SECONDS = 30.0


async def _raw_entries(message: BatchStreamMessage, _: Any) -> RedisBatchStreamMessage:
    """The entries as read, undecoded: we read them ourselves, whatever they hold."""
    return RedisBatchStreamMessage(
        raw_message=message, body=b"", consumer=FAKE_CONSUMER, group=None
    )


async def _entries(message: RedisBatchStreamMessage, _: Any) -> list[Entry]:
    raw = message.raw_message
    return list(zip(raw["message_ids"], raw["data"], strict=True))


def _commands(
    config: BusConfig,
    polling_interval: int,
    max_records: int | None = None,
    min_idle_time: int | None = None,
) -> StreamSub[Literal[True]]:
    """The commands stream as this worker reads it: in the group, a batch at a time."""
    return StreamSub(
        config.streams.commands,
        group=GROUP,
        consumer=config.consumer,
        batch=True,
        polling_interval=polling_interval,
        max_records=max_records,
        min_idle_time=min_idle_time,
    )


def broker_for(config: BusConfig, url: str, worker: BusWorker | None) -> RedisBroker:
    """The broker with the worker's subscribers (``worker`` None: for the document only)."""
    # Each batch's "received / processed" at DEBUG: at INFO they flood the log (and cost).
    broker = RedisBroker(url, graceful_timeout=GRACEFUL_SECONDS, log_level=logging.DEBUG)
    streams = config.streams

    @broker.subscriber(
        stream=_commands(config, max_records=config.batch, polling_interval=1000),
        parser=_raw_entries,
        decoder=_entries,
        ack_policy=AckPolicy.MANUAL,
        title="commands",
        description="A command per entry, its JSON in the field `data`.",
    )
    async def take(entries: Commands) -> None:
        assert worker is not None
        await worker.take(entries)

    @broker.subscriber(
        stream=_commands(
            config,
            min_idle_time=config.claim_idle_ms,
            polling_interval=max(100, config.claim_idle_ms // 4),
        ),
        parser=_raw_entries,
        decoder=_entries,
        ack_policy=AckPolicy.MANUAL,
        include_in_schema=False,
    )
    async def reclaim(entries: Commands) -> None:
        assert worker is not None
        await worker.reclaim(entries)

    broker.publisher(
        "{reply_to}",
        title="replies",
        description="Each command's answer, added to the stream its `reply_to` names.",
        schema=Reply,
    )
    broker.publisher(
        streams.rejections,
        title="rejections",
        description="Every rejected entry, answered or not (the newest 100,000 or so).",
        schema=RejectionRecord,
    )
    broker.publisher(
        streams.events,
        title="integration events",
        description="Every stored event, and lifecycle signals, in order (docs/events.md); "
        "written by the outbox, never trimmed. De-duplicate by id.",
        schema=IntegrationEvent,
    )
    broker.publisher(
        streams.dead,
        title="dead letters",
        description="Entries left unanswered after too many deliveries; never trimmed. "
        "Fields: entry_id, deliveries, reason, and the entry's own (data).",
        schema=DeadLetter,
    )
    return broker


def asyncapi_document(streams: Streams | None = None) -> dict[str, Any]:
    """The AsyncAPI document of the bus, as docs/asyncapi.json holds it."""
    config = BusConfig(streams or Streams(), consumer="<worker>")
    broker = broker_for(config, "redis://localhost:6379", None)
    spec = AsyncAPI(broker, title=TITLE, description=DESCRIPTION, version="1.0.0")
    document: dict[str, Any] = json.loads(spec.to_specification().to_json())
    return document
