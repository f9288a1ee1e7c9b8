"""The outbox: every stored domain event reaches the stream ``<prefix>:events`` once, in
the order of the event sequence, with the lifecycle signals marketing needs; a publisher
killed at any moment, or racing another, loses, doubles and reorders nothing. On SQLite
and on PostgreSQL, with real Redis.

The shop's catalog: Basic 10 EUR a month, Pro 20 EUR a month with a 14-day trial. The
clock starts on Fri 31 Jan 2025 at 09:00 UTC.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
import redis
from eventsourcing.domain import Aggregate
from redis.client import Pipeline

from commands import outbox
from commands import schemas as s
from commands.bootstrap import bootstrap
from commands.integration_events import (
    Signal,
    integration_event,
    is_domain_event,
    signal_from_member,
    stable_id,
)
from commands.outbox import OutboxPublisher
from commands.streams import Streams
from ledger.application import Ledger
from ledger.calendar import Interval, IntervalUnit
from ledger.catalog import Plan
from ledger.clock import SimulatedClock
from ledger.customers import Customer
from ledger.money import Money
from ledger.subscriptions import Subscription
from tests.integration.conftest import Shop

ROOT = Path(__file__).parents[2]


def on(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def publisher(shop: Shop, client: redis.Redis, streams: Streams) -> OutboxPublisher:
    return OutboxPublisher(shop.ledger, client, shop.clock, streams)


def published(client: redis.Redis, streams: Streams) -> list[dict[str, Any]]:
    """The stream's events, in order, as a plain Redis client reads them."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(streams.events))
    return [json.loads(fields[b"data"]) for _, fields in entries]


def stored(ledger: Ledger) -> list[tuple[int, str]]:
    """(notification id, integration event id) of every stored domain event, in order."""
    found, start = [], 1
    while page := ledger.recorder.select_notifications(start, 1000):
        for notification in page:
            event = ledger.mapper.to_domain_event(notification)
            if is_domain_event(event):
                found.append((notification.id, stable_id(event)))
        start = page[-1].id + 1
    return found


def types_of(events: list[dict[str, Any]], customer_id: UUID) -> list[str]:
    return [e["type"] for e in events if e["customer_id"] == str(customer_id)]


def signals_waiting(client: redis.Redis, streams: Streams) -> list[Signal]:
    members = cast(list[bytes], client.zrange(streams.scheduled_signals, 0, -1))
    return [signal_from_member(m) for m in members]


def test_a_trial_that_fails_to_pay_and_is_canceled_is_published_in_order_once(
    shop: Shop, publisher: OutboxPublisher, client: redis.Redis, streams: Streams
) -> None:
    ann = shop.customer(with_card=False)
    shop.card(ann, token="tok_chargeDeclined")
    trial = shop.subscribe(ann, "pro")
    bob = shop.customer()
    shop.subscribe(bob)
    shop.pay()
    assert publisher.run() == 5 + 3 + 6  # the catalog, Ann's signup, Bob's paid signup
    shop.clock.advance_to(on(2, 11))
    assert publisher.run() == 1  # three days before Ann's trial ends
    shop.run_until(on(2, 14))  # Ann's trial converts; the charge is declined
    shop.run_until(on(2, 15))  # the first retry is declined too
    shop.send(s.CancelSubscription, subscription_id=trial, when="now")
    assert publisher.run() == 8

    events = published(client, streams)
    assert types_of(events, ann) == [
        "customer.created",
        "payment_method.attached",
        "subscription.created",
        "subscription.trial_ending",
        "subscription.trial_ended",
        "invoice.created",
        "invoice.payment_requested",
        "invoice.payment_failed",
        "subscription.past_due",
        "invoice.payment_requested",
        "invoice.payment_failed",
        "subscription.canceled",
    ]
    assert types_of(events, bob) == [
        "customer.created",
        "payment_method.attached",
        "subscription.created",
        "invoice.created",
        "invoice.payment_requested",
        "invoice.paid",
    ]
    assert [e["type"] for e in events if e["customer_id"] is None] == [
        "plan.created",
        "plan.price_added",
        "plan.created",
        "plan.price_added",
        "plan.price_added",
    ]
    # Every stored domain event once, in the order of the event sequence.
    assert [e["id"] for e in events if e["type"] != "subscription.trial_ending"] == [
        event_id for _, event_id in stored(shop.ledger)
    ]
    assert len({e["id"] for e in events}) == len(events)
    failed = next(e for e in events if e["type"] == "invoice.payment_failed")
    assert failed["occurred_at"] == "2025-02-14T09:00:00+00:00"
    assert failed["data"]["code"] == "card_declined"
    assert failed["data"]["next_retry_at"] == "2025-02-15T09:00:00+00:00"
    canceled = events[-1]
    assert canceled["data"]["subscription_id"] == str(trial)
    assert canceled["data"]["reason"] == "requested"
    assert publisher.position() == stored(shop.ledger)[-1][0]
    # Nothing new: nothing published again.
    assert publisher.run() == 0
    assert client.xlen(streams.events) == len(events)


