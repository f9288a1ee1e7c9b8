"""The bus end to end, on real Redis and both backends: services add entries with plain
redis-py (or FastStream's publisher), a worker answers each once on its reply stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import pytest
from faststream.redis import RedisBroker

from commands.accounts import derived_id
from commands.streams import GROUP, Streams
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from tests.integration.bus_driver import Service, worker_thread

PLAN: dict[str, Any] = {
    "type": "plan.create",
    "command_id": "plan",
    "code": "basic",
    "name": "Basic",
}
PRICE: dict[str, Any] = {
    "type": "plan.add_price",
    "command_id": "price",
    "plan_code": "basic",
    "currency": "EUR",
    "amount": 1000,
}


def customer(n: int) -> dict[str, Any]:
    return {
        "type": "customer.register",
        "command_id": f"customer-{n}",
        "email": f"c{n}@example.com",
        "name": f"Customer {n}",
        "currency": "EUR",
    }


def card(n: int) -> dict[str, Any]:
    return {
        "type": "customer.add_payment_method",
        "command_id": f"card-{n}",
        "customer_id": str(derived_id("customer", f"customer-{n}")),
        "payment_method_id": "pm_1",
        "token": "tok_visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2030,
    }


def signup(n: int) -> dict[str, Any]:
    return {
        "type": "subscription.start",
        "command_id": f"signup-{n}",
        "customer_id": str(derived_id("customer", f"customer-{n}")),
        "plan_code": "basic",
    }


def by_id(replies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {reply["command_id"]: reply for reply in replies}


@pytest.fixture
def service(redis_url: str, streams: Streams) -> Service:
    return Service(redis_url, streams)


def test_plain_xadd_clients_get_a_reply_per_command(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    commands = [PLAN, PRICE, customer(1), card(1), signup(1)]
    subscription_id = str(derived_id("subscription", "signup-1"))
    commands += [
        {"type": "quote.preview", "command_id": "quote", "plan_code": "basic", "currency": "EUR"},
        {"type": "subscription.cancel", "command_id": "cancel", "subscription_id": subscription_id},
    ]
    with worker_thread(ledger, clock, redis_url, streams):
        for command in commands:
            service.send(command)
        replies = service.wait_for_replies(len(commands))
    assert [r["command_id"] for r in replies] == [c["command_id"] for c in commands]
    assert {r["status"] for r in replies} == {"accepted"}, replies
    assert all(r["error"] is None for r in replies)
    answers = by_id(replies)
    assert answers["price"]["result"] == {"price_id": "basic-month-eur-v1", "version": 1}
    assert answers["customer-1"]["result"] == {
        "customer_id": str(derived_id("customer", "customer-1"))
    }
    assert answers["signup-1"]["result"]["status"] == "active"
    assert answers["signup-1"]["result"]["invoices"][0]["total"] == {
        "amount": 1000,
        "currency": "EUR",
    }
    assert answers["quote"]["result"]["recorded"] is False
    assert answers["quote"]["result"]["invoices"][0]["total"]["amount"] == 1000
    assert answers["cancel"]["result"]["cancel_at"] == answers["signup-1"]["result"]["period_end"]
    sub = ledger.subscription(UUID(subscription_id))
    assert sub.cancel_at is not None
    assert service.pending() == 0
    assert service.entries(streams.rejections) == []


def test_fastStream_publishers_are_answered_too(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    async def publish() -> None:
        async with RedisBroker(redis_url) as broker:
            for command in (PLAN, customer(1)):
                await broker.publish(
                    command | {"reply_to": service.reply_to}, stream=streams.commands
                )

    with worker_thread(ledger, clock, redis_url, streams):
        asyncio.run(publish())
        replies = service.wait_for_replies(2)
    assert [(r["command_id"], r["status"]) for r in replies] == [
        ("plan", "accepted"),
        ("customer-1", "accepted"),
    ]
    assert ledger.has_plan("basic")


def test_garbage_is_rejected_with_a_code_and_never_stops_the_worker(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    reply_to = service.reply_to
    bad: list[tuple[dict[bytes, bytes], str | None]] = [
        ({b"payload": b"{}"}, None),  # no data field
        ({b"data": b"\xff\xfe\x00garbage"}, None),
        ({b"data": b"{not json"}, None),
        ({b"data": b"[1, 2]"}, None),
        ({b"data": b"[" * 40_000}, None),
        ({b"data": json.dumps(PLAN | {"name": "x" * 70_000}).encode()}, None),
    ]
    named: list[tuple[dict[str, Any], str]] = [
        ({"type": "plan.delete", "command_id": "g1"}, "unknown_type"),
        ({"command_id": "g2", "code": "x"}, "validation_failed"),
        ({"type": "plan.create", "command_id": "g3"}, "validation_failed"),
        (PRICE | {"command_id": "g4", "amount": 19.99}, "validation_failed"),
        (PRICE | {"command_id": "g5", "surprise": True}, "validation_failed"),
        (PRICE | {"command_id": "g6"}, "not_found"),  # no such plan yet
        (
            {"type": "subscription.pause", "command_id": "g7", "subscription_id": str(UUID(int=7))},
            "not_found",
        ),
        (card(9) | {"command_id": "g8", "token": "4242424242424242"}, "not_found"),
    ]
    with worker_thread(ledger, clock, redis_url, streams):
        before = ledger.recorder.max_notification_id() or 0
        for fields, _ in bad:
            service.add(fields)
        for command, _ in named:
            service.send(command)
        service.send(PLAN | {"reply_to": streams.commands}, reply=False)
        service.send(PLAN)  # the worker still works
        replies = service.wait_for_replies(len(named) + 1)
        after = ledger.recorder.max_notification_id() or 0
    answers = by_id(replies)
    for command, code in named:
        reply = answers[command["command_id"]]
        assert (reply["status"], reply["error"]["code"]) == ("rejected", code), reply
        assert reply["result"] is None
    assert answers["g5"]["error"]["details"] == {
        "errors": [{"loc": "surprise", "msg": "Extra inputs are not permitted"}]
    }
    assert answers["g4"]["error"]["details"]["errors"][0]["loc"] == "amount"
    assert answers["plan"]["status"] == "accepted"
    # Every rejection is kept, with its code, whether or not it could be answered.
    records = [json.loads(f[b"data"]) for f in service.entries(streams.rejections)]
    codes = [r["error"]["code"] for r in records]
    assert codes[: len(bad)] == [
        "invalid_json",
        "invalid_json",
        "invalid_json",
        "invalid_json",
        "invalid_json",
        "too_large",
    ]
    assert codes[len(bad) :] == [code for _, code in named] + ["validation_failed"]
    assert records[-1]["error"]["details"]["errors"][0]["loc"] == "reply_to"
    # Only the one valid command wrote anything: the plan, and its command record.
    assert after - before == 2
    assert service.pending() == 0
    assert reply_to not in (streams.commands,)


def test_a_reply_to_that_is_no_stream_gets_no_reply_and_spoils_nothing(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    not_a_stream = f"{streams.prefix}-a-string"
    service.client.set(not_a_stream, "x")
    with service.client.pipeline() as pipe:
        for command in (
            PLAN | {"reply_to": not_a_stream},
            customer(1) | {"reply_to": service.reply_to},
        ):
            pipe.xadd(streams.commands, {"data": json.dumps(command)})
        pipe.execute()
    with worker_thread(ledger, clock, redis_url, streams):
        [reply] = service.wait_for_replies(1)
        service.wait_until_none_pending()
    assert (reply["command_id"], reply["status"]) == ("customer-1", "accepted")
    assert ledger.has_plan("basic")
    assert service.client.get(not_a_stream) == b"x"


def test_the_same_command_twice_is_applied_once_and_answered_alike(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    with worker_thread(ledger, clock, redis_url, streams):
        service.send(PLAN)
        service.send(PRICE)
        service.wait_for_replies(2)
        # In one read (one batch), and again later.
        service.send(customer(1))
        service.send(customer(1))
        service.wait_for_replies(4)
        service.send(customer(1))
        service.send(customer(1) | {"email": "other@example.com"})
        replies = service.wait_for_replies(6)
    first, *again = replies[2:5]
    assert first["status"] == "accepted"
    assert again == [first, first]
    assert replies[5]["error"]["code"] == "conflict"
    assert replies[5]["error"]["details"] == {"rule": "command_id_reused"}
    assert ledger.event_counts_by_type()["Customer.Registered"] == 1


def test_a_batch_keeps_each_commands_effects_and_no_trace_of_a_refused_one(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    """One read, one transaction: later commands see earlier ones; a refusal in the
    middle spoils nothing."""
    with service.client.pipeline() as pipe:
        for command in (PLAN, PRICE, customer(1), card(1), signup(1)):
            pipe.xadd(
                streams.commands, {"data": json.dumps(command | {"reply_to": service.reply_to})}
            )
        refused = signup(1) | {"command_id": "refused", "plan_code": "basic", "currency": "USD"}
        pipe.xadd(streams.commands, {"data": json.dumps(refused | {"reply_to": service.reply_to})})
        pipe.xadd(
            streams.commands,
            {"data": json.dumps(customer(2) | {"reply_to": service.reply_to})},
        )
        pipe.execute()
    with worker_thread(ledger, clock, redis_url, streams):
        replies = service.wait_for_replies(7)
    statuses = [(r["command_id"], r["status"]) for r in replies]
    assert statuses == [
        ("plan", "accepted"),
        ("price", "accepted"),
        ("customer-1", "accepted"),
        ("card-1", "accepted"),
        ("signup-1", "accepted"),
        ("refused", "rejected"),
        ("customer-2", "accepted"),
    ]
    assert replies[5]["error"]["details"]["rule"] == "currency_mismatch"
    counts = ledger.event_counts_by_type()
    assert counts["Subscription.Started"] == 1
    assert counts["Customer.Registered"] == 2
    assert counts["CommandRecord.Rejected"] == 1  # the refusal is the id's final answer


def test_a_dead_workers_pending_entries_are_claimed_and_the_hopeless_buried(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    client = service.client
    client.xgroup_create(streams.commands, GROUP, id="0", mkstream=True)
    orphan = service.send(PLAN)
    hopeless = service.send(customer(1))
    # A worker that read both and died before answering.
    client.xreadgroup(GROUP, "dead-worker", {streams.commands: ">"})
    # One was already delivered many times, the last failure recorded.
    client.xclaim(streams.commands, GROUP, "dead-worker", 0, [hopeless], retrycount=5)
    client.hset(streams.failures, hopeless, "OperationalError: the database went away")
    with worker_thread(ledger, clock, redis_url, streams, claim_idle_ms=50, max_deliveries=5):
        replies = service.wait_for_replies(1)
        service.wait_until_none_pending()
    assert [(r["command_id"], r["status"]) for r in replies] == [("plan", "accepted")]
    [dead] = service.entries(streams.dead)
    assert dead[b"entry_id"] == hopeless
    assert dead[b"reason"] == b"OperationalError: the database went away"
    assert dead[b"deliveries"] == b"5"
    assert json.loads(dead[b"data"])["command_id"] == "customer-1"  # as sent: re-sendable
    assert client.hlen(streams.failures) == 0
    assert not ledger.exists(derived_id("customer", "customer-1"))
    assert orphan != hopeless
