"""``commands``: commands per second through the handlers on PostgreSQL, next to raw psycopg.

Ours, in each repetition (a fresh schema, a fresh ledger from ``commands.bootstrap``):
``commands.dispatch.handle`` with a ``SimulatedClock``, one command per transaction,
idempotency included (each command's events and its CommandRecord go in one eventsourcing
save, under ``LOCK TABLE ledger_events IN EXCLUSIVE MODE``). ``--count`` commands in two
timed phases:

1. half are RegisterCustomer: one read (its command record and customer: neither
   exists), one read of the customer's personal data key (none), then the new key and 2
   rows (CommandRecord.Handled and Customer.Registered) written in one transaction;
2. half are StartSubscription, one per customer of phase 1: reads its record, the
   customer and the plan (their snapshots and events in one query, ``Ledger.load_many``),
   then writes 2 rows (CommandRecord.Handled and Subscription.Started).

The figure is commands / seconds over both phases. The plan and its price are set up
untimed, and the commands are built (validated by pydantic) before the clock starts; the
fingerprint, handler, domain, transcoding and save are all timed.

Raw, in the same repetition: one plain psycopg connection doing the database work alone.
A table shaped exactly like eventsourcing's (same columns, primary key, bigserial
notification id and its unique index) gets, for each command, one transaction: ``LOCK
TABLE ... IN EXCLUSIVE MODE``, one INSERT of the very rows that command stored (same ids,
versions, topics and state bytes, read back from ``ledger_events`` and grouped by the
transaction that wrote them), COMMIT. For phase 2 the customer's rows and the plan's rows
are first SELECTed and fetched, outside that transaction, as the handler reads them.

Raw does no validation, (de)serialisation or domain logic, nor eventsourcing's snapshot
lookups, nor the ``SET LOCAL lock_timeout`` and NOTIFY that the ledger's recorder
(``ledger.postgres_recorder``) sends with its lock: the ratio charges all of that to us.
Neither side pipelines: psycopg's pipeline mode, which eventsourcing's stock recorder
uses, measured slower here for one small transaction at a time.

Both sides are warmed up with a tenth of the commands (at least 10, at most 200) of the
same two kinds before the clock starts. Ours runs first; raw then replays its rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from bench import Options, Scratch, register, scratch_schema
from bench.report import Rate, Sample
from commands import schemas as s
from commands.accounts import derived_id
from commands.bootstrap import bootstrap
from commands.dispatch import handle
from ledger.application import Ledger
from ledger.catalog import plan_id
from ledger.clock import SimulatedClock

PLAN_CODE = "pro"
START = datetime(2025, 1, 1, tzinfo=UTC)
EVENTS_TABLE = "ledger_events"
RAW_TABLE = "raw_events"
COLUMNS = "originator_id, originator_version, topic, state"

Row = tuple[UUID, int, str, bytes]


@dataclass(frozen=True)
class RawCommand:
    """What raw psycopg does for one command: read these aggregates, then write these rows."""

    reads: tuple[UUID, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Phase:
    """Commands of one kind, and for each the aggregates its handler reads."""

    name: str
    timed: bool
    commands: Sequence[s.Command]
    reads: Sequence[tuple[UUID, ...]]


def register_customers(prefix: str, count: int) -> list[s.RegisterCustomer]:
    return [
        s.RegisterCustomer(
            command_id=f"{prefix}-customer-{i}",
            email=f"customer-{i}@{prefix}.example.com",
            name=f"Customer {i} of {prefix}",
            currency="EUR",
        )
        for i in range(count)
    ]


def start_subscriptions(customers: Sequence[s.RegisterCustomer]) -> list[s.StartSubscription]:
    return [
        s.StartSubscription(
            command_id=f"{c.command_id}-subscription",
            customer_id=derived_id("customer", c.command_id),
            plan_code=PLAN_CODE,
        )
        for c in customers
    ]


def phases(prefix: str, count: int, *, timed: bool) -> list[Phase]:
    """RegisterCustomer for half of ``count`` customers, then StartSubscription for each."""
    customers = register_customers(prefix, max(1, count // 2))
    subscriptions = start_subscriptions(customers)
    return [
        Phase("customer.register", timed, customers, [()] * len(customers)),
        Phase(
            "subscription.start",
            timed,
            subscriptions,
            [(c.customer_id, plan_id(PLAN_CODE)) for c in subscriptions],
        ),
    ]


def set_up_plan(ledger: Ledger, clock: SimulatedClock) -> None:
    handle(s.RegisterPlan(command_id="plan", code=PLAN_CODE, name="Pro"), ledger, clock)
    price = s.AddPrice(
        command_id="price", plan_code=PLAN_CODE, currency="EUR", amount=1999, trial_days=14
    )
    handle(price, ledger, clock)


def create_raw_table(conn: psycopg.Connection[Any], scratch: Scratch) -> None:
    """A table shaped like eventsourcing's events table (see ``PostgresApplicationRecorder``)."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
            "topic text, state bytea, notification_id bigserial, "
            "PRIMARY KEY (originator_id, originator_version))"
        ).format(scratch.table(RAW_TABLE))
    )
    conn.execute(
        sql.SQL("CREATE UNIQUE INDEX {} ON {} (notification_id ASC)").format(
            sql.Identifier(f"{RAW_TABLE}_notification_id_idx"), scratch.table(RAW_TABLE)
        )
    )


