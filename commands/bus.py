"""The bus worker: answers the entries of the commands stream that its consumer group hands
it, a read's worth at a time in one transaction, and acknowledges each only once it is
answered for good.

An entry is acknowledged, its reply added to its ``reply_to`` stream (and a rejection to
the rejections stream) in one Lua script that does so only if the acknowledgement took:
a command is answered exactly once even when two workers hold it (one claimed it from the
other after its idle timeout). A command left without an answer (its worker died, or an
error kept it from one) stays pending; another worker claims it after the idle timeout,
and, past the allowed number of deliveries, it goes to the dead-letter stream with the
last reason it failed. Redelivery is harmless: answers are idempotent by command id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from commands.dispatch import Answer, handle_batch
from commands.streams import GROUP, Streams
from commands.wire import (
    Incoming,
    RejectionRecord,
    Reply,
    ReplyError,
    accepted,
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

# KEYS: commands stream, rejections stream, failures hash, then the reply streams.
# ARGV: group, then per entry: id, index of its reply stream in KEYS (0: none), the reply,
# the rejection record ('' when accepted).
FINISH = """
local answered = 0
for i = 2, #ARGV, 4 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    answered = answered + 1
    local reply_to = tonumber(ARGV[i + 1])
    if reply_to > 0 then
      -- pcall: a reply_to naming a key that is no stream gets no reply, and spoils
      -- nothing for the other entries.
      redis.pcall('XADD', KEYS[reply_to], '*', 'data', ARGV[i + 2])
    end
    if ARGV[i + 3] ~= '' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[#ARGV], '*', 'data', ARGV[i + 3])
    end
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
return answered
"""
# KEYS: commands stream, dead-letter stream, failures hash. ARGV: group, id, deliveries,
# the reason when none was recorded, then the entry's own fields and values.
BURY = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local reason = redis.call('HGET', KEYS[3], ARGV[2]) or ARGV[4]
local entry = {}
for i = 5, #ARGV do
  entry[#entry + 1] = ARGV[i]
end
redis.call('XADD', KEYS[2], '*', 'entry_id', ARGV[2], 'deliveries', ARGV[3],
  'reason', reason, unpack(entry))
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
"""
# The store cannot be reached: not the commands' fault, so their batch waits for it.
UNREACHABLE = (OperationalError, InterfaceError, psycopg.OperationalError)


def _rejection_record(message: Incoming, error: ReplyError) -> str:
    raw = message.fields.get(b"data") or message.fields.get(b"__data__") or b""
    return RejectionRecord(
        entry_id=message.entry_id,
        command_id=message.command_id,
        reply_to=message.reply_to,
        error=error,
        received=raw[:QUOTED_BYTES].decode("utf-8", errors="replace"),
    ).model_dump_json()


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


class BusWorker:
    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        client: Redis,
        streams: Streams,
        max_deliveries: int,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.client = client
        self.streams = streams
        self.max_deliveries = max_deliveries
        self.stopping = False
        self._finish = client.register_script(FINISH)
        self._bury = client.register_script(BURY)

    async def ensure_group(self) -> None:
        """The consumer group, from the stream's start: commands added before any worker
        ever ran are read too (FastStream would start the group at the stream's end)."""
        try:
            await self.client.xgroup_create(self.streams.commands, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def recover(self, consumer: str, idle_ms: int, count: int) -> None:
        """Claims and answers, before anything new, what workers left pending for longer
        than ``idle_ms``: a worker restarted after a crash keeps its commands' order."""
        start: bytes | str = "0-0"
        while True:
            start, entries, *_ = await self.client.xautoclaim(
                self.streams.commands, GROUP, consumer, idle_ms, start_id=start, count=count
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
            deliveries = await self._deliveries(entry_id)
            if deliveries > self.max_deliveries:
                await self._bury_entry(entry_id, fields, deliveries)
            else:
                live.append(read_entry(entry_id, fields, self.streams))
        await self._answer(live)

    async def _answer(self, incoming: list[Incoming]) -> None:
        commands = [m.command for m in incoming if m.command is not None]
        answers = iter(await self._handle(commands) if commands else [])
        answered: list[tuple[Incoming, Reply]] = []
        failed: dict[str, str] = {}
        for message in incoming:
            reply = reply_for(message, next(answers) if message.command is not None else None)
            if isinstance(reply, Exception):
                failed[message.entry_id] = f"{type(reply).__name__}: {reply}"
                log.error("no answer yet to entry %s: %r", message.entry_id, reply)
            else:
                answered.append((message, reply))
        if failed:
            await self.client.hset(self.streams.failures, mapping=failed)  # type: ignore[arg-type]
        if answered:
            await self._finish_all(answered)

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
        arguments: list[str | int] = [GROUP]
        for message, reply in answered:
            reply_index = 0
            if message.reply_to is not None:
                if message.reply_to not in keys:
                    keys.append(message.reply_to)
                reply_index = keys.index(message.reply_to) + 1  # Lua counts from 1
            record = "" if reply.error is None else _rejection_record(message, reply.error)
            arguments += [message.entry_id, reply_index, reply.model_dump_json(), record]
        arguments.append(REJECTIONS_KEPT)
        await self._finish(keys=keys, args=arguments)

    async def _deliveries(self, entry_id: bytes) -> int:
        pending = await self.client.xpending_range(
            self.streams.commands, GROUP, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _bury_entry(self, entry_id: bytes, fields: dict[bytes, bytes], times: int) -> None:
        streams = self.streams
        reason = f"no answer after {times - 1} deliveries (the worker stopped or timed out)"
        flat = [part for pair in fields.items() for part in pair]
        keys = [streams.commands, streams.dead, streams.failures]
        if await self._bury(keys=keys, args=[GROUP, entry_id, times - 1, reason, *flat]):
            log.error("entry %s went to %s after %d deliveries", entry_id, streams.dead, times - 1)


def answer_directly(raw: bytes, ledger: Ledger, clock: Clock, streams: Streams) -> Reply:
    """The reply a worker would give to an entry holding ``raw``, handled in this process
    (``subledger send --direct``); an error that keeps it from an answer is raised."""
    message = read_entry(b"0-0", {b"data": raw}, streams)
    answer = handle_batch([message.command], ledger, clock)[0] if message.command else None
    reply = reply_for(message, answer)
    if isinstance(reply, Exception):
        raise reply
    return reply
