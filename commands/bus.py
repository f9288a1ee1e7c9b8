"""The bus worker: answers the entries of the commands stream that its consumer group hands
it, a read's worth at a time in one transaction, and acknowledges each only once it is
answered for good.

An entry is acknowledged, its reply added to its ``reply_to`` stream (and a rejection to
the rejections stream) in one Lua script that does so only if the acknowledgement took:
a command is answered exactly once even when two workers hold it. While a batch is in
hand its entries are claimed again every third of the idle timeout (without counting a
delivery), so that no other worker, nor this one's own claims, takes them meanwhile. A
command left without an answer (its worker died, or an error kept it from one) stays
pending; another worker claims it after the idle timeout, and, past the allowed number
of deliveries, it goes to the dead-letter stream with the last reason it failed.
Redelivery is harmless: answers are idempotent by command id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from commands.dispatch import UNREACHABLE, Answer, handle_batch
from commands.streams import GROUP, Streams
from commands.wire import (
    Incoming,
    RejectionRecord,
    Reply,
    ReplyError,
    accepted,
    payload,
    read_entry,
    refusal,
    rejected,
)
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.errors import DomainError

log = logging.getLogger("subledger.bus")

Entry = tuple[bytes, dict[bytes, bytes]]
# Rejections kept for inspection: roughly the newest this many.
REJECTIONS_KEPT = 100_000
# How much of a rejected entry's payload its rejection record quotes.
QUOTED_BYTES = 1024
# A personal field and its string value, to its closing quote or the end of the quote.
_PERSONAL_FIELD = re.compile(rb'("(?:email|phone|name)"\s*:\s*)"(?:[^"\\]|\\.)*(?:"|$)')
# A consumer of the group with nothing pending, silent this long, is a worker gone for
# good (one per process by default): it is removed from the group.
CONSUMER_FORGOTTEN_MS = 24 * 3600 * 1000

# KEYS: commands stream, rejections stream, failures hash, then the reply streams.
# ARGV: group, how many rejections to keep, then per entry: id, index of its reply
# stream in KEYS (0: none), the reply, the rejection record ('' when accepted).
FINISH = """
local answered = 0
for i = 3, #ARGV, 4 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    -- Answered: the entry (a customer's contact data, maybe) is not kept in Redis.
    redis.call('XDEL', KEYS[1], ARGV[i])
    answered = answered + 1
    local reply_to = tonumber(ARGV[i + 1])
    if reply_to > 0 then
      -- pcall: a reply_to naming a key that is no stream gets no reply, and spoils
      -- nothing for the other entries.
      redis.pcall('XADD', KEYS[reply_to], '*', 'data', ARGV[i + 2])
    end
    if ARGV[i + 3] ~= '' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[i + 3])
    end
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
return answered
"""
# KEYS: commands stream, dead-letter stream, failures hash. ARGV: group, id, deliveries,
# the reason when none was recorded, the command's JSON, the entry's fields as JSON.
BURY = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local reason = redis.call('HGET', KEYS[3], ARGV[2]) or ARGV[4]
redis.call('XADD', KEYS[2], '*', 'entry_id', ARGV[2], 'deliveries', ARGV[3],
  'reason', reason, 'data', ARGV[5], 'fields', ARGV[6])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class BusConfig:
    """Where a worker reads, under which name, and its limits (see Settings)."""

    streams: Streams
    consumer: str
    batch: int = 200
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5


def reply_for(message: Incoming, answer: Answer | None) -> Reply | Exception:
    """The reply to a message given its command's answer (None: it carried no command),
    or the error that kept it from one."""
    if message.rejection is not None:
        return rejected(message.command_id, message.rejection)
    if isinstance(answer, DomainError):
        return rejected(message.command_id, refusal(answer))
    if isinstance(answer, Exception):
        return answer
    assert answer is not None
    return accepted(message.command_id, answer)


class GroupLost(Exception):
    """The commands stream or its group vanished (deleted, or Redis lost its data)."""


class BusWorker:
    def __init__(self, ledger: Ledger, clock: Clock, client: Redis, config: BusConfig) -> None:
        self.ledger = ledger
        self.clock = clock
        self.client = client
        self.config = config
        self.streams = config.streams
        self.stopping = False
        # Entries being answered: never claimed from ourselves, never buried.
        self._in_hand: set[bytes] = set()
        self._finish = client.register_script(FINISH)
        self._bury = client.register_script(BURY)

    async def ensure_group(self) -> None:
        """The consumer group, from the stream's start: commands added before any worker
        ever ran are read too (FastStream would start the group at the stream's end).
        Consumers long gone, with nothing pending, are forgotten."""
        try:
            await self.client.xgroup_create(self.streams.commands, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        for consumer in await self.client.xinfo_consumers(self.streams.commands, GROUP):
            if not consumer["pending"] and consumer["idle"] > CONSUMER_FORGOTTEN_MS:
                await self.client.xgroup_delconsumer(self.streams.commands, GROUP, consumer["name"])

    async def group_exists(self) -> bool:
        try:
            groups = await self.client.xinfo_groups(self.streams.commands)
        except ResponseError:  # no such stream
            return False
        return any(g["name"] in (GROUP, GROUP.encode()) for g in groups)

    async def recover(self) -> None:
        """Answers, before anything new, what this consumer held when it stopped (a
        restarted worker with a stable name keeps its commands' order), then what other
        workers left pending for longer than the idle timeout."""
        config = self.config
        own = cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]],
            await self.client.xreadgroup(GROUP, config.consumer, {self.streams.commands: "0"}),
        )
        for _, entries in own or []:
            # A deleted entry comes back without fields: it is answered as garbage.
            held = [(entry_id, fields or {}) for entry_id, fields in entries]
            for page in _pages(held, config.batch):
                await self.reclaim(page)
        start: bytes | str = "0-0"
        while True:
            start, entries, *_ = await self.client.xautoclaim(
                self.streams.commands,
                GROUP,
                config.consumer,
                config.claim_idle_ms,
                start_id=start,
                count=config.batch,
            )
            if entries:
                await self.reclaim(entries)
            if start == b"0-0":
                return

    async def take(self, entries: Sequence[Entry]) -> None:
        """Entries read for the first time."""
        await self._answer([read_entry(i, f, self.streams) for i, f in entries])

    async def reclaim(self, entries: Sequence[Entry]) -> None:
        """Entries claimed from a worker that left them unanswered: answered again, or
        buried once they have been delivered too often."""
        live = []
        for entry_id, fields in entries:
            if entry_id in self._in_hand:
                continue  # our own batch, waiting for the store: not abandoned
            deliveries = await self._deliveries(entry_id)
            if deliveries > self.config.max_deliveries:
                await self._bury_entry(entry_id, fields, deliveries)
            else:
                live.append(read_entry(entry_id, fields, self.streams))
        await self._answer(live)

    async def _answer(self, incoming: list[Incoming]) -> None:
        if not incoming:
            return
        commands = [m.command for m in incoming if m.command is not None]
        async with self._holding([m.entry_id.encode() for m in incoming]):
            answers = iter(await self._handle(commands) if commands else [])
            answered: list[tuple[Incoming, Reply]] = []
            failed: dict[str, str] = {}
            for message in incoming:
                answer = next(answers) if message.command is not None else None
                reply = reply_for(message, answer)
                if isinstance(reply, Exception):
                    failed[message.entry_id] = f"{type(reply).__name__}: {reply}"
                    log.error("no answer yet to entry %s: %r", message.entry_id, reply)
                else:
                    answered.append((message, reply))
            if failed:
                await self.client.hset(self.streams.failures, mapping=failed)  # type: ignore[arg-type]
            if answered:
                await self._finish_all(answered)

    @asynccontextmanager
    async def _holding(self, ids: list[bytes]) -> AsyncIterator[None]:
        """Keeps ``ids`` ours while they are answered: claimed again (JUSTID: no delivery
        counted) every third of the idle timeout, so none looks abandoned."""
        self._in_hand.update(ids)
        claimed = cast(list[bytes | str | int | memoryview], ids)
        done = asyncio.Event()

        async def hold() -> None:
            # Stopped by the event, not cancelled: a redis call cancelled half-way can
            # swallow the cancellation, and awaiting the task would then never end.
            while not done.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), self.config.claim_idle_ms / 3000)
                    return
                await self.client.xclaim(
                    self.streams.commands, GROUP, self.config.consumer, 0, claimed, justid=True
                )

        holder = asyncio.create_task(hold())
        try:
            yield
        finally:
            done.set()
            await holder
            self._in_hand.difference_update(ids)

    async def _handle(self, commands: list[Any]) -> list[Answer]:
        """The batch's answers, waiting for the store to come back if it is unreachable."""
        delay = 0.1
        while True:
            try:
                return await asyncio.to_thread(handle_batch, commands, self.ledger, self.clock)
            except UNREACHABLE as error:
                if self.stopping:
                    return [error] * len(commands)
                log.warning("the store is unreachable (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as error:  # a bug in saving: each waits for a claim on its own
                log.exception("a batch of %d commands failed", len(commands))
                return [error] * len(commands)

    async def _finish_all(self, answered: list[tuple[Incoming, Reply]]) -> None:
        streams = self.streams
        keys = [streams.commands, streams.rejections, streams.failures]
        arguments: list[str | int] = [GROUP, REJECTIONS_KEPT]
        for message, reply in answered:
            reply_index = 0
            if message.reply_to is not None:
                if message.reply_to not in keys:
                    keys.append(message.reply_to)
                reply_index = keys.index(message.reply_to) + 1  # Lua counts from 1
            record = "" if reply.error is None else _rejection_record(message, reply.error)
            arguments += [message.entry_id, reply_index, reply.model_dump_json(), record]
        await self._finish(keys=keys, args=arguments)

    async def _deliveries(self, entry_id: bytes) -> int:
        pending = await self.client.xpending_range(
            self.streams.commands, GROUP, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _bury_entry(self, entry_id: bytes, fields: dict[bytes, bytes], times: int) -> None:
        streams = self.streams
        reason = f"no answer after {times - 1} deliveries (the worker stopped or timed out)"
        keys = [streams.commands, streams.dead, streams.failures]
        command = (payload(fields) or b"").decode("utf-8", errors="replace")
        original = json.dumps(
            {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        )
        if await self._bury(
            keys=keys, args=[GROUP, entry_id, times - 1, reason, command, original]
        ):
            log.error("entry %s went to %s after %d deliveries", entry_id, streams.dead, times - 1)


def _pages(entries: list[Entry], size: int) -> list[list[Entry]]:
    return [entries[i : i + size] for i in range(0, len(entries), size)]


def _rejection_record(message: Incoming, error: ReplyError) -> str:
    raw = message.fields.get(b"data") or message.fields.get(b"__data__") or b""
    return RejectionRecord(
        entry_id=message.entry_id,
        command_id=message.command_id,
        reply_to=message.reply_to,
        error=error,
        received=quote_rejected(raw).decode("utf-8", errors="replace"),
    ).model_dump_json()


def quote_rejected(raw: bytes) -> bytes:
    """A rejected command's first bytes as quoted for operators, without the personal data
    they may carry (kept for months in the rejections stream, out of erasure's reach): the
    value of every ``email``, ``phone`` and ``name`` field, cut short or not, replaced.
    Textually, so that an entry refused unread (too large) is not parsed for it."""
    return _PERSONAL_FIELD.sub(rb'\1"redacted"', raw[:QUOTED_BYTES])


def answer_directly(raw: bytes, ledger: Ledger, clock: Clock, streams: Streams) -> Reply:
    """The reply a worker would give to an entry holding ``raw``, handled in this process
    (``subledger send --direct``); an error that keeps it from an answer is raised."""
    message = read_entry(b"0-0", {b"data": raw}, streams)
    answer = handle_batch([message.command], ledger, clock)[0] if message.command else None
    reply = reply_for(message, answer)
    if isinstance(reply, Exception):
        raise reply
    return reply
