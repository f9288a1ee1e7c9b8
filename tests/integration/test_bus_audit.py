"""An adversarial review of the bus: entries, batches, claims and shutdowns that try to
make it lose, double, misorder or misanswer commands, or wedge the node.

Each test of the first part showed a problem, since mended; the second part pins down
what the review found sound.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql
from typer.testing import CliRunner

from commands import handlers
from commands import schemas as s
from commands.accounts import derived_id, subscription_view
from commands.bootstrap import bootstrap
from commands.bus import quote_rejected
from commands.cli import app
from commands.client import request
from commands.dispatch import handle, handle_batch
from commands.schemas import command_adapter
from commands.streams import GROUP, Streams
from commands.wire import read_entry
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.errors import DomainError
from ledger.idempotency import CommandRecord
from ledger.invoices import period_invoice_id
from ledger.postgres_recorder import LeanPostgresApplicationRecorder
from tests.conftest import POSTGRES_URL
from tests.integration.bus_driver import Service, worker_process, worker_thread
from tests.integration.conftest import Shop
from tests.integration.test_batches import MeddlingClock, catalog_and_customer
from tests.integration.test_bus import PLAN, PRICE, customer


def pipelined(service: Service, *commands: dict[str, Any]) -> list[bytes]:
    """Adds ``commands`` in one round trip, so that a worker reads them as one batch."""
    with service.client.pipeline() as pipe:
        for command in commands:
            pipe.xadd(service.streams.commands, {"data": json.dumps(command)})
        return list(pipe.execute())


def replies_within(service: Service, count: int, seconds: float) -> list[dict[str, Any]]:
    """The replies that came within ``seconds`` (fewer than ``count`` if they did not)."""
    deadline = time.monotonic() + seconds
    while service.client.xlen(service.reply_to) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return service.replies()


def answered(service: Service, command_id: str) -> list[tuple[str, str]]:
    """The replies to ``command_id`` so far, as (command id, status)."""
    replies = service.replies()
    return [(r["command_id"], r["status"]) for r in replies if r["command_id"] == command_id]


# What JSON.stringify writes for a string cut in the middle of an emoji: JSON that most
# parsers read (Python's too), but no UTF-8 text: the worker cannot write it back out.
POISON = b'{"type": "plan.create", "command_id": "\\ud83d", "reply_to": "%s"}'


@pytest.fixture
def service(redis_url: str, streams: Streams) -> Service:
    return Service(redis_url, streams)


SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
POSTGRES_ONLY = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


# More fields than Lua's unpack() takes (8,000 values), as a client may add.
MANY_FIELDS = {f"x{n}".encode(): b"" for n in range(5_000)}


def held_by_a_dead_worker(service: Service, fields: dict[bytes, bytes], times: int = 1) -> bytes:
    """Adds an entry that a worker read ``times`` times without answering (it died each
    time) and left pending."""
    client, commands = service.client, service.streams.commands
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP
        client.xgroup_create(commands, GROUP, id="0", mkstream=True)
    entry_id = service.add(fields)
    client.xreadgroup(GROUP, "dead-worker", {commands: ">"})
    client.xclaim(commands, GROUP, "dead-worker", 0, [entry_id], retrycount=times)
    return entry_id


@SQLITE_ONLY
def test_a_command_id_with_a_lone_surrogate_holds_up_no_other_command(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    reply_to = service.reply_to
    with service.client.pipeline() as pipe:
        pipe.xadd(streams.commands, {"data": json.dumps(PLAN | {"reply_to": reply_to})})
        pipe.xadd(streams.commands, {"data": POISON % reply_to.encode()})
        pipe.xadd(streams.commands, {"data": json.dumps(customer(1) | {"reply_to": reply_to})})
        pipe.execute()
    with worker_thread(ledger, clock, redis_url, streams, claim_idle_ms=60_000):
        replies = replies_within(service, 2, 3.0)
        pending = service.pending()
    assert [(r["command_id"], r["status"]) for r in replies if r["command_id"]] == [
        ("plan", "accepted"),
        ("customer-1", "accepted"),
    ]
    assert pending == 0  # the poison is rejected (invalid), not left for a claim


def test_a_worker_starts_whatever_its_pending_entries_hold(
    sqlite_url: str, redis_url: str, streams: Streams, service: Service, tmp_path: Path
) -> None:
    held_by_a_dead_worker(service, {b"data": POISON % service.reply_to.encode()})
    held_by_a_dead_worker(service, MANY_FIELDS | {b"data": json.dumps(customer(1)).encode()}, 5)
    service.send(PLAN)
    node = worker_process(
        sqlite_url, redis_url, streams, tmp_path / "worker.log", bus_claim_idle_ms="50"
    )
    try:
        deadline = time.monotonic() + 10
        while not answered(service, "plan") and node.poll() is None:
            assert time.monotonic() < deadline, "no reply to the plan"
            time.sleep(0.05)
        running = node.poll() is None
    finally:
        node.terminate()
        node.wait(30)
    assert running
    assert answered(service, "plan") == [("plan", "accepted")]


@POSTGRES_ONLY
def test_a_nul_character_in_a_command_never_stops_the_billing_clock(shop: Shop) -> None:
    ann, ben = shop.customer(), shop.customer()
    ann_sub, ben_sub = shop.subscribe(ann), shop.subscribe(ben)
    shop.tick()
    shop.pay()
    # Whatever the bus answers to it (a refusal would do), it must not wedge the node.
    refund = {
        "type": "invoice.refund",
        "command_id": "refund-ann",
        "invoice_id": str(period_invoice_id(ann_sub, 0)),
        "amount": 100,
        "reason": "goodwill\u0000",
    }
    message = read_entry(b"1-0", {b"data": json.dumps(refund).encode()}, Streams())
    if message.command is not None:
        with contextlib.suppress(DomainError):
            handle(message.command, shop.ledger, shop.clock)
    shop.run_until(shop.clock.now() + timedelta(days=31))
    assert shop.ledger.subscription(ben_sub).period.index == 1  # Ben renewed all the same


def lock_events_table(ledger: Ledger, seconds: float) -> threading.Thread:
    """Another session holds the event table for ``seconds`` (as a migration or a VACUUM
    FULL would): the store stalls, then comes back by itself. Returns once it is held."""
    recorder = ledger.recorder
    assert isinstance(recorder, LeanPostgresApplicationRecorder)
    table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    locked = threading.Event()

    def hold() -> None:
        with psycopg.connect(POSTGRES_URL, options="-c lock_timeout=0") as conn:
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            locked.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert locked.wait(5)
    return holder


@POSTGRES_ONLY
def test_a_command_in_hand_is_never_buried_by_its_own_workers_claim(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    with worker_thread(ledger, clock, redis_url, streams, claim_idle_ms=300, max_deliveries=1):
        holder = lock_events_table(ledger, 2.5)
        service.send(PLAN)
        replies = replies_within(service, 1, 6.0)
        holder.join()
    dead = service.entries(streams.dead)
    assert ledger.has_plan("basic")  # applied once the store came back...
    assert [(r["command_id"], r["status"]) for r in replies] == [("plan", "accepted")]
    assert dead == []  # ...so it is no dead letter


@pytest.mark.postgres
def test_a_store_that_stalls_in_the_middle_of_a_batch_is_waited_for(
    postgres_url: str,
    clock: SimulatedClock,
    redis_url: str,
    streams: Streams,
    service: Service,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Waiting on a lock fails after 0.1 s (and eventsourcing's 10 attempts after 3 s),
    # as a read from a server that went away does.
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=100")
    with bootstrap(postgres_url) as ledger:
        # The stall begins once the batch has looked up its command records.
        stalling = MeddlingClock(clock.now(), lambda: lock_events_table(ledger, 4))
        with worker_thread(ledger, stalling, redis_url, streams, claim_idle_ms=60_000):
            service.send(PLAN)
            replies = replies_within(service, 1, 8.0)
            failures = service.client.hgetall(streams.failures)
        assert failures == {}
        assert [(r["command_id"], r["status"]) for r in replies] == [("plan", "accepted")]


@SQLITE_ONLY
def test_finishing_a_batch_acknowledges_only_its_own_entries(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    client = service.client
    client.xgroup_create(streams.commands, GROUP, id="0", mkstream=True)
    # An id a client may choose on a new stream (XADD with an explicit id), held by a
    # worker that died.
    client.xadd(streams.commands, {"data": json.dumps(PLAN)}, id="100000-0")
    client.xreadgroup(GROUP, "dead-worker", {streams.commands: ">"})
    service.send(customer(1))
    with worker_thread(ledger, clock, redis_url, streams, claim_idle_ms=60_000):
        service.wait_for_replies(1)
        time.sleep(0.2)
    # Still waiting for a claim, as a held entry should.
    assert client.xpending(streams.commands, GROUP)["min"] == b"100000-0"


def test_a_restarted_worker_answers_what_it_held_before_anything_new(
    sqlite_url: str, redis_url: str, streams: Streams, service: Service, tmp_path: Path
) -> None:
    client = service.client
    client.xgroup_create(streams.commands, GROUP, id="0", mkstream=True)
    service.send(PLAN)
    client.xreadgroup(GROUP, "node-1", {streams.commands: ">"})  # read, then it crashed
    service.send(PRICE)  # needs the plan
    settings = {"bus_consumer": "node-1", "bus_claim_idle_ms": "30000"}
    node = worker_process(sqlite_url, redis_url, streams, tmp_path / "worker.log", **settings)
    try:
        replies = replies_within(service, 2, 10.0)
    finally:
        node.terminate()
        assert node.wait(30) == 0
    assert [(r["command_id"], r["status"]) for r in replies] == [
        ("plan", "accepted"),
        ("price", "accepted"),
    ]


def test_a_worker_that_loses_its_group_keeps_serving_or_fails_loudly(
    sqlite_url: str, redis_url: str, streams: Streams, service: Service, tmp_path: Path
) -> None:
    node = worker_process(sqlite_url, redis_url, streams, tmp_path / "worker.log")
    try:
        service.send(PLAN)
        assert len(replies_within(service, 1, 10.0)) == 1
        service.client.delete(streams.commands)
        service.send(customer(1))
        deadline = time.monotonic() + 10
        while service.client.xlen(service.reply_to) < 2 and node.poll() is None:
            assert time.monotonic() < deadline, "neither answered nor exited"
            time.sleep(0.05)
        gave_up = node.poll()
    finally:
        node.terminate()
        node.wait(30)
    if gave_up is None:  # it went on serving
        assert [r["command_id"] for r in service.replies()] == ["plan", "customer-1"]
    else:  # a supervisor that restarts on failure must see that it failed
        assert gave_up != 0


@SQLITE_ONLY
def test_an_entry_with_many_fields_is_buried_too(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    fields = MANY_FIELDS | {b"data": json.dumps(PLAN).encode()}
    entry_id = held_by_a_dead_worker(service, fields, 5)
    with worker_thread(ledger, clock, redis_url, streams, claim_idle_ms=50):
        deadline = time.monotonic() + 3
        while not service.client.xlen(streams.dead) and time.monotonic() < deadline:
            time.sleep(0.05)
    [dead] = service.entries(streams.dead)
    assert dead[b"entry_id"] == entry_id
    assert service.pending() == 0


@SQLITE_ONLY
def test_a_dead_letter_names_the_entry_whatever_fields_it_had(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    fields = {b"data": json.dumps(PLAN).encode(), b"entry_id": b"0-1", b"reason": b"none"}
    entry_id = held_by_a_dead_worker(service, fields, 5)
    with worker_thread(ledger, clock, redis_url, streams, claim_idle_ms=50):
        service.wait_until_none_pending(5)
    [dead] = service.entries(streams.dead)
    assert (dead[b"entry_id"], dead[b"deliveries"]) == (entry_id, b"5")
    assert dead[b"reason"].startswith(b"no answer after 5 deliveries")


def test_a_batch_stores_events_in_the_order_its_commands_made_them(
    ledger: Ledger, clock: SimulatedClock
) -> None:
    ann = derived_id("customer", "ann")
    batch = [
        *catalog_and_customer(),  # ends with Ann's signup
        s.ChangeCustomerContact(command_id="ann-2", customer_id=ann, email="a@b.c", name="A"),
    ]
    before = ledger.recorder.max_notification_id() or 0
    handle_batch(batch, ledger, clock)
    stored = [
        type(ledger.mapper.to_domain_event(n)).__qualname__
        for n in ledger.recorder.select_notifications(before + 1, 100)
    ]
    assert stored.index("Customer.ContactChanged") > stored.index("Subscription.Started")


def test_a_batch_never_registers_one_customer_over_another(
    ledger: Ledger, clock: SimulatedClock
) -> None:
    taken = derived_id("customer", "signup-dana")  # known in advance, as the docs say
    imported = s.RegisterCustomer(
        command_id="crm-17", customer_id=taken, email="i@x.io", name="Imported", currency="EUR"
    )
    dana = s.RegisterCustomer(command_id="signup-dana", email="d@x.io", name="D", currency="USD")
    [first, second] = handle_batch([imported, dana], ledger, clock)
    assert first == {"customer_id": str(taken)}
    assert isinstance(second, DomainError), second  # one by one: refused too
    assert (ledger.customer(taken).name, ledger.customer(taken).currency) == ("Imported", "EUR")


@SQLITE_ONLY
def test_a_send_that_timed_out_leaves_no_reply_stream_for_ever(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    with pytest.raises(TimeoutError):
        request(PLAN, redis_url, streams, timeout=0.1)  # no worker yet
    with worker_thread(ledger, clock, redis_url, streams):
        service.wait_until_none_pending()
    left = list(service.client.scan_iter(f"{streams.prefix}:replies:*"))
    assert [key for key in left if service.client.ttl(key) < 0] == []


@SQLITE_ONLY
def test_send_refuses_a_json_naming_another_type(database_url: str) -> None:
    fields = {"type": "plan.create", "code": "basic", "name": "Basic"}
    arguments = ["send", "plan.archive", "--direct", "--json", json.dumps(fields)]
    result = CliRunner().invoke(app, [*arguments, "--database-url", database_url])
    answer = json.loads(result.stdout)
    assert (result.exit_code, answer["error"]) == (2, "invalid_json"), answer
    with bootstrap(database_url) as ledger:
        assert not ledger.has_plan("basic")


# What the review found sound.


def conflicting_commands(subscription_id: str) -> list[dict[str, Any]]:
    """Pauses, resumes, cancels (each on a date of its own) and revokes of one
    subscription in a fixed shuffle, some sent twice (a client's retry). Each one accepted
    changes the subscription: none is accepted without a write that could conflict."""
    kinds = ["subscription.pause", "subscription.resume", "subscription.cancel"]
    kinds.append("subscription.revoke_cancel")
    shuffle = random.Random(5)
    commands = []
    for n in range(60):
        command = {
            "type": kinds[shuffle.randrange(4)],
            "command_id": f"c{n}",
            "subscription_id": subscription_id,
        }
        if command["type"] == "subscription.cancel":
            command["when"] = f"2025-02-10T00:{n:02}:00Z"
        commands.append(command)
    return commands + commands[::7]


@POSTGRES_ONLY
def test_two_batching_workers_on_one_subscription_act_as_one_serial_order(
    ledger: Ledger,
    clock: SimulatedClock,
    redis_url: str,
    streams: Streams,
    service: Service,
    tmp_path: Path,
) -> None:
    """Sound: each entry is answered once, a retry alike, and the accepted commands
    replayed one by one in the order of their records give the same results and state.
    (A refusal writes only its record: it takes effect where it read, which may be
    before a write committed ahead of its record, as with one command at a time.)"""
    setup = catalog_and_customer()
    handle_batch(setup, ledger, clock)
    subscription_id = derived_id("subscription", "signup")
    sent = conflicting_commands(str(subscription_id))
    with (
        worker_thread(ledger, clock, redis_url, streams, consumer="w1", batch=7),
        worker_thread(ledger, clock, redis_url, streams, consumer="w2", batch=7),
    ):
        pipelined(service, *(c | {"reply_to": service.reply_to} for c in sent))
        replies = service.wait_for_replies(len(sent))
        service.wait_until_none_pending()
    assert len(replies) == len(sent)
    given: dict[str, Any] = {}
    for reply in replies:
        answer = reply["result"] if reply["error"] is None else reply["error"]["details"]["rule"]
        assert given.setdefault(reply["command_id"], answer) == answer
    commands = {c.command_id: c for c in setup}
    commands |= {c["command_id"]: command_adapter.validate_python(c) for c in sent}
    notifications = ledger.recorder.select_notifications(1, 10_000)
    records = [
        event
        for event in map(ledger.mapper.to_domain_event, notifications)
        if isinstance(event, CommandRecord.Handled | CommandRecord.Rejected)
    ]
    assert sorted(r.command_id for r in records) == sorted(commands)  # each once
    with bootstrap(f"sqlite:///{tmp_path / 'replay.db'}") as replay:
        for record in records:
            if isinstance(record, CommandRecord.Handled):
                result = handle(commands[record.command_id], replay, clock)
                assert result == given.get(record.command_id, result), record.command_id
        assert subscription_view(replay.subscription(subscription_id)) == subscription_view(
            ledger.subscription(subscription_id)
        )


@SQLITE_ONLY
def test_a_bug_in_the_middle_of_a_batch_spoils_nothing_and_ends_in_dead_letters(
    ledger: Ledger,
    clock: SimulatedClock,
    redis_url: str,
    streams: Streams,
    service: Service,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sound: the batch's other commands are answered; the failing one is claimed again,
    with its reason kept, and buried after the allowed deliveries, never answered."""

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    archive_plan: type[s.Command] = s.ArchivePlan
    monkeypatch.setitem(handlers.HANDLERS, archive_plan, broken)
    archive = {"type": "plan.archive", "command_id": "archive", "plan_code": "basic"}
    reply_to = {"reply_to": service.reply_to}
    [_, buggy, _] = pipelined(service, PLAN | reply_to, archive | reply_to, customer(1) | reply_to)
    with worker_thread(ledger, clock, redis_url, streams, claim_idle_ms=100, max_deliveries=2):
        replies = service.wait_for_replies(2)
        service.wait_until_none_pending(5)
    assert [r["command_id"] for r in replies] == ["plan", "customer-1"]
    [dead] = service.entries(streams.dead)
    assert (dead[b"entry_id"], dead[b"deliveries"]) == (buggy, b"2")
    assert dead[b"reason"] == b"RuntimeError: a bug"
    assert json.loads(dead[b"data"]) == archive | reply_to  # as sent: re-sendable
    assert service.client.hlen(streams.failures) == 0
    assert ledger.command_record("archive") is None
    assert len(service.replies()) == 2  # the buried one never got an answer


@SQLITE_ONLY
def test_odd_entries_are_each_answered_as_documented(
    ledger: Ledger, clock: SimulatedClock, redis_url: str, streams: Streams, service: Service
) -> None:
    """Sound: 'data' wins over '__data__', an empty 'data' is no JSON, fields besides
    'data' are ignored, and a 10 MB entry is refused unread, its record quoting 1 KiB."""
    reply_to = {"reply_to": service.reply_to}
    plan = json.dumps(PLAN | reply_to).encode()
    huge = json.dumps(customer(9) | reply_to | {"name": "x" * 10_000_000}).encode()
    service.add({b"data": plan, b"__data__": b"\x89BIN\r\n\x1a\ngarbage"})
    service.add({b"data": b""})
    service.add({b"data": json.dumps(customer(1) | reply_to).encode(), b"extra": b"\xff"})
    service.add({b"data": huge})
    with worker_thread(ledger, clock, redis_url, streams):
        replies = service.wait_for_replies(2)
        service.wait_until_none_pending()
    assert [(r["command_id"], r["status"]) for r in replies] == [
        ("plan", "accepted"),
        ("customer-1", "accepted"),
    ]
    records = [json.loads(f[b"data"]) for f in service.entries(streams.rejections)]
    assert [r["error"]["code"] for r in records] == ["invalid_json", "too_large"]
    # The first KiB, its personal data redacted: unread past that, not parsed for it.
    assert records[1]["received"] == quote_rejected(huge).decode()
    assert "c9@example.com" not in records[1]["received"]
    assert records[1]["received"].endswith('"name": "redacted"')


class PeekingClock(SimulatedClock):
    """A clock that runs ``peek`` when it is read the second time (by the second
    command of a batch)."""

    def __init__(self, start: datetime, peek: Callable[[], object]) -> None:
        super().__init__(start)
        self.peek, self.reads = peek, 0

    def now(self) -> datetime:
        self.reads += 1
        if self.reads == 2:
            self.peek()
        return super().now()


def test_a_batch_in_hand_is_seen_by_no_other_thread(ledger: Ledger, clock: SimulatedClock) -> None:
    """Sound: while a batch is staged (not saved), the billing clock or the outbox in
    another thread of the process read the store, not the stage."""
    seen: list[bool] = []

    def look_from_another_thread() -> None:
        seen.append(ledger.has_plan("basic"))  # this thread: the stage
        other = threading.Thread(target=lambda: seen.append(ledger.has_plan("basic")))
        other.start()
        other.join()

    plan = s.RegisterPlan(command_id="plan", code="basic", name="Basic")
    price = s.AddPrice(command_id="price", plan_code="basic", currency="EUR", amount=1000)
    answers = handle_batch(
        [plan, price], ledger, PeekingClock(clock.now(), look_from_another_thread)
    )
    assert all(isinstance(a, dict) for a in answers)
    assert seen == [True, False]
    assert ledger.has_plan("basic")
