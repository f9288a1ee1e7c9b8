"""A right-to-be-forgotten request: the customer's personal data becomes unreadable
everywhere, while the financial ledger stays whole. On SQLite and PostgreSQL.

Three customers subscribe in February 2025 (Basic 10 EUR, Pro 20 EUR a month after a
14-day trial) and are billed until May; then one of them asks to be forgotten.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
import redis
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Response

from commands import schemas as s
from commands.audit import chain_recorder, verify
from commands.outbox import OutboxPublisher
from commands.settings import persistence_env
from commands.streams import Streams
from commands.webhooks import Webhooks
from ledger.application import Ledger
from ledger.customers import ERASED
from projections.history import customer_history
from projections.stats import default_range, figures, months
from tests.integration.conftest import Shop
from tests.integration.test_outbound_webhooks import KEY, Receiver

PEOPLE = {
    "Annabel Quixote": ("annabel.quixote@example.com", "+442071234567"),
    "Bartholomew Zylstra": ("b.zylstra@example.net", "+4915112345678"),
    "Cordelia Wexford": ("cordelia@wexford.example", None),
}


def on(month: int, day: int) -> datetime:
    return datetime(2025, month, day, 9, tzinfo=UTC)


def onboard(shop: Shop) -> dict[str, UUID]:
    """The three customers, each with a card and a subscription, billed to May."""
    ids = {}
    for plan, (name, (email, phone)) in zip(["basic", "pro", "basic"], PEOPLE.items(), strict=True):
        reply = shop.send(s.RegisterCustomer, email=email, name=name, currency="EUR", phone=phone)
        ids[name] = UUID(reply["customer_id"])
        shop.card(ids[name])
        shop.subscribe(ids[name], plan)
    shop.send(
        s.ChangeCustomerContact,
        customer_id=ids["Cordelia Wexford"],
        email="cordelia.w@wexford.example",
        name="Cordelia Wexford",
    )
    shop.pay()
    for month in (2, 3, 4, 5):
        shop.run_until(on(month, 28))
    return ids


def secrets() -> list[bytes]:
    """Everything personal the customers gave: emails, names (whole and each part), phones."""
    found = set()
    for name, (email, phone) in PEOPLE.items():
        found |= {email, "cordelia.w@wexford.example", name, *name.split()}
        if phone:
            found.add(phone.removeprefix("+"))
    return sorted(text.encode() for text in found)


def raw_dump(database_url: str) -> bytes:
    """The database as an intruder with a copy would read it: the SQLite file (with its
    write-ahead log), or pg_dump of the schema."""
    env = persistence_env(database_url)
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        db = Path(env["SQLITE_DBNAME"])
        return b"".join(p.read_bytes() for p in db.parent.glob(f"{db.name}*") if p.suffix != ".key")
    url = f"postgresql://{env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}"
    dumped = subprocess.run(
        ["pg_dump", f"{url}/{env['POSTGRES_DBNAME']}", "-n", env["POSTGRES_SCHEMA"]],
        capture_output=True,
        check=True,
    )
    return dumped.stdout


def stored_rows(ledger: Ledger) -> list[tuple[int, UUID | str, int, str, bytes]]:
    rows = ledger.recorder.select_notifications(1, 1_000_000)
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in rows]


def test_a_dump_of_the_database_holds_no_customer_s_email_name_or_phone(
    shop: Shop, database_url: str
) -> None:
    onboard(shop)
    shop.projector.catch_up()
    dump = raw_dump(database_url)

    # pg_dump writes bytea (the events' state) as hex: each text is looked for as it is
    # and as hex.
    def found(text: bytes) -> bool:
        return text in dump or text.hex().encode() in dump

    assert found(b"sealed:1:")  # the dump holds the events, their personal data sealed
    assert found(b"Renewed")
    assert [secret for secret in secrets() if found(secret)] == []


def test_erasure_leaves_the_ledger_stats_and_chain_whole_and_billing_goes_on(
    shop: Shop, database_url: str
) -> None:
    ids = onboard(shop)
    ann, bart = ids["Annabel Quixote"], ids["Bartholomew Zylstra"]
    db = shop.projector.database
    shop.projector.catch_up()
    start, end = default_range(db)
    stats_before = (figures(db, "EUR", start, end), months(db, "EUR", start, end))
    rows_before = stored_rows(shop.ledger)

    assert shop.send(s.EraseCustomer, customer_id=ann) == {
        "customer_id": str(ann),
        "erased": True,
    }
    shop.projector.catch_up()

    customer = shop.ledger.customer(ann)
    assert (customer.email, customer.name, customer.phone, customer.erased) == (
        ERASED,
        ERASED,
        None,
        True,
    )
    assert shop.ledger.customer(bart).name == "Bartholomew Zylstra"
    # Not one stored byte changed: the erasure is one event more, and the chain holds.
    assert stored_rows(shop.ledger)[: len(rows_before)] == rows_before
    assert verify(chain_recorder(shop.ledger)).intact
    assert (figures(db, "EUR", start, end), months(db, "EUR", start, end)) == stats_before
    history = customer_history(db, ann)
    assert history[-1].kind == "customer.erased"
    assert [line.kind for line in history].count("invoice.payment_succeeded") == 4

    # Her subscription is billed and paid on: the ledger keeps its customer.
    shop.run_until(on(6, 28))
    shop.projector.catch_up()
    paid = [line for line in customer_history(db, ann) if line.kind == "invoice.payment_succeeded"]
    assert len(paid) == 5
    assert paid[-1].occurred_at > history[-1].occurred_at
    with pytest.raises(Exception, match="erased"):
        shop.subscribe(ann, "pro")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


def published(client: redis.Redis, streams: Streams) -> list[dict[str, Any]]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(streams.events))
    return [json.loads(fields[b"data"]) for _, fields in entries]


def test_integration_events_published_after_the_erasure_show_erased(
    shop: Shop, client: redis.Redis, streams: Streams
) -> None:
    ids = onboard(shop)
    ann = ids["Annabel Quixote"]
    shop.send(s.EraseCustomer, customer_id=ann)
    # The outbox had not run yet: all of her events are published after the erasure.
    OutboxPublisher(shop.ledger, client, shop.clock, streams).run()

    events = published(client, streams)
    created = {e["customer_id"]: e["data"] for e in events if e["type"] == "customer.created"}
    assert (created[str(ann)]["email"], created[str(ann)]["name"]) == (ERASED, ERASED)
    assert created[str(ids["Cordelia Wexford"])]["name"] == "Cordelia Wexford"
    erased = [e for e in events if e["type"] == "customer.erased"]
    assert [(e["customer_id"], e["data"]) for e in erased] == [
        (str(ann), {"customer_id": str(ann)})
    ]
    mine = json.dumps([e for e in events if e["customer_id"] == str(ann)]).encode()
    assert [secret for secret in secrets() if secret in mine] == []


def test_webhook_deliveries_of_an_erased_customer_lose_her_personal_data(
    shop: Shop,
    client: redis.Redis,
    streams: Streams,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUBLEDGER_WEBHOOK_SIGNING_KEY", KEY)
    crm = Receiver(httpserver)
    crm.answer = lambda _: Response("down", 503)
    outbox = OutboxPublisher(shop.ledger, client, shop.clock, streams)
    database = shop.projector.database
    webhooks = Webhooks(
        shop.ledger, database, client, shop.clock, streams, SecretStr(KEY), timeout=1.0
    )

    def tick() -> None:
        outbox.run()
        webhooks.run()

    tick()  # starts the follower at the end of the stream
    shop.send(s.RegisterWebhook, url=crm.url, event_types=["customer.*"])
    ann = shop.customer(with_card=False)  # Ann, ann@example.com
    bob = UUID(
        shop.send(s.RegisterCustomer, email="bob@example.com", name="Bob", currency="EUR")[
            "customer_id"
        ]
    )
    tick()  # queued, then refused by the CRM: pending
    assert len(crm.requests) == 2

    shop.send(s.EraseCustomer, customer_id=ann)
    crm.answer = lambda _: Response("", 200)
    shop.clock.advance_to(shop.clock.now() + timedelta(minutes=1))
    tick()  # the erasure is read, her pending delivery scrubbed, then retried

    bodies = {
        str(key): json.loads(body)
        for key, body in database.query(
            "SELECT ordering_key, body FROM webhook_deliveries WHERE event_type = ?",
            ("customer.created",),
        )
    }
    assert (bodies[str(ann)]["data"]["email"], bodies[str(ann)]["data"]["name"]) == (
        ERASED,
        ERASED,
    )
    assert bodies[str(bob)]["data"]["email"] == "bob@example.com"
    sent = [e for e in crm.events() if e["type"] == "customer.created"]
    assert {e["customer_id"]: e["data"]["email"] for e in sent[2:]} == {
        str(ann): ERASED,
        str(bob): "bob@example.com",
    }
    assert [e["type"] for e in crm.events()][-1] == "customer.erased"
    webhooks.close()
