"""``billing``: a billing run that renews due subscriptions on PostgreSQL, next to raw
psycopg inserting as many rows in batches of 100.

Each repetition, in a schema of its own, untimed: ``--count`` customers (at least 20,000)
each with a card and an active monthly subscription, saved in bulk; the simulated clock
moves one month on; the projections catch up, so that ``due_work`` lists every renewal.

Timed, ours: one ``BillingClock.tick()`` (every subscription renewed and invoiced, with
its payment request, through ``commands.lifecycle``) and one ``PaymentProcessor.run()``
(every invoice charged through the sandbox gateway and the answer recorded). The figure
is events stored per second: four per renewal (Renewed, Issued, PaymentRequested,
PaymentSucceeded).

Raw, in the same repetition: one plain psycopg connection does that run's database work.
For each transaction ours wrote, in order (found by the rows' ``xmin``), it first selects
the stored rows of the aggregates ours loaded for it, one query per kind as ours (a
renewal batch: its subscriptions, then their customers; a payment batch: its invoices,
then their customers), then inserts the very rows ours stored in that transaction (same
ids, versions, topics, state bytes) into a table shaped like eventsourcing's, under the
same EXCLUSIVE table lock. Raw decodes, decides and charges nothing: the ratio charges all
of the decoding, deciding, charging and encoding to us. (Until November 2026 raw read
nothing and inserted 100 rows per transaction whatever ours did; ``insert_only`` in the
figures is our ratio to that old baseline.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import psycopg
from psycopg import sql

from bench import Options, Scratch, register, scratch_schema
from bench.commands import (
    COLUMNS,
    EVENTS_TABLE,
    RAW_TABLE,
    create_raw_table,
    insert_statement,
    last_notification_id,
    stored_transactions,
)
from bench.report import Rate, Sample
from commands import schemas as s
from commands.billing_clock import BillingClock
from commands.bootstrap import bootstrap, projector
from commands.dispatch import handle
from commands.payments import PaymentProcessor
from gateways.port import Gateways
from gateways.sandbox import SandboxGateway
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.customers import Customer, PaymentMethod
from ledger.subscriptions import Subscription

MIN_SUBSCRIPTIONS = 20_000
START = datetime(2025, 1, 1, tzinfo=UTC)
SAVE_BATCH = 500
RAW_BATCH = 100


def populate(ledger: Ledger, clock: SimulatedClock, count: int) -> None:
    """``count`` customers with a card and an active monthly subscription, saved in bulk
    (set-up, not billing: the signup invoices are left out)."""
    handle(s.RegisterPlan(command_id="plan", code="pro", name="Pro"), ledger, clock)
    handle(
        s.AddPrice(command_id="price", plan_code="pro", currency="EUR", amount=1999),
        ledger,
        clock,
    )
    price = ledger.plan("pro").active_prices[0]
    now = clock.now()
    batch: list[Customer | Subscription] = []
    for i in range(count):
        customer = Customer.register(
            uuid5(NAMESPACE_URL, f"bench:customer:{i}"), f"c{i}@bench.example", f"C {i}", "EUR", now
        )
        card = PaymentMethod(f"pm_{i}", "sandbox", f"tok_bench_{i}", "visa", "4242", 12, 2030)
        customer.add_payment_method(card, True, now)
        sub = Subscription.start(uuid5(NAMESPACE_URL, f"bench:sub:{i}"), customer.id, price, now, 0)
        batch += [customer, sub]
        if len(batch) >= SAVE_BATCH:
            ledger.save(*batch)
            batch = []
    ledger.save(*batch)


def raw_inserts(conn: psycopg.Connection[Any], scratch: Scratch, after: int) -> Rate:
    """The old baseline: the rows ours stored after ``after``, inserted again 100 per locked
    transaction, nothing read."""
    rows = [r for t in stored_transactions(conn, scratch, after, 2**62) for r in t]
    table = scratch.table(RAW_TABLE)
    lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table)
    batches = [rows[i : i + RAW_BATCH] for i in range(0, len(rows), RAW_BATCH)]
    started = perf_counter()
    for chunk in batches:
        with conn.transaction():
            conn.execute(lock, prepare=True)
            conn.execute(insert_statement(table, len(chunk)), [v for row in chunk for v in row])
    rate = Rate(len(rows), perf_counter() - started)
    conn.execute(sql.SQL("TRUNCATE {}").format(table))
    return rate


def raw_billing(
    conn: psycopg.Connection[Any], scratch: Scratch, after: int, customers: dict[UUID, UUID]
) -> Rate:
    """The run's database work (see the module's docstring); ``customers`` gives each
    subscription's customer."""
    transactions = stored_transactions(conn, scratch, after, 2**62)
    # Whose rows each transaction's loads read: what it renewed or paid, and their customers.
    for rows in transactions:
        for originator, _, topic, state in rows:
            if topic.endswith("Invoice.Issued"):
                subscription = UUID(json.loads(state)["subscription_id"]["_data_"])
                customers[originator] = customers[subscription]
    work = []
    for rows in transactions:
        loaded = [r[0] for r in rows if r[2].endswith(("Subscription.Renewed", "PaymentSucceeded"))]
        work.append((loaded, [customers[a] for a in loaded], rows))
    table = scratch.table(RAW_TABLE)
    lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table)
    select = sql.SQL(
        f"SELECT {COLUMNS} FROM {{}} WHERE originator_id = ANY(%b) "
        "ORDER BY originator_id, originator_version"
    ).format(scratch.table(EVENTS_TABLE))
    started = perf_counter()
    for aggregates, owners, rows in work:
        conn.execute(select, (aggregates,), prepare=True).fetchall()
        conn.execute(select, (owners,), prepare=True).fetchall()
        with conn.transaction():
            conn.execute(lock, prepare=True)
            conn.execute(insert_statement(table, len(rows)), [v for row in rows for v in row])
    return Rate(sum(len(rows) for rows in transactions), perf_counter() - started)


