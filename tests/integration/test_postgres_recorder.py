"""The ledger's PostgreSQL recorder keeps the library's guarantees with fewer round trips."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from eventsourcing.postgres import PostgresDatastore

from commands.bootstrap import bootstrap, prepare_storage
from commands.settings import persistence_env
from ledger.customers import Customer
from ledger.key_store import TABLE, PostgresKeyStore
from ledger.postgres_recorder import MAX_VALUES_ROWS, LeanPostgresApplicationRecorder
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgres
AT = datetime(2025, 1, 1, tzinfo=UTC)


def test_saves_are_numbered_in_order_and_all_or_nothing(postgres_url: str) -> None:
    with bootstrap(postgres_url) as ledger:
        assert isinstance(ledger.recorder, LeanPostgresApplicationRecorder)
        ann = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
        bo = Customer.register(uuid4(), "bo@example.com", "Bo", "EUR", AT)
        recordings = ledger.save(ann, bo)
        ids = [r.notification.id for r in recordings]
        assert ids[1] == ids[0] + 1

        stale = ledger.customer(ann.id)
        ann.change_contact("ann@example.org", "Ann", AT)
        ledger.save(ann)
        stale.change_contact("ann@example.net", "Ann", AT)  # a concurrent writer
        cid = Customer.register(uuid4(), "cid@example.com", "Cid", "EUR", AT)
        with pytest.raises(IntegrityError):
            ledger.save(cid, stale)
        assert cid.id not in ledger.repository  # nothing of the failed save was kept
        assert ledger.customer(ann.id).email == "ann@example.org"


@pytest.mark.parametrize("count", [1, MAX_VALUES_ROWS, MAX_VALUES_ROWS + 1, 300])
def test_any_number_of_events_goes_in_in_order(postgres_url: str, count: int) -> None:
    """A few rows as VALUES, more over arrays: both keep the order they were given."""
    with bootstrap(postgres_url) as ledger:
        customers = [
            Customer.register(uuid4(), f"c{n}@example.com", f"C{n}", "EUR", AT)
            for n in range(count)
        ]
        recordings = ledger.save(*customers)
        assert [r.notification.originator_id for r in recordings] == [c.id for c in customers]
        ids = [r.notification.id for r in recordings]
        assert ids == list(range(ids[0], ids[0] + count))
        stored = ledger.recorder.select_notifications(ids[0], count)
        assert [n.originator_id for n in stored] == [c.id for c in customers]
        assert ledger.customer(customers[-1].id).email == f"c{count - 1}@example.com"


def test_a_listener_is_woken_and_a_subscription_follows_the_sequence(postgres_url: str) -> None:
    with bootstrap(postgres_url) as ledger:
        ledger.save(Customer.register(uuid4(), "a@example.com", "A", "EUR", AT))
        with psycopg.connect(POSTGRES_URL, autocommit=True) as listener:
            listener.execute("LISTEN ledger_events")
            with ledger.recorder.subscribe(gt=0) as subscription:
                ledger.save(Customer.register(uuid4(), "b@example.com", "B", "EUR", AT))
                ledger.save(Customer.register(uuid4(), "c@example.com", "C", "EUR", AT))
                seen = [n.id for _, n in zip(range(3), subscription, strict=False)]
            woken = list(listener.notifies(timeout=2, stop_after=1))
        assert seen == [1, 2, 3]
        assert {note.channel for note in woken} == {"ledger_events"}


def test_writers_wait_for_the_table_lock(postgres_url: str) -> None:
    """Commit order must equal notification order: each insert takes the EXCLUSIVE lock."""
    with bootstrap(postgres_url) as ledger:
        ledger.save(Customer.register(uuid4(), "a@example.com", "A", "EUR", AT))
        table = f'"{persistence_env(postgres_url)["POSTGRES_SCHEMA"]}".ledger_events'
        with psycopg.connect(POSTGRES_URL) as blocker:
            # ROW SHARE conflicts with EXCLUSIVE only: a writer without the lock would pass.
            blocker.execute(f"LOCK TABLE {table} IN ROW SHARE MODE")
            writer = threading.Thread(
                target=ledger.save,
                args=(Customer.register(uuid4(), "b@example.com", "B", "EUR", AT),),
            )
            writer.start()
            writer.join(timeout=1.0)
            assert writer.is_alive(), "the insert did not wait for the table lock"
            blocker.rollback()
        writer.join(timeout=5)
        assert not writer.is_alive()
        assert sum(ledger.event_counts_by_type().values()) == 2


def test_key_stores_set_up_at_once_on_a_new_schema_all_succeed(postgres_url: str) -> None:
    """Each ledger starting creates the personal key table if missing; done by several
    at the same instant, a bare CREATE TABLE IF NOT EXISTS fails on all but one."""
    env = persistence_env(postgres_url)
    prepare_storage(env)
    datastores = [
        PostgresDatastore(
            env["POSTGRES_DBNAME"],
            env["POSTGRES_HOST"],
            env["POSTGRES_PORT"],
            env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
            schema=env["POSTGRES_SCHEMA"],
        )
        for _ in range(6)
    ]
    start = threading.Barrier(len(datastores))
    failures: list[BaseException] = []

    def set_up(store: PostgresKeyStore) -> None:
        start.wait()
        try:
            store.setup()
        except BaseException as error:  # reported below, on the test's thread
            failures.append(error)

    threads = [threading.Thread(target=set_up, args=(PostgresKeyStore(d),)) for d in datastores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for datastore in datastores:
        datastore.close()
    assert failures == []
    with psycopg.connect(POSTGRES_URL) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = %s",
            (env["POSTGRES_SCHEMA"], TABLE),
        ).fetchone() == (1,)
