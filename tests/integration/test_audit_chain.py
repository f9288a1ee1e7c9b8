"""The audit chain catches whoever changes the stored events behind the ledger's back.

A shop runs for two months; then someone with write access to the database edits,
deletes, reorders or inserts rows with plain SQL, and ``audit verify`` names the first
broken link. What the chain alone cannot catch (the newest events deleted, the chain
recomputed from a changed row on) an anchor kept elsewhere does.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import redis
from typer.testing import CliRunner

from commands.audit import Anchor, Break, VerifyReport, anchor, chain_recorder, verify
from commands.bootstrap import bootstrap, prepare_storage
from commands.cli import app
from commands.settings import persistence_env, sqlite_path
from commands.streams import Streams
from ledger.application import Ledger
from ledger.catalog import Plan
from ledger.chain import ChainRow, link
from ledger.customers import Customer
from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.integration.conftest import Shop

AT = datetime(2025, 1, 1, tzinfo=UTC)


class EventTable:
    """The ledger's event table, reached with plain SQL as a tamperer would."""

    def __init__(self, url: str) -> None:
        env = persistence_env(url)
        path = sqlite_path(url)
        self.sqlite = path is not None
        if path is not None:
            self.conn: Any = sqlite3.connect(path, isolation_level=None)
            self.table, self.position = "stored_events", "rowid"
        else:
            self.conn = psycopg.connect(POSTGRES_URL, autocommit=True)
            self.table = f'"{env["POSTGRES_SCHEMA"]}".ledger_events'
            self.position = "notification_id"

    def execute(self, statement: str, *params: Any) -> None:
        statement = statement.format(t=self.table, pos=self.position)
        if not self.sqlite:
            statement = statement.replace("?", "%s")
        self.conn.execute(statement, [self._param(p) for p in params])

    def _param(self, value: Any) -> Any:
        return value.hex if self.sqlite and isinstance(value, UUID) else value

    def swap(self, first: int, second: int) -> None:
        """Moves two whole rows (hashes too) to each other's position."""
        self.execute("UPDATE {t} SET {pos} = -1 WHERE {pos} = ?", first)
        self.execute("UPDATE {t} SET {pos} = ? WHERE {pos} = ?", first, second)
        self.execute("UPDATE {t} SET {pos} = ? WHERE {pos} = -1", second)

    def insert_after(self, position: int, row: ChainRow) -> int:
        """Moves every row after ``position`` one place on, and puts ``row`` in the gap."""
        self.execute("UPDATE {t} SET {pos} = -{pos} WHERE {pos} > ?", position)
        self.execute("UPDATE {t} SET {pos} = 1 - {pos} WHERE {pos} < 0")
        self.append(row, position + 1)
        return position + 1

    def append(self, row: ChainRow, position: int) -> None:
        self.execute(
            "INSERT INTO {t} ({pos}, originator_id, originator_version, topic, state, "
            "account_id, chain_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            position,
            row.originator_id,
            row.originator_version,
            row.topic,
            row.state,
            row.account_id,
            row.chain_hash,
        )

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def table(shop: Shop, database_url: str) -> Iterator[EventTable]:
    """Two months of a small shop's life, and its event table."""
    for _ in range(3):
        shop.subscribe(shop.customer(), plan="basic")
    shop.subscribe(shop.customer(), plan="pro")
    shop.run_until(datetime(2025, 3, 5, tzinfo=UTC))
    tampering = EventTable(database_url)
    yield tampering
    tampering.close()


def rows(ledger: Ledger) -> list[ChainRow]:
    return chain_recorder(ledger).select_chain(1, 1_000_000)


def hex_hash(row: ChainRow) -> str:
    assert row.chain_hash is not None
    return row.chain_hash.hex()


def check(ledger: Ledger, given: Anchor | None = None) -> VerifyReport:
    return verify(chain_recorder(ledger), given, page=7)  # small pages: breaks span them