def last_notification_id(conn: psycopg.Connection[Any], scratch: Scratch) -> int:
    query = sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}")
    row = conn.execute(query.format(scratch.table(EVENTS_TABLE))).fetchone()
    assert row is not None
    return int(row[0])


def stored_transactions(
    conn: psycopg.Connection[Any], scratch: Scratch, after: int, upto: int
) -> list[tuple[Row, ...]]:
    """The rows stored after notification ``after`` up to ``upto``, grouped by the
    transaction that wrote them (their xmin)."""
    query = sql.SQL(
        f"SELECT xmin::text, {COLUMNS} FROM {{}} "
        "WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
    ).format(scratch.table(EVENTS_TABLE))
    rows = conn.execute(query, (after, upto)).fetchall()
    return [
        tuple((r[1], r[2], r[3], bytes(r[4])) for r in group)
        for _, group in itertools.groupby(rows, key=lambda r: r[0])
    ]


def insert_statement(table: sql.Composed, rows: int) -> sql.Composed:
    """One INSERT of ``rows`` rows of ``COLUMNS`` into ``table``."""
    values = sql.SQL(", ").join([sql.SQL("(%s, %s, %s, %s)")] * rows)
    return sql.SQL(f"INSERT INTO {{}} ({COLUMNS}) VALUES {{}}").format(table, values)


def run_ours(phase: Phase, ledger: Ledger, clock: SimulatedClock) -> Rate:
    started = perf_counter()
    for command in phase.commands:
        handle(command, ledger, clock)
    return Rate(len(phase.commands), perf_counter() - started)


def raw_commands(phase: Phase, transactions: Sequence[tuple[Row, ...]]) -> list[RawCommand]:
    """Pairs each command of ``phase`` with the rows its transaction stored."""
    if len(transactions) != len(phase.commands):
        raise RuntimeError(
            f"{phase.name}: {len(phase.commands)} commands stored "
            f"{len(transactions)} transactions; expected one each"
        )
    return [RawCommand(reads, rows) for reads, rows in zip(phase.reads, transactions, strict=True)]


class RawLedger:
    """Plain psycopg doing a command's database work: reads, then one locked insert."""

    def __init__(self, conn: psycopg.Connection[Any], scratch: Scratch) -> None:
        self.conn = conn
        self.table = scratch.table(RAW_TABLE)
        self.lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(self.table)
        self.select = sql.SQL(
            f"SELECT {COLUMNS} FROM {{}} WHERE originator_id = %s ORDER BY originator_version"
        ).format(self.table)
        self.inserts: dict[int, sql.Composed] = {}

    def insert_statement(self, rows: int) -> sql.Composed:
        if rows not in self.inserts:
            self.inserts[rows] = insert_statement(self.table, rows)
        return self.inserts[rows]

    def run(self, commands: Sequence[RawCommand]) -> Rate:
        conn = self.conn
        work = [
            (c.reads, self.insert_statement(len(c.rows)), [v for row in c.rows for v in row])
            for c in commands
        ]
        started = perf_counter()
        for reads, insert, params in work:
            for aggregate_id in reads:
                conn.execute(self.select, (aggregate_id,)).fetchall()
            with conn.transaction():
                conn.execute(self.lock, prepare=True)
                conn.execute(insert, params)
        return Rate(len(commands), perf_counter() - started)


def warm_up_count(count: int) -> int:
    return min(200, max(10, count // 10))


@register(
    "commands",
    "RegisterCustomer + StartSubscription through dispatch.handle, vs raw locked inserts",
    "commands/s",
)
def measure(options: Options) -> Sample:
    runs = [
        *phases("warm-up", warm_up_count(options.count), timed=False),
        *phases("timed", options.count, timed=True),
    ]
    with (
        scratch_schema(options.database_url) as scratch,
        psycopg.connect(**scratch.connect_kwargs, autocommit=True) as conn,
    ):
        ledger = bootstrap(scratch.database_url)
        try:
            clock = SimulatedClock(START)
            set_up_plan(ledger, clock)
            create_raw_table(conn, scratch)
            # The plan's rows (and its set-up's command records): raw reads the plan too.
            copy = sql.SQL(f"INSERT INTO {{}} ({COLUMNS}) SELECT {COLUMNS} FROM {{}}")
            conn.execute(copy.format(scratch.table(RAW_TABLE), scratch.table(EVENTS_TABLE)))
            marks = [last_notification_id(conn, scratch)]
            ours_rates = []
            for phase in runs:
                ours_rates.append(run_ours(phase, ledger, clock))
                marks.append(last_notification_id(conn, scratch))
        finally:
            ledger.close()
        raw_ledger = RawLedger(conn, scratch)
        raw_rates = [
            raw_ledger.run(raw_commands(phase, stored_transactions(conn, scratch, after, upto)))
            for phase, after, upto in zip(runs, marks, marks[1:], strict=False)
        ]

    ours, raw = Rate(0, 0.0), Rate(0, 0.0)
    for phase, ours_rate, raw_rate in zip(runs, ours_rates, raw_rates, strict=True):
        if phase.timed:
            options.log(
                f"  {phase.name}: {ours_rate.per_second:.0f}/s  raw: {raw_rate.per_second:.0f}/s"
            )
            ours, raw = ours + ours_rate, raw + raw_rate
    return Sample(ours, raw)
