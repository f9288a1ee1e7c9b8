"""Outbound webhooks: every integration event (the stream ``<prefix>:events``) that an
endpoint's filter takes is POSTed to it as JSON, signed (``commands.webhook_signing``),
retried with exponential backoff for up to a day, in order per customer.

Two steps, each tick of the node:

- the follower reads the stream on from a position kept in the database and queues a
  delivery per matching endpoint, in the same transaction as the new position (a crash
  loses nothing; a re-read adds nothing: a delivery is keyed by endpoint and event id);
- the sender attempts the deliveries that are due, at most one at a time per endpoint
  and customer (the oldest), several customers in parallel. A 2xx answer delivers it;
  anything else (another status, a timeout, no connection) is retried 30 s later, then
  after twice as long each time, at most an hour apart, or after the endpoint's
  ``Retry-After`` on a 429 or 503 (within that hour). An attempt that fails 24 hours or
  more after the first gives the delivery up (``failed``), and the customer's next
  delivery goes ahead.

Time comes from the injected clock only, so tests run a day of retries in a moment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any, cast
from uuid import UUID

import httpx
import redis
from pydantic import SecretStr

from commands.streams import Streams
from commands.webhook_deliveries import (
    DELIVERED,
    FAILED,
    PENDING,
    DeliveryStore,
    Due,
    EndpointCounts,
    FollowerMoved,
    NewDelivery,
    Outcome,
)
from commands.webhook_signing import endpoint_secret, required, signed_headers
from gateways import http
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.webhook_endpoints import matches
from projections.database import Database
from projections.runner import Projector
from projections.webhook_endpoints import EndpointRow, WebhookEndpoints, endpoints

FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=1)
# The answers whose Retry-After header is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})
# How much of an endpoint's answer is kept with a failed attempt, for the operator.
ERROR_EXCERPT = 200
USER_AGENT = "subledger-webhooks/1"
log = logging.getLogger("subledger.webhooks")


def backoff(attempt: int) -> timedelta:
    """The wait after failed attempt number ``attempt`` (1, 2...): 30 s doubling, capped."""
    return min(FIRST_RETRY * (1 << min(attempt - 1, 20)), LONGEST_RETRY)


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header (seconds, or an HTTP date) as a wait of 1 s to an hour."""
    seconds = http.retry_after(value, now, LONGEST_RETRY.total_seconds())
    return None if seconds is None else max(timedelta(seconds=1), timedelta(seconds=seconds))


@dataclass(frozen=True)
class Answer:
    """What one POST got: a status (and Retry-After), or the error that left none."""

    status_code: int | None
    error: str | None
    wait: timedelta | None
    duration_ms: int


def outcome_of(due: Due, at: datetime, answer: Answer) -> Outcome:
    """Delivered, retried later, or given up, after attempt ``due.attempts + 1`` at ``at``."""
    attempt = due.attempts + 1
    status_code, error = answer.status_code, answer.error
    if status_code is not None and 200 <= status_code < 300:
        status, next_at = DELIVERED, None
    else:
        deadline = (due.first_attempt_at or at) + GIVE_UP_AFTER
        if at >= deadline:
            status, next_at = FAILED, None
        else:
            status, next_at = PENDING, min(at + (answer.wait or backoff(attempt)), deadline)
    return Outcome(
        due.endpoint_id,
        due.event_id,
        attempt,
        at,
        status_code,
        error,
        answer.duration_ms,
        status,
        next_at,
    )


