"""``bus``: commands per second end to end over the bus, next to raw psycopg's locked
single-row transactions.

Ours, in each repetition: a fresh schema holding the ledger's tables and the plan of
``bench.commands`` (a EUR price with a 14-day trial), set up untimed; a bus prefix of the
repetition's own (``bench-<hex>``, its keys deleted afterwards); a producer in this
process that adds commands with plain XADD, each naming a reply stream; and one
``subledger worker`` process, then a second one beside it. With each:

1. warm-up, untimed (``warm_up``): the first worker starts and answers ``--count``
   commands that prepare customers for the peak (below); the second, bursts of signups
   until it has taken some, then one more;
2. peak: ``--count`` commands added as fast as pipelined XADDs go; the figure is ``count``
   over the time from the first command's arrival in Redis to the last reply's: commands
   read, validated, handled, committed (events and command records) and answered;
3. half load: a producer paced at half that peak for ``PACED_SECONDS``.

A command's latency is its reply's entry id minus its own: milliseconds of the one Redis
clock (1 ms resolution). ``p50_ms``/``p99_ms`` are the peak's, where commands queue
behind the burst (so they grow with ``--count``); ``half_load_p50_ms``/``_p99_ms`` are what
a command waits at half the peak. ``bus`` is one worker, ``bus-2w`` two.

The commands are customers signing up: each registers (customer.register), adds a card
(customer.add_payment_method) in a later burst, and starts a subscription
(subscription.start) in a later one still: a burst (a peak, a paced phase) is a third of
each, interleaved, every one for a customer of its own, and none depending on a command of
its own burst: as with many customers signing up at once, independent enough to batch,
and never a command read before the one it needs is answered, however the workers share
the burst. The first warm-up registers two thirds of ``--count`` customers, then gives
half of them a card, so that a peak finds as many of each kind waiting (a paced phase is
at most ``--count`` commands). Every reply must say "accepted", or the benchmark fails.

Raw, in the same repetition, once the workers have stopped: one plain psycopg connection
inserts ``--count`` rows that ours stored in its peak (real event and command-record rows,
with their ids, topics and state) one per transaction, each taking ``LOCK TABLE ... IN
EXCLUSIVE MODE``, into a table shaped like eventsourcing's (``bench.commands.RawLedger``),
after a warm-up of ``RAW_WARM_UP`` rows: STACK-NOTES's "one small event row per
transaction with the table lock". Both worker counts are compared with this one rate.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any, cast

import psycopg
import redis
from psycopg import sql

from bench import Options, Scratch, register, scratch_schema
from bench.commands import (
    COLUMNS,
    EVENTS_TABLE,
    PLAN_CODE,
    START,
    RawCommand,
    RawLedger,
    create_raw_table,
    last_notification_id,
    set_up_plan,
)
from bench.report import Rate, Sample
from commands.accounts import derived_id
from commands.bootstrap import bootstrap
from commands.bus import Entry
from commands.settings import Settings
from commands.streams import GROUP, Streams
from ledger.clock import SimulatedClock

# How long the paced producer runs at half the peak rate.
PACED_SECONDS = 1.5
# Raw's warm-up: this many rows (at most --count), inserted untimed.
RAW_WARM_UP = 200
# Pipelined XADDs per round trip in the peak phase.
PIPELINE = 500
# How long a worker may take to stop once asked (it answers the read in hand first).
STOP_SECONDS = 30.0
# Commands per warm-up burst (at most --count), once customers wait for the peak.
WARM_UP = 400
# How long the warm-up waits between bursts for a worker that has not started yet.
STARTING_SECONDS = 0.5
# Seconds to wait for replies: startup and warm-up, then per command beyond that.
STARTUP_SECONDS = 60.0
SECONDS_PER_COMMAND = 0.01


def entry_ms(entry_id: bytes) -> int:
    """The Redis clock's milliseconds at which a stream entry was added."""
    return int(entry_id.split(b"-")[0])


