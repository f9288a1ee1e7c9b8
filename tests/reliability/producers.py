"""Services that send commands over the bus in rounds, as plain Redis clients do: each
round's commands are added at once, and the next round waits for their replies, because
its commands may name what the earlier ones created."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

from commands.streams import Streams
from tests.integration.bus_driver import Service

Command = dict[str, Any]
# A producer's work: rounds of commands, each round waiting for the previous one's replies.
Rounds = Sequence[Sequence[Command]]


class Producer(Service):
    """A service with a reply stream of its own (under the test's prefix, so cleaned up)."""

    def __init__(self, redis_url: str, streams: Streams, name: str) -> None:
        super().__init__(redis_url, streams)
        self.reply_to = f"{streams.prefix}-replies-{name}"
        self._read_up_to: bytes = b"0-0"

    def send_round(self, commands: Sequence[Command]) -> None:
        """Adds ``commands`` to the commands stream in one round trip, in this order."""
        with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                data = json.dumps(command | {"reply_to": self.reply_to})
                pipe.xadd(self.streams.commands, {"data": data})
            pipe.execute()

    def await_replies(self, command_ids: set[str], timeout: float) -> None:
        """Blocks until a reply to each of ``command_ids`` has arrived."""
        waiting = set(command_ids)
        deadline = time.monotonic() + timeout
        while waiting:
            assert time.monotonic() < deadline, f"no reply to {len(waiting)}: {sorted(waiting)[:5]}"
            read = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                self.client.xread({self.reply_to: self._read_up_to}, block=500),
            )
            for _, entries in read:
                for entry_id, fields in entries:
                    self._read_up_to = entry_id
                    waiting.discard(json.loads(fields[b"data"])["command_id"])

    def run(self, rounds: Rounds, timeout: float) -> None:
        for commands in rounds:
            self.send_round(commands)
            self.await_replies({c["command_id"] for c in commands}, timeout)


class Running:
    """Producers at work, each in a thread of its own."""

    def __init__(self, producers: Sequence[Producer], work: Sequence[Rounds], timeout: float):
        self.failures: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(p, r, timeout), daemon=True)
            for p, r in zip(producers, work, strict=True)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, producer: Producer, rounds: Rounds, timeout: float) -> None:
        try:
            producer.run(rounds, timeout)
        except BaseException as error:
            self.failures.append(error)

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def join(self) -> None:
        """Waits for every producer; raises the first failure."""
        for thread in self.threads:
            thread.join()
        if self.failures:
            raise self.failures[0]