def test_a_trial_ending_is_sent_three_days_before_the_end_and_once(
    shop: Shop, publisher: OutboxPublisher, client: redis.Redis, streams: Streams
) -> None:
    customer_id = shop.customer()
    sub_id = shop.subscribe(customer_id, "pro")  # the trial ends on 14 Feb at 09:00
    publisher.run()
    shop.clock.advance_to(on(2, 11) - timedelta(seconds=1))
    assert publisher.run() == 0
    shop.clock.advance_to(on(2, 11))
    assert publisher.run() == 1
    assert publisher.run() == 0
    shop.run_until(on(2, 14))
    publisher.run()
    endings = [e for e in published(client, streams) if e["type"] == "subscription.trial_ending"]
    assert endings == [
        {
            "type": "subscription.trial_ending",
            "id": endings[0]["id"],
            "customer_id": str(customer_id),
            "occurred_at": "2025-02-11T09:00:00+00:00",
            "data": {
                "subscription_id": str(sub_id),
                "trial_end": "2025-02-14T09:00:00+00:00",
                "price": {
                    "id": "pro-month-eur-v1",
                    "plan_code": "pro",
                    "amount": {"amount": 2000, "currency": "EUR"},
                    "interval": {"unit": "month", "count": 1},
                    "trial_days": 14,
                    "version": 1,
                },
                "has_payment_method": True,
            },
        }
    ]


def test_no_trial_ending_once_the_trial_is_canceled_or_over(
    shop: Shop, publisher: OutboxPublisher, client: redis.Redis, streams: Streams
) -> None:
    canceled = shop.subscribe(shop.customer(), "pro")
    shop.subscribe(shop.customer(), "pro")
    publisher.run()
    shop.clock.advance(timedelta(days=5))
    shop.send(s.CancelSubscription, subscription_id=canceled, when="now")
    # The publisher was away from before the notice until after the other trial ended.
    shop.run_until(on(2, 14))
    publisher.run()
    types = [e["type"] for e in published(client, streams)]
    assert "subscription.trial_ending" not in types
    assert types.count("subscription.trial_ended") == 1
    # Dropped, not kept: only the cards' expiry notices still wait.
    assert {type(waiting).__name__ for waiting in signals_waiting(client, streams)} == {
        "CardExpiring"
    }


def add_card(shop: Shop, customer_id: UUID, method_id: str, month: int, year: int) -> None:
    shop.send(
        s.AddPaymentMethod,
        customer_id=customer_id,
        payment_method_id=method_id,
        token=f"tok_{method_id}",
        last4="4242",
        exp_month=month,
        exp_year=year,
    )