def forged(template: ChainRow, previous: bytes | None = None) -> ChainRow:
    """A new customer's registration, linked from ``previous`` if given (the recipe is
    public), else with the hash of ``template`` copied."""
    originator_id = uuid4()
    state = template.state.replace(b"Ann", b"Eve")
    chain_hash = (
        link(previous, originator_id, 1, template.topic, originator_id, state)
        if previous is not None
        else template.chain_hash
    )
    return ChainRow(0, originator_id, 1, template.topic, originator_id, state, chain_hash)


def test_the_chain_of_a_running_shop_is_intact(shop: Shop, table: EventTable) -> None:
    stored = rows(shop.ledger)
    report = check(shop.ledger)
    assert report.intact
    assert report.broken is None
    assert report.checked == len(stored) > 40
    head = anchor(chain_recorder(shop.ledger))
    assert head == report.head == Anchor(stored[-1].position, hex_hash(stored[-1]), len(stored))
    # Every event of a customer's account, and none of another's, is on the account.
    customer = next(r for r in stored if r.topic.startswith("ledger.customers:"))
    owned = [r for r in stored if r.account_id == customer.account_id]
    assert {r.topic.split(":")[0] for r in owned} >= {
        "ledger.customers",
        "ledger.subscriptions",
        "ledger.invoices",
    }
    account = chain_recorder(shop.ledger).select_account(customer.originator_id)
    assert [p for p, _ in account] == [r.position for r in owned]
    assert [e.state for _, e in account] == [r.state for r in owned]
    catalog = [r for r in stored if r.topic.startswith("ledger.catalog:")]
    assert catalog
    assert all(r.account_id is None for r in catalog)


def test_an_edited_row_is_named(shop: Shop, table: EventTable) -> None:
    victim = next(r for r in rows(shop.ledger)[20:] if b"EUR" in r.state)
    table.execute(
        "UPDATE {t} SET state = ? WHERE {pos} = ?",
        victim.state.replace(b"EUR", b"USD"),
        victim.position,
    )
    broken = check(shop.ledger).broken
    assert broken is not None
    assert (broken.position, broken.kind) == (victim.position, Break.HASH)
    assert "this row's fields were changed" in broken.message


def test_an_event_moved_to_another_account_is_named(shop: Shop, table: EventTable) -> None:
    victim = next(r for r in rows(shop.ledger)[10:] if r.account_id is not None)
    table.execute("UPDATE {t} SET account_id = ? WHERE {pos} = ?", uuid4(), victim.position)
    report = check(shop.ledger)
    assert report.broken is not None
    assert report.broken.position == victim.position


def test_a_deleted_row_is_named_by_the_row_after_it(shop: Shop, table: EventTable) -> None:
    stored = rows(shop.ledger)
    table.execute("DELETE FROM {t} WHERE {pos} = ?", stored[15].position)
    report = check(shop.ledger)
    assert report.broken is not None
    assert (report.broken.position, report.broken.kind) == (stored[16].position, Break.HASH)
    assert f"position {stored[15].position} is absent" in (report.broken.message)
    assert report.checked == 15
    assert report.head is not None
    assert report.head.position == stored[14].position


def test_swapped_rows_are_named(shop: Shop, table: EventTable) -> None:
    stored = rows(shop.ledger)
    table.swap(stored[12].position, stored[30].position)
    broken = check(shop.ledger).broken
    assert broken is not None
    assert broken.position == stored[12].position
    assert "inserted, moved or given another hash" in broken.message


def test_an_inserted_row_is_named(shop: Shop, table: EventTable) -> None:
    stored = rows(shop.ledger)
    customer = next(r for r in stored if r.topic == "ledger.customers:Customer.Registered")
    # A copied hash does not link from the row before: the forged row itself is named.
    position = table.insert_after(stored[25].position, forged(customer))
    broken = check(shop.ledger).broken
    assert broken is not None
    assert broken.position == position
    assert "this row was inserted" in broken.message