class Signups:
    """Customers signing up, their commands as a service would put them on the wire."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.customers = itertools.count()
        self.registered: deque[int] = deque()  # waiting for a card
        self.carded: deque[int] = deque()  # waiting for a subscription

    def commands(self, registrations: int, cards: int, signups: int) -> list[dict[str, Any]]:
        """New customers registering, then customers of earlier bursts adding a card and
        starting a subscription, interleaved."""
        if cards > len(self.registered) or signups > len(self.carded):
            raise ValueError(
                f"{len(self.registered)} customers to give a card, "
                f"{len(self.carded)} to subscribe: too few for this burst"
            )
        new = [next(self.customers) for _ in range(registrations)]
        carded = [self.registered.popleft() for _ in range(cards)]
        subscribing = [self.carded.popleft() for _ in range(signups)]
        self.registered.extend(new)
        self.carded.extend(carded)
        kinds = (
            [self.register(n) for n in new],
            [self.card(n) for n in carded],
            [self.signup(n) for n in subscribing],
        )
        return [c for group in itertools.zip_longest(*kinds) for c in group if c is not None]

    def mix(self, count: int) -> list[dict[str, Any]]:
        """``count`` commands, a third of each kind."""
        third = count // 3
        return self.commands(count - 2 * third, third, third)

    def customer_id(self, n: int) -> str:
        return str(derived_id("customer", f"{self.prefix}-customer-{n}"))

    def register(self, n: int) -> dict[str, Any]:
        return {
            "type": "customer.register",
            "command_id": f"{self.prefix}-customer-{n}",
            "email": f"customer-{n}@{self.prefix}.example.com",
            "name": f"Customer {n} of {self.prefix}",
            "currency": "EUR",
        }

    def card(self, n: int) -> dict[str, Any]:
        return {
            "type": "customer.add_payment_method",
            "command_id": f"{self.prefix}-card-{n}",
            "customer_id": self.customer_id(n),
            "payment_method_id": "pm_1",
            "token": "tok_visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2040,
            "make_default": True,
        }

    def signup(self, n: int) -> dict[str, Any]:
        return {
            "type": "subscription.start",
            "command_id": f"{self.prefix}-signup-{n}",
            "customer_id": self.customer_id(n),
            "plan_code": PLAN_CODE,
        }


@dataclass(frozen=True)
class Answered:
    """A phase's commands, answered: the phase's rate and each command's latency."""

    rate: Rate
    latencies_ms: Sequence[int]

    def percentiles(self, prefix: str = "") -> dict[str, float]:
        """The median and 99th percentile latencies (nearest rank)."""
        ordered = sorted(self.latencies_ms)
        return {
            f"{prefix}p{p}_ms": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
            for p in (50, 99)
        }

    def line(self) -> str:
        figures = self.percentiles()
        return (
            f"{self.rate.per_second:.0f}/s  p50: {figures['p50_ms']:.0f} ms  "
            f"p99: {figures['p99_ms']:.0f} ms"
        )


