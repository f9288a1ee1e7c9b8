"""The projection machinery: batches, positions, crashes, versions, concurrent runners.

What the projections compute (revenue figures and the like) is tested elsewhere; here
every test checks that the runner feeds each projection each handled event exactly once,
whatever the batching, the interruptions or the number of runners, by comparing every
row of every projection table with what a clean rebuild writes. Each test runs on SQLite
and on PostgreSQL (``database_url``), on real files and a real server.
"""

from __future__ import annotations

import gc
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from commands import schemas as s
from commands.bootstrap import bootstrap, projection_database
from commands.demo import run_demo
from commands.settings import persistence_env
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.subscriptions import Subscription
from projections import all_projections
from projections.database import Database, Params, SQLiteDatabase, Transaction
from projections.database import Row as DbRow
from projections.history import TransactionHistory
from projections.projection import Positioned, Projection
from projections.runner import Projector, Status, UnknownProjection, VersionConflict
from tests.integration.conftest import Shop

NAMES = ("subscriptions", "history", "revenue", "collections", "journal")
VERSIONS = {p.name: p.version for p in all_projections()}


# A small business with every kind of projected event that matters here (trials that
# convert and lapse, renewals, pauses, resumes, scheduled cancellations), in well under
# a second on either backend.
def small_demo(ledger: Ledger, on_day: Callable[[int, int], None] | None = None) -> None:
    demo(ledger, customers=40, months=3, seed=3, on_day=on_day)


def demo(
    ledger: Ledger,
    customers: int,
    months: int,
    seed: int,
    on_day: Callable[[int, int], None] | None = None,
) -> None:
    """Runs the demo with projections of its own (its billing clock reads them) in a
    scratch file, so that the projections under test start from nothing."""
    with TemporaryDirectory() as scratch:
        database = SQLiteDatabase(str(Path(scratch) / "demo-projections.db"))
        with Projector(ledger, database, all_projections()) as own:
            run_demo(ledger, own, customers=customers, months=months, seed=seed, on_day=on_day)


Value = Any
Row = tuple[Value, ...]
Dump = dict[str, list[Row]]
Query = Callable[[str], Sequence[tuple[Any, ...]]]
Hook = Callable[[Transaction, Sequence[Positioned]], None]


# Helpers


def make_projector(
    ledger: Ledger,
    database_url: str,
    projections: Sequence[Projection] | None = None,
    batch_size: int = 50,
) -> Projector:
    """A runner on its own connection to the ledger's database, as ``bootstrap.projector``
    builds one, with the given projections (all by default) and batch size."""
    database = projection_database(persistence_env(database_url))
    chosen = all_projections() if projections is None else list(projections)
    return Projector(ledger, database, chosen, batch_size=batch_size)


def hooked(
    base: type[Projection], before: Hook | None = None, after: Hook | None = None
) -> Projection:
    """A projection that is ``base`` in every way (name, version, tables, what it
    writes), with ``before`` and ``after`` called inside each batch's transaction
    around the real ``process``."""

    def process(self: Projection, tx: Transaction, events: Sequence[Positioned]) -> None:
        if before is not None:
            before(tx, events)
        base.process(self, tx, events)
        if after is not None:
            after(tx, events)

    cls = type(f"Hooked{base.__name__}", (base,), {"process": process})
    return cast(Projection, cls())


def bumped(base: type[Projection]) -> Projection:
    """``base`` as a next version would declare it: same name, version + 1."""
    cls = type(f"Next{base.__name__}", (base,), {"version": base.version + 1})
    return cast(Projection, cls())


def projection_class(name: str) -> type[Projection]:
    return next(type(p) for p in all_projections() if p.name == name)


