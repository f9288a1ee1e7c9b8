"""The webhook deliveries, kept in the projections' database (PostgreSQL or SQLite, the
same SQL): one row per (endpoint, integration event), each attempt logged, and the
position of the follower in the stream of integration events.

``webhook_deliveries`` is the queue. ``seq`` is the event's place in the stream, so that
for an endpoint and an ordering key (the event's customer; an event without one is its
own key) only the oldest pending delivery may be attempted: a customer's events arrive
in order, another customer's are not held up. ``attempts`` is a compare-and-set token:
a sender claims a delivery by raising it, so two senders never attempt the same one at
once, and a claim whose sender died runs out when its ``next_attempt_at`` comes.

Bodies are the integration events as published. When the follower reads a customer's
``customer.erased``, the bodies of that customer's deliveries queued before it (pending,
delivered or given up) lose their personal data in the same transaction: a pending one
goes out with "erased" in its place.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.customers import ERASED
from ledger.personal_data import PERSONAL_FIELDS
from projections.database import Database, Transaction, select_in
from projections.values import (
    instant,
    read_instant,
    read_int,
    read_maybe_instant,
    read_uuid,
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS webhook_follower (
        stream TEXT PRIMARY KEY,
        last_id TEXT NOT NULL,
        seq BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        endpoint_id UUID NOT NULL,
        event_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        ordering_key TEXT NOT NULL,
        event_type TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at TIMESTAMPTZ NOT NULL,
        first_attempt_at TIMESTAMPTZ,
        last_status INTEGER,
        last_error TEXT,
        delivered_at TIMESTAMPTZ,
        PRIMARY KEY (endpoint_id, event_id)
    )""",
    """CREATE INDEX IF NOT EXISTS webhook_deliveries_queue
        ON webhook_deliveries (endpoint_id, ordering_key, status, seq)""",
    """CREATE INDEX IF NOT EXISTS webhook_deliveries_due
        ON webhook_deliveries (status, next_attempt_at)""",
    """CREATE TABLE IF NOT EXISTS webhook_attempts (
        endpoint_id UUID NOT NULL,
        event_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        attempted_at TIMESTAMPTZ NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_ms INTEGER NOT NULL,
        PRIMARY KEY (endpoint_id, event_id, attempt)
    )""",
    """CREATE INDEX IF NOT EXISTS webhook_attempts_recent
        ON webhook_attempts (endpoint_id, attempted_at)""",
)
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# The integration events whose data holds personal fields (PERSONAL_FIELDS).
PERSONAL_EVENTS = ("customer.created", "customer.contact_changed")


class FollowerMoved(RuntimeError):
    """Another follower moved the stream position first: read on from the new one."""


@dataclass(frozen=True)
class NewDelivery:
    endpoint_id: UUID
    event_id: str
    ordering_key: str
    event_type: str
    body: str


@dataclass(frozen=True)
class Due:
    """A delivery that may be attempted now, with its endpoint's URL."""

    endpoint_id: UUID
    event_id: str
    attempts: int
    first_attempt_at: datetime | None
    body: str
    url: str


@dataclass(frozen=True)
class Outcome:
    """What attempt number ``attempt`` of a delivery got, and what follows: delivered,
    retried at ``next_attempt_at``, or given up (``failed``)."""

    endpoint_id: UUID
    event_id: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    status: str
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class EndpointCounts:
    delivered: int = 0
    pending: int = 0
    failed: int = 0
    oldest_pending: datetime | None = None


@dataclass(frozen=True)
class AttemptView:
    event_id: str
    event_type: str
    ordering_key: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    delivery_status: str
    next_attempt_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "ordering_key": self.ordering_key,
            "attempt": self.attempt,
            "attempted_at": self.attempted_at.isoformat(),
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "delivery_status": self.delivery_status,
            "next_attempt_at": _iso(self.next_attempt_at),
        }