def test_a_card_expiring_is_sent_on_the_first_of_its_expiry_month_while_unexpired(
    shop: Shop, publisher: OutboxPublisher, client: redis.Redis, streams: Streams
) -> None:
    customer_id = shop.customer()  # pm_1 expires in December 2030
    add_card(shop, customer_id, "pm_feb", 2, 2025)
    add_card(shop, customer_id, "pm_apr", 4, 2025)
    publisher.run()
    # Away all February: by 31 March the February card has expired, nothing to say.
    shop.clock.advance_to(datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC))
    assert publisher.run() == 0
    shop.clock.advance_to(datetime(2025, 4, 1, tzinfo=UTC))
    assert publisher.run() == 1
    assert publisher.run() == 0
    (expiring,) = [e for e in published(client, streams) if e["type"] == "payment_method.expiring"]
    assert expiring["customer_id"] == str(customer_id)
    assert expiring["occurred_at"] == "2025-04-01T00:00:00+00:00"
    assert expiring["data"] == {
        "customer_id": str(customer_id),
        "method": {
            "id": "pm_apr",
            "gateway": "sandbox",
            "brand": "visa",
            "last4": "4242",
            "exp_month": 4,
            "exp_year": 2025,
            "customer_reference": None,
        },
        "is_default": False,
    }
    (waiting,) = signals_waiting(client, streams)
    assert waiting.due == datetime(2030, 12, 1, tzinfo=UTC)


# Crashes and races, over a backlog of a few thousand events


def backlog(ledger: Ledger, people: int = 100, rounds: int = 10) -> None:
    """``people`` customers, each with a trial subscription, then ``rounds`` of a contact
    change and a cancel scheduled and revoked for each of them, round after round, so that
    every customer's events are spread over the whole sequence: 3,202 events."""
    at = on(1, 31)
    plan = Plan.register("pro", "Pro", "", [], at)
    price = plan.add_price(Money(2000, "EUR"), Interval(IntervalUnit.MONTH), 14, at)
    customers = [
        Customer.register(uuid4(), f"c{n}@example.com", f"C{n}", "EUR", at) for n in range(people)
    ]
    subs = [Subscription.start(uuid4(), c.id, price, at, trial_days=None) for c in customers]
    ledger.save(plan, *customers, *subs)
    for round_ in range(rounds):
        at += timedelta(minutes=1)
        for n, (customer, sub) in enumerate(zip(customers, subs, strict=True)):
            customer.change_contact(f"c{n}.{round_}@example.com", f"C{n}", at)
            sub.cancel_at_period_end(at)
            sub.revoke_cancel(at)
        ledger.save(*customers, *subs)


WORKER = """
import sys
import redis
from commands.bootstrap import bootstrap
from commands.outbox import OutboxPublisher
from commands.streams import Streams
from ledger.clock import SystemClock

database_url, redis_url, prefix = sys.argv[1:]
with bootstrap(database_url) as ledger, redis.Redis.from_url(redis_url) as client:
    OutboxPublisher(ledger, client, SystemClock(), Streams(prefix), page=25).run()
"""


def published_ids(client: redis.Redis, streams: Streams) -> list[str]:
    return [e["id"] for e in published(client, streams)]


def test_a_publisher_killed_at_any_moment_resumes_without_loss_doubling_or_reordering(
    ledger: Ledger, database_url: str, redis_url: str, client: redis.Redis, streams: Streams
) -> None:
    backlog(ledger)
    expected = stored(ledger)
    assert len(expected) == 3202
    command = [sys.executable, "-c", WORKER, database_url, redis_url, streams.prefix]
    for kill in range(1, 5):
        worker = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        target = len(expected) * kill // 5
        deadline = time.monotonic() + 15
        while client.xlen(streams.events) < target and worker.poll() is None:
            assert time.monotonic() < deadline, "the publisher made no progress"
            time.sleep(0.002)
        assert worker.poll() is None, "the publisher exited before it was killed"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        ids = published_ids(client, streams)
        # Stream and position moved together: exactly the events up to the position.
        position = int(client.get(streams.outbox_position) or 0)
        assert ids == [event_id for n, event_id in expected if n <= position]
    publisher = OutboxPublisher(ledger, client, SimulatedClock(on(1, 31)), streams, page=25)
    assert publisher.run() == len(expected) - len(ids)
    assert published_ids(client, streams) == [event_id for _, event_id in expected]
    assert publisher.run() == 0