class WebhookFollower:
    """Queues the deliveries of the integration events the stream adds."""

    def __init__(
        self, client: redis.Redis, store: DeliveryStore, clock: Clock, streams: Streams
    ) -> None:
        self.client = client
        self.store = store
        self.clock = clock
        self.stream = streams.events

    def follow(self, to: Sequence[EndpointRow], page: int = 500) -> int:
        """Reads the stream to its end; returns how many deliveries it queued. The first
        run starts at the end: what was published before webhooks ran is not sent."""
        queued = 0
        while True:
            if (position := self.store.position(self.stream)) is None:
                self.store.start(self.stream, self._last_id())
                continue
            read_from, read = position
            # A client without decode_responses: ids and fields come as bytes.
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self.client.xrange(self.stream, min=f"({read_from}", count=page),
            )
            if not entries:
                return queued
            deliveries: list[tuple[int, NewDelivery]] = []
            erased: set[str] = set()
            for seq, (entry_id, fields) in enumerate(entries, start=read + 1):
                deliveries += [(seq, d) for d in _deliveries(entry_id, fields, to)]
                if (customer_id := _erased_customer(fields)) is not None:
                    erased.add(customer_id)
            last_id = _text(entries[-1][0])
            try:
                queued += self.store.add(
                    self.stream,
                    read_from,
                    last_id,
                    read + len(entries),
                    deliveries,
                    self.clock.now(),
                    erased,
                )
            except FollowerMoved:
                continue  # another follower got there first

    def _last_id(self) -> str:
        last = cast(list[tuple[bytes, Any]], self.client.xrevrange(self.stream, count=1))
        return _text(last[0][0]) if last else "0-0"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _erased_customer(fields: dict[bytes, bytes]) -> str | None:
    """The customer a ``customer.erased`` entry is about (None for any other entry)."""
    if b'"customer.erased"' not in fields.get(b"data", b""):
        return None  # not worth parsing: almost every entry
    try:
        event = json.loads(fields[b"data"])
        return str(event["customer_id"]) if event["type"] == "customer.erased" else None
    except (KeyError, TypeError, ValueError):
        return None


def _deliveries(
    entry_id: bytes | str, fields: dict[bytes, bytes], to: Sequence[EndpointRow]
) -> list[NewDelivery]:
    try:
        body = _text(fields[b"data"])
        event = json.loads(body)
        kind, event_id = str(event["type"]), str(event["id"])
        key = str(event["customer_id"] or f"event:{event_id}")
    except (KeyError, TypeError, ValueError):
        # Not the outbox's: another client wrote to the stream. Skipped, never stuck on.
        log.warning("stream entry %s is not an integration event: skipped", _text(entry_id))
        return []
    return [
        NewDelivery(endpoint.endpoint_id, event_id, key, kind, body)
        for endpoint in to
        if endpoint.enabled and matches(endpoint.event_types, kind)
    ]


@dataclass(frozen=True)
class SenderReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


