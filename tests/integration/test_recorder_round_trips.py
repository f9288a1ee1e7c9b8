"""The recorder's shortcuts (BEGIN sent with the lock, aggregates loaded in one query)
keep what the library's way guaranteed: a failed save leaves no transaction open on the
pooled connection, and a load sees snapshots and the events after them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError
from psycopg.pq import TransactionStatus

from commands.bootstrap import bootstrap
from ledger.customers import Customer, PaymentMethod
from ledger.postgres_recorder import LeanPostgresApplicationRecorder

pytestmark = pytest.mark.postgres
AT = datetime(2025, 1, 1, tzinfo=UTC)


def test_a_conflicting_save_ends_its_transaction_before_the_connection_is_reused(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with bootstrap(postgres_url) as ledger:
        ann = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
        ledger.save(ann)
        stale = ledger.customer(ann.id)
        ann.change_contact("ann@example.org", "Ann", AT)
        ledger.save(ann)
        stale.change_contact("ann@example.net", "Ann", AT)
        with caplog.at_level(logging.WARNING, logger="psycopg.pool"), pytest.raises(IntegrityError):
            ledger.save(stale)

        # The pool did not have to roll it back (it warns when it does).
        assert [r.message for r in caplog.records if "rolling back" in r.message] == []
        assert isinstance(ledger.recorder, LeanPostgresApplicationRecorder)
        with ledger.recorder.datastore.get_connection() as conn:
            assert conn.pgconn.transaction_status == TransactionStatus.IDLE
        bo = Customer.register(uuid4(), "bo@example.com", "Bo", "EUR", AT)
        (recording,) = ledger.save(bo)
        assert recording.notification.id == ledger.recorder.max_notification_id()
        assert ledger.customer(ann.id).email == "ann@example.org"


def test_many_aggregates_load_in_one_go_from_their_snapshots_and_later_events(
    postgres_url: str,
) -> None:
    with bootstrap(postgres_url) as ledger:
        # Snapshots every 50 events: one customer past a snapshot, one short of any.
        old = Customer.register(uuid4(), "old@example.com", "Old", "EUR", AT)
        for n in range(52):
            card = PaymentMethod(f"pm_{n}", "sandbox", f"tok_{n}", "visa", "4242", 12, 2030)
            old.add_payment_method(card, True, AT)
        new = Customer.register(uuid4(), "new@example.com", "New", "EUR", AT)
        ledger.save(old, new)
        assert ledger.snapshots is not None
        assert [s.originator_version for s in ledger.snapshots.get(old.id)] == [50]

        assert isinstance(ledger.recorder, LeanPostgresApplicationRecorder)
        rows = ledger.recorder.select_current("ledger_snapshots", [new.id, old.id])
        # Each aggregate's rows together: its snapshot first, then only the events after it.
        assert [(r.originator_id, r.originator_version) for r in rows] == sorted(
            [(new.id, 1), (old.id, 50), (old.id, 51), (old.id, 52), (old.id, 53)]
        )
        assert rows[[r.originator_id for r in rows].index(old.id)].topic.endswith("Snapshot")

        loaded = ledger.load_many([old.id, new.id, uuid4(), old.id])

        assert set(loaded) == {old.id, new.id}
        again, fresh = loaded[old.id], loaded[new.id]
        assert isinstance(again, Customer)
        assert isinstance(fresh, Customer)
        assert again.version == old.version == 53
        assert sorted(again.payment_methods) == sorted(old.payment_methods)
        assert len(again.payment_methods) == 52
        assert (fresh.version, fresh.email) == (1, "new@example.com")
        assert ledger.load_many([]) == {}


def test_loading_looks_each_aggregate_up_by_index_on_a_fresh_ledger(postgres_url: str) -> None:
    """Never analysed, a few thousand rows: the planner's favourite is to scan the whole
    events table and hash-join it; the load must still look each aggregate up by index."""
    with bootstrap(postgres_url) as ledger:
        customers = [
            Customer.register(uuid4(), f"c{n}@example.com", f"C {n}", "EUR", AT)
            for n in range(2000)
        ]
        ledger.save(*customers)
        recorder = ledger.recorder
        assert isinstance(recorder, LeanPostgresApplicationRecorder)
        recorder.select_current("ledger_snapshots", [customers[0].id])
        statement = recorder._select_current["ledger_snapshots"]
        with recorder.datastore.get_connection() as conn:
            conn.execute("SET plan_cache_mode = force_generic_plan")
            conn.execute(b"PREPARE load_current AS " + statement.replace(b"%b", b"$1"))
            ids = "{" + ",".join(str(c.id) for c in customers[:3]) + "}"
            plan = conn.execute(f"EXPLAIN EXECUTE load_current('{ids}')").fetchall()
            conn.execute("DEALLOCATE load_current")
            conn.execute("RESET plan_cache_mode")
        lines = [row["QUERY PLAN"] for row in plan]
        assert not [line for line in lines if "Seq Scan" in line], "\n".join(lines)
        assert len(ledger.load_many([c.id for c in customers[:3]])) == 3


def test_loading_is_planned_once_per_connection_not_at_every_execution(
    postgres_url: str,
) -> None:
    """PostgreSQL plans a prepared statement anew for each execution while those custom
    plans look cheaper than the generic one, as they always did for the load query: the
    planning cost as much as the look-ups."""
    with bootstrap(postgres_url) as ledger:
        customer = Customer.register(uuid4(), "c@example.com", "C", "EUR", AT)
        ledger.save(customer)
        for _ in range(30):
            assert set(ledger.load_many([customer.id, uuid4()])) == {customer.id}
        recorder = ledger.recorder
        assert isinstance(recorder, LeanPostgresApplicationRecorder)
        with recorder.datastore.get_connection() as conn:
            plans = conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%unnest(%' AND statement LIKE '%ledger_snapshots%'"
            ).fetchall()
        assert plans, "the load query was not prepared on this connection"
        assert [(p["generic_plans"] > 0, p["custom_plans"]) for p in plans] == [(True, 0)]
