"""Outbound webhooks: the CRM registers an endpoint, and every integration event its
filter takes is POSTed to it, signed so that it can check who sent it, in order per
customer, retried for a day when it fails. On SQLite and on PostgreSQL, with real Redis
and a real HTTP receiver on this machine.

The shop's catalog: Basic 10 EUR a month, Pro 20 EUR a month with a 14-day trial. The
clock starts on Fri 31 Jan 2025 at 09:00 UTC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

import pytest
import redis
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from commands import schemas as s
from commands.cli import app
from commands.outbox import OutboxPublisher
from commands.streams import Streams
from commands.webhook_signing import endpoint_secret
from commands.webhooks import WebhookReport, Webhooks
from projections.values import read_instant
from projections.webhook_endpoints import endpoints
from tests.integration.conftest import Shop

KEY = "test-node-signing-key-0123456789abcdef"
Handler = Callable[[Request], Response]


def verified(request: Request, secret: str) -> dict[str, Any]:
    """The delivery's event, checked as a receiver following Standard Webhooks does."""
    msg_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    body = request.get_data()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    given = [
        base64.b64decode(sig.split(",", 1)[1])
        for sig in request.headers["webhook-signature"].split(" ")
        if sig.startswith("v1,")
    ]
    assert any(hmac.compare_digest(expected, one) for one in given), "forged delivery"
    event = cast(dict[str, Any], json.loads(body))
    assert event["id"] == msg_id
    return event


class Receiver:
    """The CRM's endpoint: answers with ``answer`` (200 by default), keeps each request."""

    def __init__(self, server: HTTPServer, path: str = "/hook") -> None:
        self.server = server
        self.path = path
        self.requests: list[Request] = []
        self.answer: Handler = lambda _: Response("", 200)
        server.expect_request(path, method="POST").respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for(self.path)

    def _handle(self, request: Request) -> Response:
        self.requests.append(request)
        return self.answer(request)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r.get_data()) for r in self.requests]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]


class Node:
    """The outbox and the webhooks part of a node, ticked by hand."""

    def __init__(self, shop: Shop, client: redis.Redis, streams: Streams) -> None:
        self.shop = shop
        self.outbox = OutboxPublisher(shop.ledger, client, shop.clock, streams)
        self.database = shop.projector.database
        self.webhooks = Webhooks(
            shop.ledger, self.database, client, shop.clock, streams, SecretStr(KEY), timeout=1.0
        )

    def register(self, url: str, event_types: list[str], **fields: Any) -> dict[str, Any]:
        return self.shop.send(s.RegisterWebhook, url=url, event_types=event_types, **fields)

    def tick(self) -> WebhookReport:
        self.outbox.run()
        return self.webhooks.run()

    def deliveries(self) -> list[dict[str, Any]]:
        columns = ("event_id", "event_type", "status", "attempts", "next_attempt_at", "seq")
        rows = self.database.query(
            f"SELECT {', '.join(columns)} FROM webhook_deliveries ORDER BY seq, endpoint_id"
        )
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def next_attempt(self, event_id: str) -> datetime:
        rows = self.database.query(
            "SELECT next_attempt_at FROM webhook_deliveries WHERE event_id = ?", (event_id,)
        )
        return read_instant(rows[0][0])


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def node(
    shop: Shop, client: redis.Redis, streams: Streams, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Node]:
    monkeypatch.setenv("SUBLEDGER_WEBHOOK_SIGNING_KEY", KEY)
    made = Node(shop, client, streams)
    made.tick()  # running before the endpoints are registered: the catalog is not sent
    yield made
    made.webhooks.close()


@pytest.fixture
def crm(httpserver: HTTPServer) -> Receiver:
    return Receiver(httpserver)