def test_a_row_inserted_with_a_correct_link_breaks_the_next(shop: Shop, table: EventTable) -> None:
    """The recipe has no secret: a forger can link a row from the one before; the row
    after it, though, was linked from another hash."""
    stored = rows(shop.ledger)
    customer = next(r for r in stored if r.topic == "ledger.customers:Customer.Registered")
    position = table.insert_after(stored[25].position, forged(customer, stored[25].chain_hash))
    broken = check(shop.ledger).broken
    assert broken is not None
    assert broken.position == position + 1  # the old stored[26], moved one place on
    assert "or what comes before it" in broken.message


def test_the_newest_events_deleted_are_caught_only_against_an_anchor(
    shop: Shop, table: EventTable
) -> None:
    kept = anchor(chain_recorder(shop.ledger))
    stored = rows(shop.ledger)
    table.execute("DELETE FROM {t} WHERE {pos} > ?", stored[-4].position)
    # The rest of the chain is whole: without the anchor nothing tells it was longer.
    alone = check(shop.ledger)
    assert alone.intact
    assert alone.checked == len(stored) - 3
    against = check(shop.ledger, kept)
    assert against.broken is not None
    assert (against.broken.position, against.broken.kind) == (
        kept.position,
        Break.ANCHOR_MISSING,
    )
    assert against.checked == len(stored) - 3


def test_a_recomputed_chain_is_caught_only_against_an_anchor(shop: Shop, table: EventTable) -> None:
    kept = anchor(chain_recorder(shop.ledger))
    stored = rows(shop.ledger)
    # Edit a row, then recompute every hash from it on, as a careful forger would.
    edited = next(n for n, r in enumerate(stored) if n > 20 and b"EUR" in r.state)
    state = stored[edited].state.replace(b"EUR", b"USD")
    table.execute("UPDATE {t} SET state = ? WHERE {pos} = ?", state, stored[edited].position)
    previous = stored[edited - 1].chain_hash
    for row in stored[edited:]:
        assert previous is not None
        fields = state if row is stored[edited] else row.state
        previous = link(
            previous, row.originator_id, row.originator_version, row.topic, row.account_id, fields
        )
        table.execute("UPDATE {t} SET chain_hash = ? WHERE {pos} = ?", previous, row.position)
    assert check(shop.ledger).intact
    broken = check(shop.ledger, kept).broken
    assert broken is not None
    assert (broken.position, broken.kind) == (kept.position, Break.ANCHOR_MISMATCH)


def test_a_row_appended_with_a_correct_link_passes(shop: Shop, table: EventTable) -> None:
    """What the chain cannot catch: a forger appending rows linked by the public recipe
    makes a longer chain as valid as the real one. An anchor vouches for what it saw, no
    more; only the events' own sources (the bus, the gateways) can contradict these."""
    kept = anchor(chain_recorder(shop.ledger))
    stored = rows(shop.ledger)
    customer = next(r for r in stored if r.topic == "ledger.customers:Customer.Registered")
    table.append(forged(customer, stored[-1].chain_hash), stored[-1].position + 1)
    report = check(shop.ledger, kept)
    assert report.intact
    assert report.checked == len(stored) + 1


def save_customers(url: str, count: int) -> None:
    """One writer: ``count`` customers, one save each."""
    with bootstrap(url) as ledger:
        for n in range(count):
            ledger.save(Customer.register(uuid4(), f"c{n}@example.com", f"C{n}", "EUR", AT))


def test_concurrent_writers_make_one_chain(database_url: str) -> None:
    """Threads with a ledger each, and two processes, all writing at once."""
    with bootstrap(database_url) as ledger:
        ledger.save(Plan.register("basic", "Basic", "", [], AT))
        spawn = multiprocessing.get_context("spawn")
        processes = [spawn.Process(target=save_customers, args=(database_url, 40)) for _ in "ab"]
        threads = [
            threading.Thread(target=save_customers, args=(database_url, 25)) for _ in range(3)
        ]
        for process in processes:
            process.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        for process in processes:
            process.join(timeout=120)
            assert process.exitcode == 0
        report = check(ledger)
        assert report.intact, report.broken
        assert report.checked == 1 + 2 * 40 + 3 * 25
        assert all(r.account_id == r.originator_id for r in rows(ledger)[1:])