class WebhookSender:
    """Attempts the due deliveries, ``concurrency`` at a time, each POST bounded by the
    client's timeout; signed with secrets derived from ``signing_key``."""

    def __init__(
        self,
        store: DeliveryStore,
        clock: Clock,
        signing_key: SecretStr | None,
        http: httpx.Client,
        concurrency: int = 8,
        page: int = 200,
        per_run: int = 2_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.signing_key = signing_key
        self.http = http
        self.concurrency = concurrency
        self.page = page
        # Attempts one run makes at most, so that a backlog does not hold up the tick's
        # other work for long: the next tick goes on with it.
        self.per_run = per_run
        # A claim outlasts a round of attempts: a sender that dies holding some lets
        # another try them again after that.
        self.lease = timedelta(seconds=2 * (http.timeout.read or 60) + 30)

    def send_due(self) -> SenderReport:
        """Rounds of attempts until none is due; a delivery is attempted at most once a
        run (a Retry-After of a second must not make one run hammer an endpoint)."""
        tried: set[tuple[UUID, str]] = set()
        outcomes: list[Outcome] = []
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook") as pool:
            while len(outcomes) < self.per_run:
                now = self.clock.now()
                due = [
                    d
                    for d in self.store.due(now, self.page)
                    if (d.endpoint_id, d.event_id) not in tried
                ][: self.concurrency]
                if due:
                    required(self.signing_key)  # nothing is attempted unsigned
                claimed = self.store.claim(due, now, now + self.lease)
                if not claimed:
                    break
                tried.update((d.endpoint_id, d.event_id) for d in claimed)
                answered = list(pool.map(self._attempt, claimed))
                self.store.record(answered)
                outcomes += answered
        return SenderReport(
            sum(o.status == DELIVERED for o in outcomes),
            sum(o.status == PENDING for o in outcomes),
            sum(o.status == FAILED for o in outcomes),
        )

    def _attempt(self, due: Due) -> Outcome:
        at = self.clock.now()
        body = due.body.encode()
        secret = endpoint_secret(self.signing_key, due.endpoint_id)
        headers = signed_headers(secret, due.event_id, at, body)
        started = perf_counter()
        try:
            response = self.http.post(due.url, content=body, headers=headers)
        except httpx.TimeoutException as error:
            answer = Answer(None, f"timeout: {type(error).__name__}", None, _since(started))
        except httpx.HTTPError as error:
            answer = Answer(None, f"network error: {type(error).__name__}", None, _since(started))
        else:
            answer = _answer(response, at, _since(started))
        return outcome_of(due, at, answer)


def _since(started: float) -> int:
    return round((perf_counter() - started) * 1000)


def _answer(response: httpx.Response, at: datetime, duration_ms: int) -> Answer:
    code = response.status_code
    if 200 <= code < 300:
        return Answer(code, None, None, duration_ms)
    # Without NUL characters, which PostgreSQL text cannot hold.
    excerpt = response.text[:ERROR_EXCERPT].replace("\x00", "").strip()
    wait = retry_after(response.headers.get("retry-after"), at)
    return Answer(
        code,
        f"HTTP {code}" + (f": {excerpt}" if excerpt else ""),
        wait if code in RETRY_AFTER_STATUSES else None,
        duration_ms,
    )


@dataclass(frozen=True)
class WebhookReport:
    queued: int
    sent: SenderReport

    def line(self) -> str:
        s = self.sent
        return (
            f"webhooks: {self.queued} queued, {s.delivered} delivered, "
            f"{s.retrying} to retry, {s.failed} given up"
        )


class Webhooks:
    """The node's webhook part: endpoints brought up to date, then the follower, then
    the sender (which needs the signing key: without it deliveries wait, and it says why)."""

    def __init__(
        self,
        ledger: Ledger,
        database: Database,
        client: redis.Redis,
        clock: Clock,
        streams: Streams,
        signing_key: SecretStr | None,
        timeout: float,
    ) -> None:
        self.database = database
        self.endpoints = Projector(ledger, database, [WebhookEndpoints()])
        self.store = DeliveryStore(database)
        self.follower = WebhookFollower(client, self.store, clock, streams)
        http = httpx.Client(timeout=timeout, headers={"user-agent": USER_AGENT})
        self.sender = WebhookSender(self.store, clock, signing_key, http)
        self._ready = False

    def run(self) -> WebhookReport:
        if not self._ready:
            self.store.setup()
            self._ready = True
        self.endpoints.catch_up()
        queued = self.follower.follow(endpoints(self.database))
        return WebhookReport(queued, self.sender.send_due())

    def close(self) -> None:
        self.sender.http.close()


@dataclass(frozen=True)
class EndpointStatus:
    """An endpoint and how its deliveries stand (``subledger webhooks status``)."""

    endpoint: EndpointRow
    counts: EndpointCounts
    last_error: tuple[datetime, str] | None

    def as_json(self) -> dict[str, Any]:
        e, c = self.endpoint, self.counts
        return {
            "endpoint_id": str(e.endpoint_id),
            "url": e.url,
            "event_types": e.event_types,
            "description": e.description,
            "enabled": e.enabled,
            "delivered": c.delivered,
            "pending": c.pending,
            "failed": c.failed,
            "oldest_pending": None if c.oldest_pending is None else c.oldest_pending.isoformat(),
            "last_error": None
            if self.last_error is None
            else {"at": self.last_error[0].isoformat(), "error": self.last_error[1]},
        }


def webhook_status(ledger: Ledger, database: Database) -> list[EndpointStatus]:
    """Every endpoint (brought up to date from the ledger) with its deliveries' counts."""
    store = DeliveryStore(database)
    store.setup()
    Projector(ledger, database, [WebhookEndpoints()]).catch_up()
    counts = store.counts()
    return [
        EndpointStatus(
            e, counts.get(e.endpoint_id, EndpointCounts()), store.last_error(e.endpoint_id)
        )
        for e in endpoints(database)
    ]
