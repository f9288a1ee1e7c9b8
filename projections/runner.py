"""Keeps projections current: reads the event sequence page by page, feeds each projection
its events in batches, and moves its position in the same transaction as its tables.

eventsourcing 9.5's ``ProjectionRunner`` hands a projection one event per call, and its
tracking recorders commit one tracking record per event on their own connection; we need
many events per transaction on PostgreSQL and SQLite alike (SQLite has no subscription
either). So the runner pages through ``recorder.select_notifications`` (the library's
reading of the sequence, on every backend), decodes with the application's mapper (so the
transcodings, and later the cipher, apply), and keeps one position row per projection in
``projection_positions``. The position only moves forward, by compare-and-set: a second
runner on the same projection cannot count a batch twice, it starts again from where the
other left off. Reading up to the last id seen skips nothing: ids are given in commit
order (the recorders hold a table lock, or SQLite's write lock, until commit).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger import collector
from ledger.application import Ledger
from projections.database import Database, Transaction
from projections.projection import Positioned, Projection
from projections.values import read_int

DEFAULT_BATCH_SIZE = 10_000
# (position reached, head of the sequence)
Progress = Callable[[int, int], None]

POSITIONS_TABLE = """
CREATE TABLE IF NOT EXISTS projection_positions (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    position BIGINT NOT NULL
)"""


class UnknownProjection(ValueError):
    pass


class PositionMoved(RuntimeError):
    """Another runner moved the projection's position first: read it again."""


class VersionConflict(RuntimeError):
    """The projection's tables were built by another version of it (another runner,
    during an upgrade): this runner must stop rather than write in a shape not its own."""


@dataclass(frozen=True)
class Status:
    name: str
    version: int
    stored_version: int | None
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)

    @property
    def needs_rebuild(self) -> bool:
        """The projection changed since its tables were built (or they never were)."""
        return self.stored_version != self.version

    @property
    def state(self) -> str:
        if self.stored_version is None:
            return "not built yet"
        if self.needs_rebuild:
            return "rebuild needed"
        return "up to date" if self.lag == 0 else "behind"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "stored_version": self.stored_version,
            "position": self.position,
            "head": self.head,
            "lag": self.lag,
            "state": self.state,
        }