def open_ledger(url: str) -> None:
    with bootstrap(url):
        pass


def test_a_ledger_stored_before_the_chain_is_upgraded_once(database_url: str) -> None:
    env = persistence_env(database_url)
    del env["APPLICATION_RECORDER_TOPIC"]  # the library's recorder: no chain columns
    prepare_storage(env)
    old = Ledger(env=env)
    customer = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
    old.save(Plan.register("basic", "Basic", "", [], AT), customer)
    customer.change_contact("ann@example.org", "Ann", AT)
    old.save(customer)
    old.close()
    # Two processes start on it together: one upgrades, the other finds it done.
    spawn = multiprocessing.get_context("spawn")
    starting = [spawn.Process(target=open_ledger, args=(database_url,)) for _ in "ab"]
    for process in starting:
        process.start()
    for process in starting:
        process.join(timeout=60)
        assert process.exitcode == 0
    with bootstrap(database_url) as ledger:
        before = rows(ledger)
        assert len(before) == 3
        assert all(r.account_id is None for r in before)
        bo = Customer.register(uuid4(), "bo@example.com", "Bo", "EUR", AT)
        ledger.save(bo)
        report = check(ledger)
        assert report.intact
        assert report.checked == 4
        assert rows(ledger)[-1].account_id == bo.id
        # Old events have no account: the upgrade could not tell it without the mapper.
        assert chain_recorder(ledger).select_account(customer.id) == []
        assert ledger.customer(customer.id).email == "ann@example.org"


runner = CliRunner()


def test_the_cli_verifies_and_anchors(
    shop: Shop, table: EventTable, database_url: str, tmp_path: Path, streams: Streams
) -> None:
    def audit(*args: str) -> tuple[int, Any]:
        result = runner.invoke(
            app,
            ["audit", *args, "--database-url", database_url],
            env={"SUBLEDGER_REDIS_URL": REDIS_URL},
        )
        return result.exit_code, json.loads(result.stdout)

    kept = tmp_path / "anchor.json"
    stream = f"{streams.prefix}:anchors"
    code, taken = audit("anchor", "--out", str(kept), "--stream", stream)
    assert code == 0
    stored = rows(shop.ledger)
    assert taken == {
        "position": stored[-1].position,
        "head": hex_hash(stored[-1]),
        "count": len(stored),
    }
    assert json.loads(kept.read_text()) == taken
    with redis.Redis.from_url(REDIS_URL) as client:
        [(_, fields)] = client.xrange(stream)
    assert json.loads(fields[b"data"]) == taken

    code, report = audit("verify", "--json", "--anchor", str(kept))
    assert code == 0
    assert report["intact"]
    assert report["checked"] == len(stored)
    assert report["head"] == taken
    assert report["broken"] is None

    table.execute("DELETE FROM {t} WHERE {pos} = ?", stored[-1].position)
    code, report = audit("verify", "--json")
    assert code == 0
    assert report["checked"] == len(stored) - 1
    code, report = audit("verify", "--json", "--anchor", str(kept))
    assert code == 1
    assert not report["intact"]
    assert report["broken"]["position"] == stored[-1].position
    assert report["broken"]["kind"] == "anchor_missing"

    table.execute("UPDATE {t} SET topic = 'x' WHERE {pos} = ?", stored[3].position)
    result = runner.invoke(app, ["audit", "verify", "--database-url", database_url])
    assert result.exit_code == 1
    assert f"broken at position {stored[3].position}" in result.stdout

    kept.write_text("{}")
    code, answer = audit("verify", "--anchor", str(kept))
    assert code == 2
    assert answer["error"] == "invalid_anchor"