@register("billing", "renew >= 20,000 due subscriptions: invoice, charge, record", "events")
def measure(options: Options) -> Sample:
    count = max(options.count, MIN_SUBSCRIPTIONS)
    with (
        scratch_schema(options.database_url) as scratch,
        psycopg.connect(**scratch.connect_kwargs, autocommit=True) as conn,
        bootstrap(scratch.database_url) as ledger,
        projector(ledger, scratch.database_url) as projections,
    ):
        clock = SimulatedClock(START)
        populate(ledger, clock, count)
        clock.advance(timedelta(days=32))
        projections.catch_up()
        gateway = SandboxGateway()
        processor = PaymentProcessor(
            ledger, Gateways([gateway]), projections.database, clock, wait=lambda *_: None
        )
        before = last_notification_id(conn, scratch)
        started = perf_counter()
        ticked = BillingClock(ledger, projections, clock).tick()
        paid = processor.run()
        seconds = perf_counter() - started
        stored = last_notification_id(conn, scratch) - before
        options.log(
            f"  billing: {ticked.subscriptions:,} renewed, {paid.charged:,} charged, "
            f"{stored:,} events in {seconds:.1f} s"
        )
        if paid.charged != count or len(gateway.charges()) != count:
            raise RuntimeError(f"expected {count} charges, got {paid.charged}")
        create_raw_table(conn, scratch)
        insert_only = raw_inserts(conn, scratch, before)
        raw = raw_billing(conn, scratch, before, customers_of(count))
    ours = Rate(stored, seconds)
    return Sample(ours, raw, figures={"insert_only": ours.per_second / insert_only.per_second})


def customers_of(count: int) -> dict[UUID, UUID]:
    """Each subscription ``populate`` started, with its customer."""
    return {
        uuid5(NAMESPACE_URL, f"bench:sub:{i}"): uuid5(NAMESPACE_URL, f"bench:customer:{i}")
        for i in range(count)
    }