class Projector:
    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        projections: Sequence[Projection],
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.ledger = ledger
        self.database = database
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def status(self) -> list[Status]:
        with self.database.transaction(exclusive=True) as tx:
            stored = _stored(tx)
        head = self.ledger.recorder.max_notification_id() or 0
        return [
            Status(
                name,
                p.version,
                stored[name][0] if name in stored else None,
                stored[name][1] if name in stored else 0,
                head,
            )
            for name, p in self.projections.items()
        ]

    def setup(self) -> list[str]:
        """Creates missing tables; rebuilds from scratch those whose version changed.
        Returns the names of the projections that start again from position 0.

        One exclusive transaction: two runners starting together on a new database
        would otherwise both create (or drop and create) the same tables."""
        with self.database.transaction(exclusive=True) as tx:
            stored = _stored(tx)
            for name, p in self.projections.items():
                if name in stored and stored[name][0] > p.version:
                    # An older runner (during an upgrade) must not drop newer tables.
                    raise VersionConflict(
                        f"projection {name!r} is at version {stored[name][0]} in the "
                        f"database, newer than this runner's {p.version}"
                    )
            reset = [
                p
                for name, p in self.projections.items()
                if name not in stored or stored[name][0] != p.version
            ]
            for projection in reset:
                _reset(tx, projection)
        return [p.name for p in reset]

    def catch_up(self, progress: Progress | None = None) -> int:
        """Projects every stored event not yet projected; returns how many it decoded."""
        self.setup()
        recorder = self.ledger.recorder
        positions = self._positions()
        start = min(positions.values(), default=0) + 1
        projected = 0
        with collector.paused():
            while page := self._read(start, positions):
                try:
                    for name, projection in self.projections.items():
                        if positions[name] < page.last:
                            self._commit(projection, positions[name], page)
                            positions[name] = page.last
                except PositionMoved:
                    # Another runner moved a position: go on from where it is now.
                    positions = self._positions()
                    start = min(positions.values()) + 1
                    continue
                projected += len(page.events)
                start = page.last + 1
                # A page's objects are gone now (reference counting): collecting the
                # young generations here costs little and keeps memory flat.
                del page
                gc.collect(1)
                if progress is not None:
                    head = recorder.max_notification_id() or 0
                    progress(start - 1, max(head, start - 1))
        return projected

    def rebuild(self, names: Sequence[str] = (), progress: Progress | None = None) -> int:
        """Drops the named projections (all by default) and replays the whole sequence."""
        for name in names:
            if name not in self.projections:
                raise UnknownProjection(
                    f"no projection {name!r}; there are: {', '.join(self.projections)}"
                )
        self.setup()
        with self.database.transaction(exclusive=True) as tx:
            for name in names or list(self.projections):
                _reset(tx, self.projections[name])
        return self.catch_up(progress)

    def _read(self, start: int, positions: dict[str, int]) -> Page | None:
        """The next page of the sequence from ``start``, with the events that a projection
        still needs decoded (rebuilding one projection decodes its events only). Every
        event is fetched and the others skipped here: asking the database for some
        topics only made PostgreSQL sort whole ranges whenever its statistics were stale
        (after a bulk load), many times slower than reading on."""
        batch = self.ledger.recorder.select_notifications(start, self.batch_size)
        if not batch:
            return None
        # For each topic, the lowest position of a projection that reads it.
        after: dict[str, int] = {}
        for name, projection in self.projections.items():
            for topic in projection.topics():
                after[topic] = min(after.get(topic, positions[name]), positions[name])
        wanted = [n for n in batch if n.id > after.get(n.topic, n.id)]
        # One page decoded at once: the personal data keys it needs come in one query.
        events = list(zip((n.id for n in wanted), self.ledger.decode(wanted), strict=True))
        return Page(batch[-1].id, events)

    def _commit(self, projection: Projection, position: int, page: Page) -> None:
        events = [
            (i, event)
            for i, event in page.events
            if i > position and type(event) in projection.handles
        ]
        with self.database.transaction() as tx:
            # First, so that a concurrent runner waits here (or fails) before writing.
            moved = tx.execute(
                "UPDATE projection_positions SET position = ? "
                "WHERE name = ? AND position = ? AND version = ?",
                (page.last, projection.name, position, projection.version),
            )
            if moved != 1:
                raise PositionMoved(projection.name)
            if events:
                projection.process(tx, events)

    def _positions(self) -> dict[str, int]:
        with self.database.transaction() as tx:
            stored = _stored(tx)
        for name, p in self.projections.items():
            version = stored[name][0] if name in stored else None
            if version != p.version:
                raise VersionConflict(
                    f"projection {name!r} is at version {version} in the database, "
                    f"this runner has version {p.version}: another runner rebuilt it"
                )
        return {name: stored[name][1] for name in self.projections}


def _stored(tx: Transaction) -> dict[str, tuple[int, int]]:
    """(version, position) of every projection that has a position row."""
    tx.execute(POSITIONS_TABLE)
    rows = tx.query("SELECT name, version, position FROM projection_positions")
    return {name: (read_int(version), read_int(position)) for name, version, position in rows}


def _reset(tx: Transaction, projection: Projection) -> None:
    """Empty tables of the projection's current shape, at position 0."""
    projection.drop(tx)
    projection.create(tx)
    tx.execute("DELETE FROM projection_positions WHERE name = ?", (projection.name,))
    tx.execute(
        "INSERT INTO projection_positions (name, version, position) VALUES (?, ?, ?)",
        (projection.name, projection.version, 0),
    )


@dataclass(frozen=True)
class Page:
    last: int  # the position of its last event
    events: list[Positioned]  # the events of a class some projection handles, decoded