def normal(value: Value) -> Value:
    """One comparable Python value for what either backend returns: PostgreSQL gives
    UUID, datetime, date, bool and Decimal where SQLite gives text and integers."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    return value


def order(row: Row) -> tuple[tuple[bool, str, Value], ...]:
    """A sort key for rows that may hold None next to values (numbers in numeric order)."""
    return tuple((v is None, type(v).__name__, 0 if v is None else v) for v in row)


def dump_tables(query: Query, tables: Sequence[str]) -> Dump:
    """Every row of every table, normalised and sorted."""
    return {
        table: sorted(
            (tuple(normal(v) for v in row) for row in query(f"SELECT * FROM {table}")), key=order
        )
        for table in tables
    }


def tables_of(projector: Projector, names: Sequence[str] = NAMES) -> list[str]:
    return [table for name in names for table in projector.projections[name].tables]


def dump(projector: Projector, names: Sequence[str] = NAMES) -> Dump:
    return dump_tables(projector.database.query, tables_of(projector, names))


def statuses(projector: Projector) -> dict[str, Status]:
    return {status.name: status for status in projector.status()}


def positions(projector: Projector) -> dict[str, int]:
    return {name: status.position for name, status in statuses(projector).items()}


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def notifications(ledger: Ledger, after: int = 0) -> Iterator[tuple[int, str]]:
    """(position, topic) of every stored event after ``after``."""
    start = after + 1
    while batch := ledger.recorder.select_notifications(start, 1_000):
        yield from ((n.id, n.topic) for n in batch)
        start = batch[-1].id + 1


def stored(ledger: Ledger, classes: Iterable[type], after: int = 0) -> list[int]:
    """The positions of the stored events of ``classes`` after ``after``."""
    topics = {get_topic(cls) for cls in classes}
    return [i for i, topic in notifications(ledger, after) if topic in topics]


def projected(ledger: Ledger, after: int = 0) -> int:
    """How many stored events after ``after`` some projection reads: what a catch-up over
    them returns."""
    return len(stored(ledger, set().union(*(p.handles for p in all_projections())), after))


def handled(ledger: Ledger, projection: Projection, after: int = 0) -> list[int]:
    """The positions of the stored events that ``projection`` must process."""
    return stored(ledger, projection.handles, after)


def assert_not_trivial(tables: Dump) -> None:
    """A dump worth comparing: every projection wrote rows."""
    for table in ("current_subscriptions", "due_work", "transaction_history", "revenue_days"):
        assert tables[table], f"{table} is empty"


class Processed:
    """The positions each projection processed, in every runner, in committed batches
    (``process`` runs only after the position's compare-and-set succeeded, and nothing
    after it fails)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.positions: defaultdict[str, list[int]] = defaultdict(list)

    def counting(self, base: type[Projection]) -> Projection:
        def after(tx: Transaction, events: Sequence[Positioned]) -> None:
            with self._lock:
                self.positions[base.name].extend(i for i, _ in events)

        return hooked(base, after=after)

    def projections(self) -> list[Projection]:
        return [self.counting(type(p)) for p in all_projections()]


class Crash(RuntimeError):
    pass