class Workers:
    """``subledger worker`` processes on one bus prefix, and a producer of commands."""

    def __init__(self, client: redis.Redis, scratch: Scratch, prefix: str, log: IO[bytes]) -> None:
        self.client = client
        self.streams = Streams(prefix)
        self.env = os.environ | {
            "SUBLEDGER_DATABASE_URL": scratch.database_url,
            "SUBLEDGER_REDIS_URL": Settings().redis_url,
            "SUBLEDGER_BUS_PREFIX": prefix,
        }
        self.log = log
        self.processes: list[subprocess.Popen[bytes]] = []
        self.phases = itertools.count()
        self.signups = Signups(prefix)

    def start(self) -> None:
        """One more worker process (it joins the others once started)."""
        command = [sys.executable, "-m", "commands", "worker"]
        self.processes.append(
            subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log)
        )

    def stop(self) -> None:
        """SIGTERM to every worker: each answers the read in hand, then exits."""
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def reply_stream(self) -> str:
        return f"{self.streams.prefix}:replies:{next(self.phases)}"

    def consumers(self) -> int:
        """How many workers have taken commands (a consumer joins the group with its first)."""
        try:
            return len(self.client.xinfo_consumers(self.streams.commands, GROUP))
        except redis.ResponseError:  # no stream, or no group, yet
            return 0

    def run(
        self, burst: list[dict[str, Any]], timeout: float, rate: float | None = None
    ) -> Answered:
        """``burst``'s commands, added as fast as pipelined XADDs go or, at ``rate``,
        command k at k / ``rate`` seconds; once all answered."""
        reply_to = self.reply_stream()
        commands = [(c["command_id"], json.dumps(c | {"reply_to": reply_to})) for c in burst]
        count = len(commands)
        ids: list[bytes] = []
        started = time.perf_counter()
        while len(ids) < count:
            elapsed = time.perf_counter() - started
            due = len(ids) + PIPELINE if rate is None else int(elapsed * rate) + 1
            if due > len(ids):
                with self.client.pipeline(transaction=False) as pipe:
                    for _, data in commands[len(ids) : due]:
                        pipe.xadd(self.streams.commands, {"data": data})
                    ids += pipe.execute()
            elif rate is not None:
                time.sleep(max(0.0, len(ids) / rate - elapsed))
        self.wait_until(
            lambda: self.client.xlen(reply_to) >= count,
            timeout,
            lambda: f"{self.client.xlen(reply_to)} of {count} replies",
        )
        return self.answered(commands, ids, reply_to)

    def answered(
        self, commands: list[tuple[str, str]], ids: list[bytes], reply_to: str
    ) -> Answered:
        """The rate and latencies of ``commands``, whose replies are all in; each reply must
        accept its command."""
        sent = {command_id: entry_ms(i) for (command_id, _), i in zip(commands, ids, strict=True)}
        latencies, refused, unexpected = [], [], 0
        replies = cast(list[Entry], self.client.xrange(reply_to))
        for reply_id, fields in replies:
            reply = json.loads(fields[b"data"])
            sent_ms = sent.pop(reply["command_id"], None)
            if sent_ms is None:  # a second reply to a command
                unexpected += 1
                continue
            if reply["status"] != "accepted":
                refused.append(reply)
            latencies.append(entry_ms(reply_id) - sent_ms)
        if refused or sent or unexpected:
            raise RuntimeError(
                f"{len(refused)} commands refused, {len(sent)} not answered, {unexpected} "
                f"answered twice; first refusal: {refused[:1]}\n{self.log_tail()}"
            )
        elapsed_ms = entry_ms(replies[-1][0]) - entry_ms(ids[0])
        return Answered(Rate(len(commands), elapsed_ms / 1000), latencies)

    def wait_until(
        self, condition: Callable[[], bool], timeout: float, progress: Callable[[], str]
    ) -> None:
        """Polls ``condition``; a worker that stops, or ``timeout``, is an error."""
        deadline = time.monotonic() + timeout
        while not condition():
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a bus worker stopped:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not yet after {timeout:.0f}s: {progress()}\n{self.log_tail()}")
            time.sleep(0.01)

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:].decode(errors="replace")


@contextmanager
def bus_on(scratch: Scratch, client: redis.Redis, prefix: str) -> Iterator[Workers]:
    """Workers on ``prefix`` (none started yet), stopped on exit, logging to a file."""
    with tempfile.TemporaryFile() as log:
        bus = Workers(client, scratch, prefix, log)
        try:
            yield bus
        finally:
            bus.stop()