def test_the_crm_gets_every_event_signed_with_the_secret_the_registration_gave(
    shop: Shop, node: Node, crm: Receiver
) -> None:
    reply = node.register(crm.url, ["*"], description="CRM")
    endpoint_id = UUID(reply["endpoint_id"])
    secret = reply["signing_secret"]
    assert secret == endpoint_secret(SecretStr(KEY), endpoint_id)
    assert secret.startswith("whsec_")
    ann = shop.customer()
    shop.subscribe(ann)

    report = node.tick()

    events = [verified(request, secret) for request in crm.requests]
    assert [e["type"] for e in events] == [
        "customer.created",
        "payment_method.attached",
        "subscription.created",
        "invoice.created",
        "invoice.payment_requested",
    ]
    assert {e["customer_id"] for e in events} == {str(ann)}
    assert report.queued == 5
    assert (report.sent.delivered, report.sent.retrying, report.sent.failed) == (5, 0, 0)
    request = crm.requests[0]
    assert request.headers["content-type"] == "application/json"
    assert abs(int(request.headers["webhook-timestamp"]) - shop.clock.now().timestamp()) < 1
    with pytest.raises(AssertionError, match="forged"):
        verified(request, endpoint_secret(SecretStr("another key"), endpoint_id))
    # Delivered once: another tick sends nothing again.
    assert node.tick().sent.delivered == 0
    assert len(crm.requests) == 5


def test_nothing_secret_is_stored_and_a_repeated_registration_gives_the_secret_again(
    shop: Shop, node: Node, crm: Receiver
) -> None:
    reply = node.register(crm.url, ["invoice.*"], command_id="hook-1")
    again = node.register(crm.url, ["invoice.*"], command_id="hook-1")
    assert again == reply
    shop.subscribe(shop.customer())
    node.tick()

    secret = reply["signing_secret"]
    raw_key = base64.b64decode(secret.removeprefix("whsec_"))
    stored = b"".join(n.state for n in shop.ledger.recorder.select_notifications(1, 10_000)).decode(
        "utf-8", "replace"
    )
    assert reply["endpoint_id"] in stored  # the registration is there...
    for leak in (secret, secret.removeprefix("whsec_"), KEY, raw_key.hex()):
        assert leak not in stored  # ...but no secret, nor the key it derives from
    tables = json.dumps(
        [
            node.database.query(f"SELECT * FROM {table}")
            for table in ("webhook_endpoints", "webhook_deliveries", "webhook_attempts")
        ],
        default=str,
    )
    assert secret.removeprefix("whsec_") not in tables
    assert KEY not in tables


def test_each_endpoint_gets_the_event_types_it_asked_for(
    shop: Shop, node: Node, httpserver: HTTPServer
) -> None:
    billing = Receiver(httpserver, "/billing")
    marketing = Receiver(httpserver, "/marketing")
    node.register(billing.url, ["invoice.*", "subscription.created"])
    node.register(marketing.url, ["customer.created"])
    ann = shop.customer()
    shop.subscribe(ann)
    shop.send(s.RegisterPlan, code="gold", name="Gold")  # plan.created: neither asked for it

    node.tick()

    assert billing.types() == [
        "subscription.created",
        "invoice.created",
        "invoice.payment_requested",
    ]
    assert marketing.types() == ["customer.created"]


def test_a_failing_delivery_holds_back_that_customers_later_events_but_no_one_elses(
    shop: Shop, node: Node, crm: Receiver
) -> None:
    node.register(crm.url, ["*"])
    ann = shop.customer()
    down = {"ann": True}

    def answer(request: Request) -> Response:
        event = json.loads(request.get_data())
        if down["ann"] and event["customer_id"] == str(ann):
            return Response("CRM is migrating Ann's record", 500)
        return Response("", 204)

    crm.answer = answer
    node.tick()  # Ann's first event fails; her second waits behind it
    bob = shop.customer()
    shop.subscribe(ann)
    report = node.tick()  # Bob's events go through; Ann's wait

    assert report.sent.delivered == 2
    by_customer = [(e["customer_id"], e["type"]) for e in crm.events()]
    assert by_customer == [
        (str(ann), "customer.created"),
        (str(bob), "customer.created"),
        (str(bob), "payment_method.attached"),
    ]

    down["ann"] = False
    shop.clock.advance(timedelta(seconds=30))
    node.tick()

    anns = [e["type"] for e in crm.events()[3:]]
    assert anns == [
        "customer.created",  # the retry, then the rest in the order they happened
        "payment_method.attached",
        "subscription.created",
        "invoice.created",
        "invoice.payment_requested",
    ]
    assert {d["status"] for d in node.deliveries()} == {"delivered"}