class CrashOnCall:
    """On the ``call``-th batch of a projection: records the tables as the batch found
    them, lets the real ``process`` write, records what it wrote, then raises."""

    def __init__(self, base: type[Projection], call: int) -> None:
        self.base = base
        self.call = call
        self.calls = 0
        self.done: list[int] = []  # positions of the batches before the crash
        self.crashed: list[int] = []  # positions of the crashed batch
        self.found: Dump = {}
        self.written: Dump = {}

    def projection(self) -> Projection:
        return hooked(self.base, before=self._before, after=self._after)

    def _before(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        self.calls += 1
        if self.calls == self.call:
            self.found = dump_tables(tx.query, self.base.tables)

    def _after(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        if self.calls != self.call:
            self.done.extend(i for i, _ in events)
            return
        self.crashed = [i for i, _ in events]
        self.written = dump_tables(tx.query, self.base.tables)
        raise Crash(f"{self.base.name} crashed in batch {self.calls}")


class Spinning(AssertionError):
    pass


class Bounded:
    """A real database that refuses to open more than ``limit`` transactions, so that
    a runner going round in circles fails the test instead of hanging it."""

    def __init__(self, database: Database, limit: int) -> None:
        self._database = database
        self._limit = limit
        self.backend = database.backend
        self.transactions = 0

    def transaction(self, exclusive: bool = False) -> AbstractContextManager[Transaction]:
        self.transactions += 1
        if self.transactions > self._limit:
            raise Spinning(f"still going after {self._limit} transactions: a loop that never ends")
        return self._database.transaction(exclusive)

    def query(self, statement: str, params: Params = ()) -> list[DbRow]:
        return self._database.query(statement, params)

    def close(self) -> None:
        self._database.close()


class Widget(Aggregate):
    """An aggregate no projection knows about."""

    def __init__(self, label: str) -> None:
        self.label = label


# 1. Incremental catch-up equals a rebuild, whatever the batch size


def test_catching_up_in_steps_writes_what_a_rebuild_writes(
    ledger: Ledger, database_url: str
) -> None:
    batch_size = 50
    with make_projector(ledger, database_url, batch_size=batch_size) as projector:
        reads: list[int] = []

        def on_day(day: int, days: int) -> None:
            if day % 5 == 0:
                reads.append(projector.catch_up())

        demo(ledger, customers=60, months=4, seed=5, on_day=on_day)
        reads.append(projector.catch_up())
        total, last = projected(ledger), head(ledger)
        # Each catch-up read from where the previous one stopped: every event once.
        assert sum(reads) == total
        assert sum(1 for read in reads if read) >= 10
        assert positions(projector) == dict.fromkeys(NAMES, last)
        incremental = dump(projector)
        assert_not_trivial(incremental)
        assert len(incremental["current_subscriptions"]) == len(
            stored(ledger, {Subscription.Started})
        )
        history_positions = [row[0] for row in incremental["transaction_history"]]
        assert sorted(history_positions) == handled(ledger, TransactionHistory())

        progress: list[tuple[int, int]] = []
        assert projector.rebuild(progress=lambda at, of: progress.append((at, of))) == total
        assert dump(projector) == incremental
        assert positions(projector) == dict.fromkeys(NAMES, last)
        # One report per page, moving forward, ending at the head.
        assert len(progress) == math.ceil(sum(1 for _ in notifications(ledger)) / batch_size)
        assert [at for at, _ in progress] == sorted({at for at, _ in progress})
        assert progress[-1] == (last, last)

    for other_size in (7, 5000):
        with make_projector(ledger, database_url, batch_size=other_size) as fresh:
            assert positions(fresh) == dict.fromkeys(NAMES, last)
            assert fresh.rebuild() == total
            assert dump(fresh) == incremental


# 2. A crash in the middle of a batch


@pytest.mark.parametrize("recovery", ["fresh runner", "same runner"])
@pytest.mark.parametrize("name", NAMES)
def test_a_crash_mid_batch_counts_nothing_twice_and_skips_nothing(
    ledger: Ledger, database_url: str, name: str, recovery: str
) -> None:
    small_demo(ledger)
    last = head(ledger)
    crash = CrashOnCall(projection_class(name), call=3)
    projections = [crash.projection() if p.name == name else p for p in all_projections()]
    recovered: Dump
    assert gc.isenabled()
    with make_projector(ledger, database_url, projections, batch_size=20) as crashing:
        with pytest.raises(Crash):
            crashing.catch_up()
        # The runner switches the automatic collector off while it works: it is back on.
        assert gc.isenabled()
        # The batch had written inside its transaction when it failed...
        assert crash.done
        assert crash.crashed
        assert crash.written != crash.found
        # ...and neither its rows nor its position survived: the projection stands
        # where its last committed batch left it.
        committed = positions(crashing)[name]
        assert max(crash.done) <= committed < min(crash.crashed)
        assert dump(crashing, [name]) == crash.found
        if recovery == "same runner":
            assert crashing.catch_up() > 0
            assert positions(crashing) == dict.fromkeys(NAMES, last)
            recovered = dump(crashing)
    if recovery == "fresh runner":
        with make_projector(ledger, database_url, batch_size=20) as runner:
            assert runner.catch_up() > 0
            assert positions(runner) == dict.fromkeys(NAMES, last)
            recovered = dump(runner)
    assert_not_trivial(recovered)
    with make_projector(ledger, database_url, batch_size=5000) as clean:
        clean.rebuild()
        assert dump(clean) == recovered


# 3. Events of classes no projection reads


def test_events_of_classes_no_projection_reads_are_skipped(
    shop: Shop, ledger: Ledger, database_url: str
) -> None:
    def retired_event() -> None:
        """An event of a class that no longer exists: it cannot even be decoded."""
        ledger.recorder.insert_events(
            [StoredEvent(uuid4(), 1, "retired.module:Gone.Created", b"{}")]
        )

    first = shop.customer()
    shop.send(s.StartSubscription, customer_id=first, plan_code="basic")
    ledger.save(Widget("in the middle"))
    retired_event()
    second = shop.customer()
    shop.send(s.StartSubscription, customer_id=second, plan_code="pro")
    # The last pages hold nothing a projection reads.
    ledger.save(Widget("at the end"))
    retired_event()
    total, last = projected(ledger), head(ledger)
    assert len(stored(ledger, {Widget.Created})) == 2

    with make_projector(ledger, database_url, batch_size=2) as projector:
        assert projector.catch_up() == total
        assert positions(projector) == dict.fromkeys(NAMES, last)
        assert {(st.lag, st.state) for st in projector.status()} == {(0, "up to date")}
        tables = dump(projector)
        assert [row[0] for row in tables["transaction_history"]] == handled(
            ledger, TransactionHistory()
        )
        assert sorted(row[1] for row in tables["current_subscriptions"]) == sorted(
            [str(first), str(second)]
        )
        assert projector.catch_up() == 0
        projector.rebuild()
        assert dump(projector) == tables


# 4. A new version of a projection


@pytest.mark.parametrize("name", NAMES)
def test_a_new_version_rebuilds_that_projection_and_no_other(
    ledger: Ledger, database_url: str, name: str
) -> None:
    small_demo(ledger)
    last = head(ledger)
    # A catch-up decodes only what a projection behind needs: here, the rebuilt one's.
    total = len(handled(ledger, projection_class(name)()))
    others = [other for other in NAMES if other != name]

    def remove_rows(projector: Projector, names: Sequence[str]) -> None:
        """Rows deleted by hand: a rebuild brings them back, nothing else does."""
        with projector.database.transaction() as tx:
            for other in names:
                tx.execute(f"DELETE FROM {projector.projections[other].tables[0]}")

    with make_projector(ledger, database_url) as first:
        first.catch_up()
        built = dump(first)
        assert_not_trivial(built)
        remove_rows(first, NAMES)
        removed = dump(first)
    assert removed != built

    # Version 2, picked up by catch_up() on its own.
    second = bumped(projection_class(name))
    projections = [second if p.name == name else p for p in all_projections()]
    with make_projector(ledger, database_url, projections) as runner:
        status = statuses(runner)
        assert (status[name].stored_version, status[name].version) == (
            VERSIONS[name],
            VERSIONS[name] + 1,
        )
        assert status[name].needs_rebuild
        assert status[name].state == "rebuild needed"
        assert status[name].position == last
        for other in others:
            assert (status[other].stored_version, status[other].version) == (VERSIONS[other],) * 2
            assert not status[other].needs_rebuild
            assert status[other].state == "up to date"
        assert runner.catch_up() == total
        status = statuses(runner)
        assert {st.state for st in status.values()} == {"up to date"}
        assert status[name].stored_version == VERSIONS[name] + 1
        assert positions(runner) == dict.fromkeys(NAMES, last)
        tables = dump(runner)
        for table in tables_of(runner, [name]):
            assert tables[table] == built[table]
        for table in tables_of(runner, others):
            assert tables[table] == removed[table]
        assert runner.setup() == []

    # Version 3, through setup(): it starts again from nothing, the others keep their place.
    third = bumped(type(second))
    projections = [third if p.name == name else p for p in all_projections()]
    with make_projector(ledger, database_url, projections) as runner:
        remove_rows(runner, [name])
        assert statuses(runner)[name].state == "rebuild needed"
        assert runner.setup() == [name]
        assert positions(runner) == {**dict.fromkeys(others, last), name: 0}
        assert all(rows == [] for rows in dump(runner, [name]).values())
        assert runner.catch_up() == total
        assert statuses(runner)[name].stored_version == VERSIONS[name] + 2
        tables = dump(runner)
        for table in tables_of(runner, [name]):
            assert tables[table] == built[table]
        for table in tables_of(runner, others):
            assert tables[table] == removed[table]


def test_an_older_runner_refuses_to_drop_the_tables_of_a_newer_version(
    ledger: Ledger, database_url: str
) -> None:
    """During an upgrade an old runner that starts late must not rebuild a projection
    down to its own, older version: it stops, and the newer tables stay."""
    small_demo(ledger)
    newer = bumped(TransactionHistory)
    projections = [newer if p.name == "history" else p for p in all_projections()]
    with make_projector(ledger, database_url, projections) as new:
        new.catch_up()
        built = dump(new)
    with make_projector(ledger, database_url) as old:
        with pytest.raises(
            VersionConflict, match=f"newer than this runner's {VERSIONS['history']}"
        ):
            old.catch_up()
        assert statuses(old)["history"].stored_version == VERSIONS["history"] + 1
        assert dump(old) == built


def test_a_runner_overtaken_by_a_newer_version_does_not_go_round_in_circles(
    ledger: Ledger, database_url: str
) -> None:
    """An old worker is catching up when a new one (a deploy with a projection's
    version raised) rebuilds that projection: the old one may stop, with or without an
    error, but must not loop for ever on a position it can no longer move."""
    small_demo(ledger)
    newer = bumped(TransactionHistory)
    with (
        make_projector(ledger, database_url, batch_size=20) as old,
        make_projector(
            ledger,
            database_url,
            [newer if p.name == "history" else p for p in all_projections()],
            batch_size=20,
        ) as new,
    ):
        old.database = Bounded(old.database, limit=1_000)
        overtaken: list[int] = []

        def progress(at: int, of: int) -> None:
            if not overtaken:
                overtaken.append(at)
                assert new.setup() == ["history"]

        try:
            old.catch_up(progress)
        except Spinning:
            raise
        except Exception:
            pass  # stopping with an error is a fair answer: its version is outdated
        assert overtaken
        new.catch_up()
        status = statuses(new)
        assert {st.state for st in status.values()} == {"up to date"}
        assert status["history"].stored_version == VERSIONS["history"] + 1
        tables = dump(new)
        assert_not_trivial(tables)
        new.rebuild()
        assert dump(new) == tables


# 5. status()


def test_status_reports_positions_head_and_lag(
    shop: Shop, ledger: Ledger, database_url: str
) -> None:
    shop.customer()
    total, last = projected(ledger), head(ledger)
    assert total > 0
    with make_projector(ledger, database_url) as projector:
        before = projector.status()
        assert [st.name for st in before] == list(NAMES)
        for st in before:
            assert (st.stored_version, st.version, st.position, st.head) == (
                None,
                VERSIONS[st.name],
                0,
                last,
            )
            assert (st.lag, st.needs_rebuild, st.state) == (last, True, "not built yet")
        assert projector.setup() == list(NAMES)
        assert {
            (st.stored_version == VERSIONS[st.name], st.position, st.lag, st.state)
            for st in projector.status()
        } == {(True, 0, last, "behind")}

        assert projector.catch_up() == total
        for st in projector.status():
            assert (st.position, st.head, st.lag, st.state) == (last, last, 0, "up to date")
            assert st.as_json() == {
                "name": st.name,
                "version": VERSIONS[st.name],
                "stored_version": VERSIONS[st.name],
                "position": last,
                "head": last,
                "lag": 0,
                "state": "up to date",
            }

        customer = shop.customer()
        shop.send(s.StartSubscription, customer_id=customer, plan_code="pro")
        new = sum(1 for _ in notifications(ledger, after=last))
        assert new > 0
        for st in projector.status():
            assert (st.position, st.head, st.lag, st.state) == (last, head(ledger), new, "behind")
        assert projector.catch_up() == projected(ledger, after=last)
        assert {(st.position, st.lag) for st in projector.status()} == {(head(ledger), 0)}
        assert projector.catch_up() == 0


# 6. Two runners on the same projections


def test_two_runners_catching_up_in_turns_count_each_event_once(
    ledger: Ledger, database_url: str
) -> None:
    counted = (Processed(), Processed())
    with (
        make_projector(ledger, database_url, counted[0].projections(), batch_size=7) as one,
        make_projector(ledger, database_url, counted[1].projections(), batch_size=13) as two,
    ):
        runners = (one, two)

        def on_day(day: int, days: int) -> None:
            if day % 3 == 0:
                runners[day // 3 % 2].catch_up()

        small_demo(ledger, on_day)
        one.catch_up()
        two.catch_up()
        last = head(ledger)
        assert positions(one) == positions(two) == dict.fromkeys(NAMES, last)
        for projection in all_projections():
            done = [counted[n].positions[projection.name] for n in (0, 1)]
            assert all(done)  # both runners did some of the work
            assert sorted(done[0] + done[1]) == handled(ledger, projection)
        tables = dump(one)
        assert_not_trivial(tables)
        assert dump(two) == tables
        one.rebuild()
        assert dump(one) == tables


def test_a_runner_skips_the_batches_another_committed_meanwhile(
    ledger: Ledger, database_url: str
) -> None:
    small_demo(ledger)
    late = Shop(ledger, SimulatedClock(datetime(2025, 6, 2, 9, 0, tzinfo=UTC)))
    counted = (Processed(), Processed())
    first_page: list[int] = []
    with (
        make_projector(ledger, database_url, counted[0].projections(), batch_size=7) as one,
        make_projector(ledger, database_url, counted[1].projections(), batch_size=20) as two,
    ):
        one.setup()
        before = head(ledger)

        def progress(at: int, of: int) -> None:
            # After runner two's first page: runner one does all the rest, then more
            # events arrive. Runner two still believes it is at its first page.
            if not first_page:
                first_page.append(at)
                assert one.catch_up() > 0
                customer = late.customer()
                late.send(s.StartSubscription, customer_id=customer, plan_code="basic")

        two.catch_up(progress)
        last = head(ledger)
        assert last > before
        assert positions(one) == positions(two) == dict.fromkeys(NAMES, last)
        (page,) = first_page
        for projection in all_projections():
            expected = handled(ledger, projection)
            assert counted[0].positions[projection.name] == [
                i for i in expected if page < i <= before
            ]
            assert counted[1].positions[projection.name] == [
                i for i in expected if i <= page or i > before
            ]
        tables = dump(two)
        assert_not_trivial(tables)
        two.rebuild()
        assert dump(two) == tables


def catch_up_together(
    database_url: str, projections: Callable[[], list[Projection]], batch_sizes: Sequence[int]
) -> list[BaseException]:
    """One runner per batch size, each on a ledger and a connection of its own (both
    opened beforehand), all calling catch_up() at the same moment in threads of their
    own; returns what they raised."""
    errors: list[BaseException] = []
    with ExitStack() as stack:
        runners = [
            stack.enter_context(
                make_projector(
                    stack.enter_context(bootstrap(database_url)),
                    database_url,
                    projections(),
                    batch_size,
                )
            )
            for batch_size in batch_sizes
        ]
        start = threading.Barrier(len(runners), timeout=30)

        def run(runner: Projector) -> None:
            try:
                start.wait()
                runner.catch_up()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(runner,)) for runner in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
    return errors


def assert_caught_up_as_a_rebuild(ledger: Ledger, database_url: str) -> None:
    """Every position at the head, and the tables as a clean rebuild writes them."""
    with make_projector(ledger, database_url) as runner:
        assert positions(runner) == dict.fromkeys(NAMES, head(ledger))
        tables = dump(runner)
        assert_not_trivial(tables)
        runner.rebuild()
        assert dump(runner) == tables


def test_two_runners_in_threads_count_each_event_once(ledger: Ledger, database_url: str) -> None:
    small_demo(ledger)
    with make_projector(ledger, database_url) as setup:
        assert setup.setup() == list(NAMES)
    counted = Processed()
    assert catch_up_together(database_url, counted.projections, (5, 7)) == []
    for projection in all_projections():
        assert sorted(counted.positions[projection.name]) == handled(ledger, projection)
    assert_caught_up_as_a_rebuild(ledger, database_url)


def test_two_runners_starting_together_on_a_new_database(ledger: Ledger, database_url: str) -> None:
    """Two workers started at once on a database whose projections were never built:
    both set them up (one may redo what the other did); neither may fail."""
    small_demo(ledger)
    assert catch_up_together(database_url, all_projections, (5, 7)) == []
    assert_caught_up_as_a_rebuild(ledger, database_url)


# 7. Rebuilding some projections


def test_rebuild_rebuilds_the_named_projections_only(ledger: Ledger, database_url: str) -> None:
    small_demo(ledger)
    total, last = projected(ledger), head(ledger)
    with make_projector(ledger, database_url) as projector:
        projector.catch_up()
        built = dump(projector)
        assert_not_trivial(built)
        with projector.database.transaction() as tx:
            for projection in projector.projections.values():
                tx.execute(f"DELETE FROM {projection.tables[0]}")
        removed = dump(projector)

        with pytest.raises(UnknownProjection) as refused:
            projector.rebuild(["history", "nope"])
        message = str(refused.value)
        assert "'nope'" in message
        assert all(name in message for name in NAMES)
        assert isinstance(refused.value, ValueError)
        # Refused before anything was dropped.
        assert dump(projector) == removed
        assert positions(projector) == dict.fromkeys(NAMES, last)

        # A rebuild reads the events the projections it rebuilds read.
        assert projector.rebuild(["history"]) == len(handled(ledger, TransactionHistory()))
        tables = dump(projector)
        assert positions(projector) == dict.fromkeys(NAMES, last)
        for table in tables_of(projector, ["history"]):
            assert tables[table] == built[table]
        for table in tables_of(projector, ["subscriptions", "revenue"]):
            assert tables[table] == removed[table]
        assert projector.rebuild() == total
        assert dump(projector) == built