class Crash(Exception):
    """The process died here."""


@pytest.mark.parametrize("point", ["while_building_a_page", "right_after_a_page_committed"])
def test_a_page_is_published_whole_with_its_position_or_not_at_all(
    ledger: Ledger,
    client: redis.Redis,
    streams: Streams,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
) -> None:
    backlog(ledger, people=10, rounds=2)  # 102 events: pages of 25
    expected = stored(ledger)
    calls = count(1)
    if point == "while_building_a_page":

        def dies_on_the_40th(event: Aggregate.Event, customer_id: UUID | None) -> Any:
            if next(calls) == 40:
                raise Crash
            return integration_event(event, customer_id)

        monkeypatch.setattr(outbox, "integration_event", dies_on_the_40th)
    else:
        real_execute = Pipeline.execute

        def dies_after_the_2nd(pipe: Pipeline, raise_on_error: bool = True) -> list[Any]:
            result = real_execute(pipe, raise_on_error)
            if next(calls) == 2:
                raise Crash
            return result

        monkeypatch.setattr(Pipeline, "execute", dies_after_the_2nd)
    clock = SimulatedClock(on(1, 31))
    with pytest.raises(Crash):
        OutboxPublisher(ledger, client, clock, streams, page=25).run()
    monkeypatch.undo()
    ids = published_ids(client, streams)
    position = int(client.get(streams.outbox_position) or 0)
    assert len(ids) == {"while_building_a_page": 25, "right_after_a_page_committed": 50}[point]
    assert ids == [event_id for n, event_id in expected if n <= position]
    restarted = OutboxPublisher(ledger, client, clock, streams, page=25)
    assert restarted.run() == len(expected) - len(ids)
    assert published_ids(client, streams) == [event_id for _, event_id in expected]


def test_two_publishers_at_once_publish_each_event_once(
    ledger: Ledger, database_url: str, client: redis.Redis, streams: Streams
) -> None:
    backlog(ledger, people=30, rounds=5)
    clock = SimulatedClock(on(1, 31))
    ledgers = [bootstrap(database_url) for _ in range(2)]
    publishers = [OutboxPublisher(each, client, clock, streams, page=10) for each in ledgers]
    counts: list[int] = []
    threads = [threading.Thread(target=lambda p=p: counts.append(p.run())) for p in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for each in ledgers:
        each.close()
    expected = [event_id for _, event_id in stored(ledger)]
    assert sum(counts) == len(expected)
    assert published_ids(client, streams) == expected


def test_a_publisher_starting_mid_sequence_finds_the_customers_of_what_it_did_not_see_created(
    shop: Shop, client: redis.Redis, streams: Streams
) -> None:
    customer_id = shop.customer()
    sub_id = shop.subscribe(customer_id)
    shop.pay()
    shop.send(s.CancelSubscription, subscription_id=sub_id, when="period_end")
    issued = next(
        n.id
        for n in shop.ledger.recorder.select_notifications(1, 100)
        if n.topic.endswith(":Invoice.Issued")
    )
    client.set(streams.outbox_position, issued)
    fresh = OutboxPublisher(shop.ledger, client, shop.clock, streams)
    assert fresh.run() == 3
    assert [(e["type"], e["customer_id"]) for e in published(client, streams)] == [
        ("invoice.payment_requested", str(customer_id)),
        ("invoice.paid", str(customer_id)),
        ("subscription.cancel_scheduled", str(customer_id)),
    ]
