"""A service's view of the bus for tests: plain redis-py XADD of commands, XREAD of
replies; and bus workers, in a thread of this process or as ``subledger worker``
processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import redis
from redis.asyncio import Redis

from commands.bus import BusConfig, BusWorker
from commands.bus_app import broker_for
from commands.streams import GROUP, Streams
from ledger.application import Ledger
from ledger.clock import Clock


class Service:
    """Sends commands as any Redis client would, and reads the replies."""

    def __init__(self, redis_url: str, streams: Streams) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.streams = streams
        self.reply_to = f"{streams.prefix}-replies"

    def send(self, command: dict[str, Any], reply: bool = True) -> bytes:
        data = command | {"reply_to": self.reply_to} if reply else command
        return self.add({b"data": json.dumps(data).encode()})

    def add(self, fields: dict[bytes, bytes]) -> bytes:
        return cast(bytes, self.client.xadd(self.streams.commands, fields))  # type: ignore[arg-type]

    def replies(self, stream: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(fields[b"data"]) for fields in self.entries(stream or self.reply_to)]

    def wait_for_replies(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while self.client.xlen(self.reply_to) < count:
            assert time.monotonic() < deadline, f"{self.client.xlen(self.reply_to)} of {count}"
            time.sleep(0.02)
        return self.replies()

    def entries(self, stream: str) -> list[dict[bytes, bytes]]:
        read = cast(list[tuple[bytes, dict[bytes, bytes]]], self.client.xrange(stream))
        return [fields for _, fields in read]

    def pending(self) -> int:
        summary = self.client.xpending(self.streams.commands, GROUP)
        return int(summary["pending"])

    def wait_until_none_pending(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending():
            assert time.monotonic() < deadline, f"{self.pending()} entries still pending"
            time.sleep(0.02)


@contextmanager
def worker_thread(
    ledger: Ledger,
    clock: Clock,
    redis_url: str,
    streams: Streams,
    consumer: str = "test-worker",
    batch: int = 200,
    claim_idle_ms: int = 60_000,
    max_deliveries: int = 5,
) -> Iterator[None]:
    """A bus worker running in a thread of its own (with its own event loop)."""
    started, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        client = Redis.from_url(redis_url)
        config = BusConfig(streams, consumer, batch, claim_idle_ms, max_deliveries)
        worker = BusWorker(ledger, clock, client, config)
        broker = broker_for(config, redis_url, worker)
        await worker.ensure_group()
        await worker.recover()
        async with broker:
            await broker.start()
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
        await client.aclose()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:
            failure.append(error)
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    assert not failure, failure
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not failure, failure


def environment(
    database_url: str, redis_url: str, streams: Streams, **settings: str
) -> dict[str, str]:
    """The settings of a ``subledger`` process, as environment variables."""
    return {
        "SUBLEDGER_DATABASE_URL": database_url,
        "SUBLEDGER_REDIS_URL": redis_url,
        "SUBLEDGER_BUS_PREFIX": streams.prefix,
        **{f"SUBLEDGER_{name.upper()}": value for name, value in settings.items()},
    }


def subledger_process(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``subledger COMMAND`` as a process of its own, its stderr appended to ``log`` (a
    pipe nobody reads would block it)."""
    argv = [sys.executable, "-m", "commands", command]
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=os.environ | env, stderr=out)


def worker_process(
    database_url: str, redis_url: str, streams: Streams, log: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """``subledger worker``, configured by the environment."""
    env = environment(database_url, redis_url, streams, **settings)
    return subledger_process("worker", env, log)