def _scrub(tx: Transaction, customer_ids: Collection[str]) -> None:
    """Replaces the personal fields in the bodies of these customers' deliveries (an
    erasure is rare: a query per customer)."""
    kinds = ", ".join("?" * len(PERSONAL_EVENTS))
    for customer_id in customer_ids:
        for endpoint_id, event_id, body in tx.query(
            "SELECT endpoint_id, event_id, body FROM webhook_deliveries "
            f"WHERE ordering_key = ? AND event_type IN ({kinds})",
            (customer_id, *PERSONAL_EVENTS),
        ):
            tx.execute(
                "UPDATE webhook_deliveries SET body = ? WHERE endpoint_id = ? AND event_id = ?",
                (_erased(body), str(read_uuid(endpoint_id)), event_id),
            )


def _erased(body: str) -> str:
    event = json.loads(body)
    data = event["data"]
    data.update({f: ERASED for f in PERSONAL_FIELDS if data.get(f) is not None})
    return json.dumps(event, separators=(",", ":"))


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


class DeliveryStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def setup(self) -> None:
        with self.database.transaction(exclusive=True) as tx:
            for statement in SCHEMA:
                tx.execute(statement)

    def position(self, stream: str) -> tuple[str, int] | None:
        """The last stream entry id read and how many events were read since the start;
        None before the first read."""
        rows = self.database.query(
            "SELECT last_id, seq FROM webhook_follower WHERE stream = ?", (stream,)
        )
        return (str(rows[0][0]), read_int(rows[0][1])) if rows else None

    def start(self, stream: str, last_id: str) -> None:
        """The first position: ``last_id``, unless another follower started first."""
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO webhook_follower (stream, last_id, seq) VALUES (?, ?, ?) "
                "ON CONFLICT (stream) DO NOTHING",
                (stream, last_id, 0),
            )

    def add(
        self,
        stream: str,
        read_from: str,
        last_id: str,
        read: int,
        deliveries: Sequence[tuple[int, NewDelivery]],
        now: datetime,
        erased: Collection[str] = (),
    ) -> int:
        """Queues ``deliveries`` (each with its event's ``seq``) and moves the position
        from ``read_from`` to ``last_id``, in one transaction; a delivery queued before
        (the same endpoint and event id) is left as it is. The deliveries of the
        ``erased`` customers lose their personal data. Returns how many it queued."""
        at = instant(now)
        rows = [
            (
                str(d.endpoint_id),
                d.event_id,
                seq,
                d.ordering_key,
                d.event_type,
                d.body,
                at,
                PENDING,
                0,
                at,
            )
            for seq, d in deliveries
        ]
        with self.database.transaction() as tx:
            self._move(tx, stream, read_from, last_id, read)
            event_ids = sorted({d.event_id for _, d in deliveries})
            queued = {
                (str(read_uuid(endpoint_id)), event_id)
                for endpoint_id, event_id in select_in(
                    tx,
                    "SELECT endpoint_id, event_id FROM webhook_deliveries",
                    "event_id",
                    event_ids,
                )
            }
            rows = [row for row in rows if (row[0], row[1]) not in queued]
            tx.insert_rows(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, seq, ordering_key, "
                "event_type, body, created_at, status, attempts, next_attempt_at)",
                rows,
                "ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            )
            _scrub(tx, erased)
        return len(rows)

    @staticmethod
    def _move(tx: Transaction, stream: str, read_from: str, last_id: str, seq: int) -> None:
        moved = tx.execute(
            "UPDATE webhook_follower SET last_id = ?, seq = ? WHERE stream = ? AND last_id = ?",
            (last_id, seq, stream, read_from),
        )
        if moved != 1:
            raise FollowerMoved(stream)

    def due(self, now: datetime, limit: int) -> list[Due]:
        """The deliveries that may be attempted at ``now``: pending, due, to an enabled
        endpoint, and the oldest pending one of their endpoint and ordering key."""
        rows = self.database.query(
            "SELECT d.endpoint_id, d.event_id, d.attempts, d.first_attempt_at, d.body, e.url "
            "FROM webhook_deliveries d "
            "JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id "
            "WHERE d.status = ? AND d.next_attempt_at <= ? AND e.disabled_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o "
            "WHERE o.endpoint_id = d.endpoint_id AND o.ordering_key = d.ordering_key "
            "AND o.status = ? AND o.seq < d.seq) "
            "ORDER BY d.seq, d.endpoint_id LIMIT ?",
            (PENDING, instant(now), PENDING, limit),
        )
        return [
            Due(read_uuid(e), str(i), read_int(n), read_maybe_instant(first), body, url)
            for e, i, n, first, body, url in rows
        ]

    def claim(self, due: Sequence[Due], now: datetime, until: datetime) -> list[Due]:
        """Those of ``due`` this sender now holds until ``until`` (another sender took
        the others), each counted as an attempt started at ``now``."""
        claimed = []
        with self.database.transaction() as tx:
            for d in due:
                took = tx.execute(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, "
                    "next_attempt_at = ?, first_attempt_at = COALESCE(first_attempt_at, ?) "
                    "WHERE endpoint_id = ? AND event_id = ? AND status = ? AND attempts = ?",
                    (
                        instant(until),
                        instant(now),
                        str(d.endpoint_id),
                        d.event_id,
                        PENDING,
                        d.attempts,
                    ),
                )
                if took == 1:
                    claimed.append(d)
        return claimed

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Each attempt's answer, in the attempts log and on its delivery."""
        with self.database.transaction() as tx:
            for o in outcomes:
                key = (str(o.endpoint_id), o.event_id, o.attempt)
                tx.execute(
                    "INSERT INTO webhook_attempts (endpoint_id, event_id, attempt, "
                    "attempted_at, status_code, error, duration_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, instant(o.attempted_at), o.status_code, o.error, o.duration_ms),
                )
                delivered_at = instant(o.attempted_at) if o.status == DELIVERED else None
                next_at = instant(o.next_attempt_at or o.attempted_at)
                tx.execute(
                    "UPDATE webhook_deliveries SET status = ?, last_status = ?, "
                    "last_error = ?, delivered_at = ?, next_attempt_at = ? "
                    "WHERE endpoint_id = ? AND event_id = ? AND attempts = ?",
                    (o.status, o.status_code, o.error, delivered_at, next_at, *key),
                )

    def counts(self) -> dict[UUID, EndpointCounts]:
        rows = self.database.query(
            "SELECT endpoint_id, status, COUNT(*), MIN(created_at) "
            "FROM webhook_deliveries GROUP BY endpoint_id, status"
        )
        found: dict[UUID, dict[str, Any]] = {}
        for endpoint_id, status, count, oldest in rows:
            values = found.setdefault(read_uuid(endpoint_id), {})
            values[status] = read_int(count)
            if status == PENDING:
                values["oldest_pending"] = read_instant(oldest)
        return {key: EndpointCounts(**values) for key, values in found.items()}

    def last_error(self, endpoint_id: UUID) -> tuple[datetime, str] | None:
        """When the endpoint's last failed attempt was, and its error."""
        rows = self.database.query(
            "SELECT attempted_at, error FROM webhook_attempts "
            "WHERE endpoint_id = ? AND error IS NOT NULL "
            "ORDER BY attempted_at DESC, attempt DESC LIMIT 1",
            (str(endpoint_id),),
        )
        return (read_instant(rows[0][0]), str(rows[0][1])) if rows else None

    def recent_attempts(self, endpoint_id: UUID, limit: int) -> list[AttemptView]:
        """The endpoint's latest attempts, newest first."""
        rows = self.database.query(
            "SELECT a.event_id, d.event_type, d.ordering_key, a.attempt, a.attempted_at, "
            "a.status_code, a.error, a.duration_ms, d.status, d.next_attempt_at "
            "FROM webhook_attempts a JOIN webhook_deliveries d "
            "ON d.endpoint_id = a.endpoint_id AND d.event_id = a.event_id "
            "WHERE a.endpoint_id = ? "
            "ORDER BY a.attempted_at DESC, d.seq DESC, a.attempt DESC LIMIT ?",
            (str(endpoint_id), limit),
        )
        return [
            AttemptView(
                str(event_id),
                event_type,
                ordering_key,
                read_int(attempt),
                read_instant(attempted_at),
                None if code is None else read_int(code),
                error,
                read_int(duration),
                status,
                read_instant(next_at) if status == PENDING else None,
            )
            for (
                event_id,
                event_type,
                ordering_key,
                attempt,
                attempted_at,
                code,
                error,
                duration,
                status,
                next_at,
            ) in rows
        ]
