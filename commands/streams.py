"""The Redis keys of the bus, all under one prefix (``subledger`` by default), so that
several ledgers, or tests, can share a Redis server without meeting."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "subledger"


@dataclass(frozen=True)
class Streams:
    prefix: str = "subledger"

    @property
    def commands(self) -> str:
        """Commands from services, read by the consumer group ``GROUP``."""
        return f"{self.prefix}:commands"

    @property
    def events(self) -> str:
        """Integration events for other systems (the outbox's output)."""
        return f"{self.prefix}:events"

    @property
    def dead(self) -> str:
        """Messages that kept failing for a reason other than a rejection."""
        return f"{self.prefix}:dead"

    @property
    def rejections(self) -> str:
        """Every rejected message, with its reason, whether or not it asked for a reply."""
        return f"{self.prefix}:rejections"

    @property
    def failures(self) -> str:
        """A hash: entry id -> the last error that kept a command from being answered."""
        return f"{self.prefix}:failures"

    @property
    def outbox_position(self) -> str:
        """The last stored event published to ``events``."""
        return f"{self.prefix}:events:position"

    @property
    def scheduled_signals(self) -> str:
        """A sorted set of lifecycle signals (trial ending...) waiting for their time."""
        return f"{self.prefix}:events:scheduled"

    def ours(self, key: str) -> bool:
        """A reply stream must not be one of the bus's own keys."""
        return key in (
            self.commands,
            self.events,
            self.dead,
            self.rejections,
            self.failures,
            self.outbox_position,
            self.scheduled_signals,
        )