def warm_up(bus: Workers, options: Options) -> None:
    """Untimed bursts of commands, each answered before the next. The first time,
    ``--count`` commands that prepare customers for the peak's cards and subscriptions
    (the new worker starts meanwhile); then, unless the new worker has taken commands
    already, a burst every ``STARTING_SECONDS`` until it has, and one more."""

    def burst(commands: list[dict[str, Any]]) -> None:
        answered = bus.run(commands, STARTUP_SECONDS)
        options.log(f"  {len(bus.processes)} worker(s): warm-up {answered.line()}")

    third, size = options.count // 3, min(WARM_UP, options.count)
    if third and not bus.signups.registered:
        burst(bus.signups.commands(2 * third, 0, 0))
        burst(bus.signups.commands(0, third, 0))
    if bus.consumers() == len(bus.processes):
        return  # the worker started while customers were being prepared
    deadline = time.monotonic() + STARTUP_SECONDS
    while bus.consumers() < len(bus.processes):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{bus.consumers()} of {len(bus.processes)} workers took commands")
        time.sleep(STARTING_SECONDS)  # leave the CPU to the worker starting
        burst(bus.signups.mix(size))
    burst(bus.signups.mix(size))


def timed(bus: Workers, options: Options) -> tuple[Answered, Answered]:
    """The peak, then the latency at half of it."""
    timeout = STARTUP_SECONDS + options.count * SECONDS_PER_COMMAND
    peak = bus.run(bus.signups.mix(options.count), timeout)
    half_rate = peak.rate.per_second / 2
    paced = min(options.count, max(3, round(half_rate * PACED_SECONDS)))
    half = bus.run(bus.signups.mix(paced), timeout, half_rate)
    options.log(f"  {len(bus.processes)} worker(s): peak {peak.line()}  half load {half.line()}")
    return peak, half


def stored_rows(
    conn: psycopg.Connection[Any], scratch: Scratch, after: int, count: int
) -> list[RawCommand]:
    """``count`` rows stored after notification ``after``, each for a transaction of its own."""
    query = sql.SQL(
        f"SELECT {COLUMNS} FROM {{}} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
    ).format(scratch.table(EVENTS_TABLE))
    rows = conn.execute(query, (after, count)).fetchall()
    if len(rows) < count:
        raise RuntimeError(f"{len(rows)} rows stored where raw replays {count}")
    return [RawCommand((), ((r[0], r[1], r[2], bytes(r[3])),)) for r in rows]


def sample(peak: Answered, half: Answered, raw: Rate) -> Sample:
    return Sample(peak.rate, raw, peak.percentiles() | half.percentiles("half_load_"))


@register(
    "bus",
    "signups end to end over Redis by 1 (bus) and 2 (bus-2w) workers, vs raw locked inserts",
    "commands/s",
)
def measure(options: Options) -> Sample:
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(Settings().redis_url)
    try:
        with (
            scratch_schema(options.database_url) as scratch,
            psycopg.connect(**scratch.connect_kwargs, autocommit=True) as conn,
        ):
            with bootstrap(scratch.database_url) as ledger:
                set_up_plan(ledger, SimulatedClock(START))
            with bus_on(scratch, client, prefix) as bus:
                bus.start()
                warm_up(bus, options)
                mark = last_notification_id(conn, scratch)
                one = timed(bus, options)
                bus.start()
                warm_up(bus, options)
                two = timed(bus, options)
            create_raw_table(conn, scratch)
            # The peak stored at least two rows per command (an event, a command record).
            warm = min(RAW_WARM_UP, options.count)
            commands = stored_rows(conn, scratch, mark, warm + options.count)
            raw_ledger = RawLedger(conn, scratch)
            raw_ledger.run(commands[:warm])
            raw = raw_ledger.run(commands[warm:])
    finally:
        if keys := list(client.scan_iter(f"{prefix}*", count=1000)):
            client.delete(*keys)
        client.close()
    options.log(f"  raw: {raw.per_second:.0f}/s")
    return replace(sample(*one, raw), variants={"2w": sample(*two, raw)})