def test_retries_back_off_from_30_seconds_to_hourly_and_give_up_after_a_day(
    shop: Shop, node: Node, crm: Receiver
) -> None:
    crm.answer = lambda _: Response("down for maintenance", 502)
    node.register(crm.url, ["customer.*"])
    ann = shop.customer(with_card=False)
    shop.send(s.ChangeCustomerContact, customer_id=ann, email="ann@example.org", name="Ann")
    node.tick()
    first, second = node.deliveries()
    start = shop.clock.now()

    waits = []
    while (delivery := node.deliveries()[0])["status"] == "pending":
        attempted = shop.clock.now()
        shop.clock.advance_to(node.next_attempt(first["event_id"]))
        waits.append(shop.clock.now() - attempted)
        node.tick()

    minutes = [w.total_seconds() / 60 for w in waits]
    assert minutes[:8] == [0.5, 1, 2, 4, 8, 16, 32, 60]  # 30 s doubling, capped at an hour
    assert set(minutes[8:-1]) == {60}
    assert shop.clock.now() == start + timedelta(days=1)  # the last attempt: a day later
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == len(waits) + 1 == 31
    assert (
        len([r for r in crm.requests if json.loads(r.get_data())["id"] == first["event_id"]]) == 31
    )
    # Given up: Ann's next event is attempted at once.
    assert crm.events()[-1]["id"] == second["event_id"]
    assert node.deliveries()[1]["attempts"] == 1


@pytest.mark.parametrize(
    ("status", "retry_after", "wait"),
    [
        (429, "120", timedelta(minutes=2)),
        (503, "7200", timedelta(hours=1)),  # no longer than the longest backoff
        (500, "120", timedelta(seconds=30)),  # only 429 and 503 say when to come back
    ],
)
def test_an_endpoint_asking_to_come_back_later_is_retried_when_it_says(
    shop: Shop, node: Node, crm: Receiver, status: int, retry_after: str, wait: timedelta
) -> None:
    crm.answer = lambda _: Response("slow down", status, headers={"Retry-After": retry_after})
    node.register(crm.url, ["plan.created"])
    shop.send(s.RegisterPlan, code="gold", name="Gold")
    node.tick()
    (delivery,) = node.deliveries()
    assert node.next_attempt(delivery["event_id"]) == shop.clock.now() + wait


def test_reading_the_stream_again_queues_and_sends_nothing_twice(
    shop: Shop, node: Node, crm: Receiver
) -> None:
    (before,) = node.database.query("SELECT last_id, seq FROM webhook_follower")
    node.register(crm.url, ["*"])
    shop.subscribe(shop.customer())
    node.tick()
    assert len(crm.requests) == 5

    # As after a position lost (a restored backup): the follower reads those again.
    with node.database.transaction() as tx:
        tx.execute("UPDATE webhook_follower SET last_id = ?, seq = ?", before)
    report = node.tick()

    assert report.queued == 0
    assert len(node.deliveries()) == 5
    assert len(crm.requests) == 5


def test_a_disabled_endpoint_gets_nothing_more(shop: Shop, node: Node, crm: Receiver) -> None:
    endpoint_id = node.register(crm.url, ["*"])["endpoint_id"]
    shop.customer(with_card=False)
    node.tick()
    shop.send(s.DisableWebhook, endpoint_id=endpoint_id)
    shop.customer(with_card=False)
    node.tick()
    assert crm.types() == ["customer.created"]


def test_a_receiver_too_slow_to_answer_is_retried(shop: Shop, node: Node, crm: Receiver) -> None:
    def slow(_: Request) -> Response:
        time.sleep(1.5)  # longer than the node's 1 s timeout
        return Response("", 200)

    crm.answer = slow
    node.register(crm.url, ["plan.created"])
    shop.send(s.RegisterPlan, code="gold", name="Gold")
    report = node.tick()
    assert report.sent.retrying == 1
    (delivery,) = node.deliveries()
    assert delivery["status"] == "pending"


