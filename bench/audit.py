"""``audit``: the auditors' work over a ledger of >= 200,000 stored events on PostgreSQL,
each measurement next to raw psycopg doing the same reads in the same run.

Each repetition, in a schema of its own: ``bench.population.populate`` stores ``--count``
events (at least 200,000), untimed. Then each of ``MEASUREMENTS`` in turn over that same
ledger; the first is the benchmark's own line, the others its variants (``audit-<name>``).
A new measurement is a function ``(ledger, scratch) -> Sample`` added to ``MEASUREMENTS``.

- verify (the ``audit`` line): ``commands.audit.verify`` walks the whole chain: pages of
  ``select_chain`` through the ledger's recorder, each row's link recomputed from the one
  before and compared. Raw: one plain psycopg connection reads the same columns of the
  same rows in order through a server-side cursor (10,000 rows per fetch) and hashes each
  with hashlib by the same recipe, comparing as it goes; no objects.
- replay (``audit-replay``): one more customer, on a daily plan for ``ACCOUNT_DAYS`` days
  with every invoice paid (a renewal, an invoice, its payment request and its success a
  day: 10,000 events in one account, stored untimed), replayed ``REPLAYS`` times by
  ``commands.audit_replay.replay`` as of the middle of its history: its rows selected by
  account, decoded, and folded up to the instant. Raw: plain psycopg selects the same
  rows (position, id, version, topic, state) by account, no decoding. Reported as events
  per second and, after the ratio, the median milliseconds of each side (``ms``,
  ``raw_ms``).
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count
from time import perf_counter
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from bench import Options, Scratch, register, scratch_schema
from bench.population import populate
from bench.report import Rate, Sample
from commands import schemas as s
from commands.accounts import account_of
from commands.audit import chain_recorder, verify
from commands.audit_replay import replay
from commands.bootstrap import bootstrap
from commands.dispatch import handle
from ledger.application import Ledger
from ledger.chain import GENESIS
from ledger.clock import SimulatedClock

MIN_EVENTS = 200_000
FETCH = 10_000
CHAIN_COLUMNS = (
    "notification_id, originator_id, originator_version, topic, account_id, state, chain_hash"
)


def measure_verify(ledger: Ledger, scratch: Scratch) -> Sample:
    began = perf_counter()
    report = verify(chain_recorder(ledger))
    ours = Rate(report.checked, perf_counter() - began)
    if not report.intact:
        raise AssertionError(f"the benchmark's chain is broken: {report.broken}")

    no_account = bytes(16)
    with psycopg.connect(**scratch.connect_kwargs) as conn:
        query = sql.SQL("SELECT {} FROM {} ORDER BY notification_id").format(
            sql.SQL(CHAIN_COLUMNS), scratch.table("ledger_events")
        )
        began = perf_counter()
        checked, previous = 0, GENESIS
        with conn.cursor(name="raw_verify") as cursor:
            cursor.itersize = FETCH
            cursor.execute(query)
            for _, originator_id, version, topic, account_id, state, chain_hash in cursor:
                topic_bytes = topic.encode()
                digest = hashlib.sha256(previous)
                digest.update(originator_id.bytes)
                digest.update(version.to_bytes(8, "big", signed=True))
                digest.update(len(topic_bytes).to_bytes(4, "big"))
                digest.update(topic_bytes)
                digest.update(account_id.bytes if account_id is not None else no_account)
                digest.update(len(state).to_bytes(4, "big"))
                digest.update(state)
                if digest.digest() != chain_hash:
                    raise AssertionError(f"raw: the chain breaks at {checked + 1}")
                previous, checked = chain_hash, checked + 1
        raw = Rate(checked, perf_counter() - began)
    return Sample(ours, raw)


ACCOUNT_DAYS = 2_500
REPLAYS = 5
ACCOUNT_START = datetime(2020, 1, 1, tzinfo=UTC)


def long_account(ledger: Ledger) -> UUID:
    """A customer on a daily plan for ``ACCOUNT_DAYS`` days, every invoice paid a minute
    after it was issued; its days are billed in one go (as a subscription long left alone
    is brought up to date) and saved in one transaction."""
    clock = SimulatedClock(ACCOUNT_START)
    numbers = count(1)

    def send(command: type[s.Command], **fields: Any) -> dict[str, Any]:
        return handle(command(command_id=f"long-{next(numbers)}", **fields), ledger, clock)

    send(s.RegisterPlan, code="daily", name="Daily")
    send(s.AddPrice, plan_code="daily", currency="EUR", amount=100, interval="day")
    registered = send(s.RegisterCustomer, email="a@example.com", name="A", currency="EUR")
    customer_id = UUID(registered["customer_id"])
    send(
        s.AddPaymentMethod,
        customer_id=customer_id,
        payment_method_id="pm_1",
        token="tok_1",
        last4="4242",
        exp_month=12,
        exp_year=2199,
    )
    started = send(s.StartSubscription, customer_id=customer_id, plan_code="daily", interval="day")
    sub = ledger.subscription(UUID(started["subscription_id"]))
    end = ACCOUNT_START + timedelta(days=ACCOUNT_DAYS, hours=1)
    account = account_of(ledger, sub, ledger.customer(customer_id), end)
    for invoice in account.invoices:
        paid_at = invoice.modified_on + timedelta(minutes=1)
        invoice.record_success(1, f"ch_{invoice.id.hex}", paid_at)
    ledger.save(*account.changed())
    return customer_id


def measure_replay(ledger: Ledger, scratch: Scratch) -> Sample:
    customer_id = long_account(ledger)
    middle = ACCOUNT_START + timedelta(days=ACCOUNT_DAYS // 2)
    ours: list[float] = []
    for _ in range(REPLAYS):
        began = perf_counter()
        account = replay(ledger, customer_id, middle)
        ours.append(perf_counter() - began)
    raw: list[float] = []
    with psycopg.connect(**scratch.connect_kwargs) as conn:
        query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {} WHERE account_id = %s ORDER BY notification_id"
        ).format(scratch.table("ledger_events"))
        for _ in range(REPLAYS):
            began = perf_counter()
            rows = conn.execute(query, (customer_id,), prepare=True).fetchall()
            raw.append(perf_counter() - began)
    if len(rows) != account.stored:
        raise AssertionError(f"raw read {len(rows)} rows, the replay {account.stored}")
    mine, theirs = statistics.median(ours), statistics.median(raw)
    return Sample(
        Rate(account.stored, mine),
        Rate(len(rows), theirs),
        figures={"ms": mine * 1000, "raw_ms": theirs * 1000},
    )


MEASUREMENTS: dict[str, Callable[[Ledger, Scratch], Sample]] = {
    "verify": measure_verify,
    "replay": measure_replay,
}


@register(
    "audit",
    "verify the audit chain of >= 200,000 stored events; replay a 10,000-event account",
    "events",
)
def measure(options: Options) -> Sample:
    events = max(options.count, MIN_EVENTS)
    with scratch_schema(options.database_url) as scratch, bootstrap(scratch.database_url) as ledger:
        stored = populate(ledger, events, log=options.log).total()
        options.log(f"audit: {stored:,} events stored")
        samples = {name: measured(ledger, scratch) for name, measured in MEASUREMENTS.items()}
    first, *others = samples
    return replace(samples[first], variants={name: samples[name] for name in others})
