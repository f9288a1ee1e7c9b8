"""The ledger's SQLite recorder: the library's, with each event's account and its link in
the audit chain (``ledger.chain``) stored beside it.

The library begins its write transactions with a plain (deferred) ``BEGIN``, which takes
the write lock only at the first INSERT: reading the newest row's hash first would let a
writer in another connection or process commit in between (or fail the upgrade of the
read lock). Inserts here begin with ``BEGIN IMMEDIATE``, which waits (the busy timeout,
``SQLITE_LOCK_TIMEOUT``) for the one write lock before reading the head: writers make one
chain. Readers are not blocked (WAL).

A table made before the chain existed gets its two columns when the recorder starts, once,
under the same write lock (a second process starting together waits, then finds them):
the rows stored before are linked in order, their accounts left null (telling them needs
the application's mapper: states may be compressed or encrypted).

The personal data keys the events were sealed with and that may not be stored yet (a new
customer's) are stored in the same transaction (see
``ledger.personal_data.keys_to_store``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteTransaction,
)

from ledger.accounts import account
from ledger.chain import GENESIS, ChainRow, links
from ledger.ids import as_uuid
from ledger.key_store import SQLiteKeyStore, refuse_conflicts
from ledger.personal_data import keys_to_store

# Rows linked per statement when a table made before the chain is upgraded.
UPGRADE_PAGE = 5_000


class _ImmediateTransaction(SQLiteTransaction):
    """A transaction holding the database's write lock from its start."""

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:  # busy beyond the timeout
            raise OperationalError(e) from e
        return cursor


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    def __init__(
        self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name)
        table = self.events_table_name
        self._select_head_hash = f"SELECT chain_hash FROM {table} ORDER BY rowid DESC LIMIT 1"
        self._insert_statement = (
            f"INSERT INTO {table} (originator_id, originator_version, topic, state, "
            "account_id, chain_hash) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._chain_columns = (
            "SELECT rowid, originator_id, originator_version, topic, account_id, state, "
            f"chain_hash FROM {table} "
        )

    @contextmanager
    def _writing(self) -> Iterator[SQLiteCursor]:
        with (
            self.datastore.get_connection(commit=True) as conn,
            _ImmediateTransaction(conn, commit=True) as curs,
            curs,
        ):
            yield curs

    def create_table(self) -> None:
        super().create_table()
        if not self._has_chain():
            with self._writing() as c:
                if not self._has_chain(c):  # another process may have upgraded meanwhile
                    self._upgrade(c)
        # Every SQLite index ends with the rowid: this one is (account_id, rowid).
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                f"CREATE INDEX IF NOT EXISTS {self.events_table_name}_account_idx "
                f"ON {self.events_table_name} (account_id) WHERE account_id IS NOT NULL"
            )

    def _has_chain(self, c: SQLiteCursor | None = None) -> bool:
        statement = f"SELECT 1 FROM pragma_table_info('{self.events_table_name}') "
        statement += "WHERE name = 'chain_hash'"
        if c is not None:
            c.execute(statement)
            return c.fetchone() is not None
        with self.datastore.transaction(commit=False) as reading:
            return self._has_chain(reading)

    def _upgrade(self, c: SQLiteCursor) -> None:
        """Adds the chain's columns and links the rows stored before, in order."""
        table = self.events_table_name
        c.execute(f"ALTER TABLE {table} ADD COLUMN account_id TEXT")
        c.execute(f"ALTER TABLE {table} ADD COLUMN chain_hash BLOB")
        previous, position = GENESIS, 0
        select = self._chain_columns + "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        while True:
            c.execute(select, (position, UPGRADE_PAGE))
            rows = [self._chain_row(row) for row in c.fetchall()]
            if not rows:
                return
            events = [_stored_event(row) for row in rows]
            hashes = links(previous, events, [None] * len(rows))
            c.executemany(
                f"UPDATE {table} SET chain_hash = ? WHERE rowid = ?",
                [(h, row.position) for h, row in zip(hashes, rows, strict=True)],
            )
            previous, position = hashes[-1], rows[-1].position

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._writing() as c:
            return self._insert_events(c, stored_events, **kwargs)

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        if keys := keys_to_store():
            refuse_conflicts(keys, SQLiteKeyStore.add_in(c, keys))
        c.execute(self._select_head_hash)
        head = c.fetchone()
        previous = head[0] if head and head[0] else GENESIS
        accounts = [account(as_uuid(e.originator_id)) for e in stored_events]
        hashes = links(previous, stored_events, accounts)
        ids = []
        for e, account_id, chain_hash in zip(stored_events, accounts, hashes, strict=True):
            originator_id = e.originator_id
            c.execute(
                self._insert_statement,
                (
                    originator_id.hex if isinstance(originator_id, UUID) else originator_id,
                    e.originator_version,
                    e.topic,
                    e.state,
                    account_id.hex if account_id is not None else None,
                    chain_hash,
                ),
            )
            ids.append(c.lastrowid)
        return ids

    def select_chain(self, start: int, limit: int) -> list[ChainRow]:
        """Up to ``limit`` rows of the chain from position ``start`` on, in order."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                self._chain_columns + "WHERE rowid >= ? ORDER BY rowid LIMIT ?", (start, limit)
            )
            return [self._chain_row(row) for row in c.fetchall()]

    def select_head(self) -> tuple[ChainRow, int] | None:
        """The newest row, and how many rows there are (one transaction: one snapshot)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self._chain_columns + "ORDER BY rowid DESC LIMIT 1")
            row = c.fetchone()
            if row is None:
                return None
            c.execute(f"SELECT count(*) FROM {self.events_table_name}")
            return self._chain_row(row), c.fetchone()[0]

    def select_account(self, account_id: UUID) -> list[tuple[int, StoredEvent]]:
        """The events of an account (position, event), in sequence order."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                self._chain_columns + "WHERE account_id = ? ORDER BY rowid", (account_id.hex,)
            )
            rows = [self._chain_row(row) for row in c.fetchall()]
        return [(row.position, _stored_event(row)) for row in rows]

    @staticmethod
    def _chain_row(row: sqlite3.Row) -> ChainRow:
        # SQLite stores what it is given: a field edited into another form (an upper-case
        # id, text for bytes) must break the chain, not pass as the value it parses to.
        originator_id = _uuid(row[1])
        account_id = _uuid(row[4]) if row[4] is not None else None
        canonical = (
            originator_id is not None
            and row[1] == originator_id.hex
            and (row[4] is None or (account_id is not None and row[4] == account_id.hex))
            and type(row[2]) is int
            and type(row[5]) is bytes
        )
        return ChainRow(
            row[0],
            originator_id or UUID(int=0),
            row[2] if type(row[2]) is int else 0,
            str(row[3]),
            account_id,
            row[5] if type(row[5]) is bytes else b"",
            row[6],
            canonical,
        )


def _uuid(text: object) -> UUID | None:
    try:
        return UUID(str(text))
    except ValueError:
        return None


def _stored_event(row: ChainRow) -> StoredEvent:
    return StoredEvent(row.originator_id, row.originator_version, row.topic, row.state)