def test_without_a_signing_key_deliveries_wait_and_say_why(
    shop: Shop, node: Node, crm: Receiver, client: redis.Redis, streams: Streams
) -> None:
    node.register(crm.url, ["*"])
    shop.customer(with_card=False)
    unsigned = Webhooks(shop.ledger, node.database, client, shop.clock, streams, None, timeout=1.0)
    node.outbox.run()
    with pytest.raises(RuntimeError, match="SUBLEDGER_WEBHOOK_SIGNING_KEY is not set"):
        unsigned.run()
    unsigned.close()
    assert crm.requests == []
    assert [d["status"] for d in node.deliveries()] == ["pending"]  # queued all the same
    assert node.tick().sent.delivered == 1  # a node with the key sends it


def test_status_shows_each_endpoint_and_its_attempts(
    shop: Shop, node: Node, crm: Receiver, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crm.answer = lambda _: Response("no such contact", 404)
    endpoint_id = node.register(crm.url, ["customer.created"], description="CRM")["endpoint_id"]
    shop.customer(with_card=False)
    node.tick()
    shop.clock.advance(timedelta(seconds=30))
    node.tick()

    runner = CliRunner()
    shown = runner.invoke(app, ["webhooks", "status", "--json", "--database-url", database_url])
    assert shown.exit_code == 0, shown.output
    (status,) = json.loads(shown.output)
    assert status["endpoint_id"] == endpoint_id
    assert status["url"] == crm.url
    assert (status["delivered"], status["pending"], status["failed"]) == (0, 1, 0)
    assert status["last_error"]["error"] == "HTTP 404: no such contact"

    detail = runner.invoke(
        app,
        ["webhooks", "status", "--endpoint", endpoint_id, "--json", "--database-url", database_url],
    )
    assert detail.exit_code == 0, detail.output
    attempts = json.loads(detail.output)["attempts"]
    assert [(a["attempt"], a["status_code"], a["event_type"]) for a in attempts] == [
        (2, 404, "customer.created"),
        (1, 404, "customer.created"),
    ]
    assert attempts[0]["next_attempt_at"] == (shop.clock.now() + timedelta(minutes=1)).isoformat()

    monkeypatch.setenv("COLUMNS", "300")  # the tables on one line each
    table = runner.invoke(
        app, ["webhooks", "status", "--endpoint", endpoint_id, "--database-url", database_url]
    )
    assert table.exit_code == 0, table.output
    assert "HTTP 404: no such contact" in table.output

    secret = runner.invoke(app, ["webhooks", "secret", endpoint_id, "--database-url", database_url])
    assert secret.exit_code == 0, secret.output
    assert json.loads(secret.output)["signing_secret"] == endpoint_secret(
        SecretStr(KEY), UUID(endpoint_id)
    )


def test_the_secret_command_needs_the_key_and_a_registered_endpoint(
    node: Node, crm: Receiver, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_id = node.register(crm.url, ["*"])["endpoint_id"]
    runner = CliRunner()
    unknown = runner.invoke(
        app, ["webhooks", "secret", str(UUID(int=7)), "--database-url", database_url]
    )
    assert (unknown.exit_code, json.loads(unknown.output)["error"]) == (1, "not_found")
    monkeypatch.delenv("SUBLEDGER_WEBHOOK_SIGNING_KEY")
    keyless = runner.invoke(
        app, ["webhooks", "secret", endpoint_id, "--database-url", database_url]
    )
    assert keyless.exit_code == 2
    assert json.loads(keyless.output)["error"] == "webhook_signing_key_missing"
    # Registered all the same; the secret is shown once the node has its key.
    assert node.register(crm.url, ["*"])["signing_secret"] is None


def test_two_nodes_never_attempt_the_same_delivery_at_once(shop: Shop, node: Node) -> None:
    node.register("http://127.0.0.1:9/unreachable", ["plan.created"])
    shop.send(s.RegisterPlan, code="gold", name="Gold")
    node.outbox.run()
    node.webhooks.endpoints.catch_up()
    node.webhooks.follower.follow(endpoints(node.database))
    store, now = node.webhooks.store, shop.clock.now()
    due = store.due(now, 10)
    held_until = now + timedelta(minutes=1)

    assert len(store.claim(due, now, held_until)) == 1  # this node's
    assert store.claim(due, now, held_until) == []  # not the other's as well
    assert store.due(now, 10) == []  # held while its attempt runs
    shop.clock.advance_to(held_until)  # its node died during the attempt
    (again,) = store.due(shop.clock.now(), 10)
    assert again.attempts == 1  # counted: it may have reached the endpoint
