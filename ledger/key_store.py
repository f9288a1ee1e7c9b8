"""The customers' wrapped personal data keys (``ledger.personal_data``), in the event
store's own database: the table ``personal_keys`` in the SQLite file, or in the
PostgreSQL schema of the event store, reached through the event store's connections.

``personal_keys (customer_id PRIMARY KEY, wrapped_key, erased_at)``: ``wrapped_key`` is
the customer's data key encrypted by the master key (AES-GCM: nonce, tag, ciphertext);
erasing the customer sets it to NULL and ``erased_at`` to when. The row stays, so that no
key is ever made again for an erased customer. One row, under the nil UUID, holds a fixed
value sealed by the master key the store was first opened with: any other master key is
refused at start, even before the first customer (two keys would split the store). The
table is outside the audit chain on purpose: destroying a key changes no stored event.

A new customer's key is added by the recorder, in the transaction of the events sealed
with it (``add_in``, see ``ledger.personal_data.keys_to_store``); the check row and the
destruction of a key have their own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, IntegrityError
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore
from psycopg import Connection
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.personal_data import CHECK_ROW, KeyStore

TABLE = "personal_keys"
# Serialises the PostgreSQL table's creation: CREATE TABLE IF NOT EXISTS run by two
# sessions at once fails on the second (a duplicate row type).
SETUP_LOCK = 0x7375626B6579  # "subkey"
# Adding a key a row holds already counts as stored (two saves of one process may carry
# the same pending key), unlike another key or a destroyed one (NULL equals nothing).
# The table is named t.
_ADD_TAIL = (
    " ON CONFLICT (customer_id) DO UPDATE SET wrapped_key = excluded.wrapped_key "
    "WHERE t.wrapped_key = excluded.wrapped_key RETURNING customer_id"
)


class SQLiteKeyStore:
    def __init__(self, datastore: SQLiteDatastore) -> None:
        self.datastore = datastore

    def setup(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (customer_id TEXT PRIMARY KEY, "
                "wrapped_key BLOB, erased_at TEXT)"
            )

    def wrapped(self, customer_ids: Collection[UUID]) -> dict[UUID, bytes | None]:
        found: dict[UUID, bytes | None] = {}
        ids = [str(i) for i in customer_ids]
        # Within SQLite's oldest limit on parameters per statement.
        for start in range(0, len(ids), 900):
            page = ids[start : start + 900]
            with self.datastore.transaction(commit=False) as curs:
                curs.execute(
                    f"SELECT customer_id, wrapped_key FROM {TABLE} "
                    f"WHERE customer_id IN ({', '.join('?' * len(page))})",
                    page,
                )
                found |= {UUID(row[0]): _bytes(row[1]) for row in curs.fetchall()}
        return found

    def add(self, keys: Mapping[UUID, bytes]) -> set[UUID]:
        with self.datastore.transaction(commit=True) as curs:
            return self.add_in(curs, keys)

    @staticmethod
    def add_in(curs: SQLiteCursor, keys: Mapping[UUID, bytes]) -> set[UUID]:
        """``add`` within the transaction of ``curs``."""
        stored = set()
        insert = f"INSERT INTO {TABLE} AS t (customer_id, wrapped_key) VALUES (?, ?)"
        insert += _ADD_TAIL
        for customer_id, wrapped in keys.items():
            curs.execute(insert, (str(customer_id), wrapped))
            if curs.fetchone() is not None:
                stored.add(customer_id)
        return stored

    def destroy(self, customer_id: UUID, at: datetime) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                f"INSERT INTO {TABLE} (customer_id, wrapped_key, erased_at) VALUES (?, NULL, ?) "
                "ON CONFLICT (customer_id) DO UPDATE SET wrapped_key = NULL, "
                f"erased_at = COALESCE({TABLE}.erased_at, excluded.erased_at)",
                (str(customer_id), at.isoformat()),
            )

    def check_value(self, candidate: bytes) -> bytes:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                f"INSERT INTO {TABLE} (customer_id, wrapped_key) VALUES (?, ?) "
                "ON CONFLICT (customer_id) DO NOTHING",
                (str(CHECK_ROW), candidate),
            )
            curs.execute(
                f"SELECT wrapped_key FROM {TABLE} WHERE customer_id = ?", (str(CHECK_ROW),)
            )
            row = curs.fetchone()
        assert row is not None  # inserted just before, if it was not there
        return bytes(row[0])


class PostgresKeyStore:
    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self._table = SQL("{0}.{1}").format(Identifier(datastore.schema), Identifier(TABLE))
        self._rendered: dict[str, bytes] = {}

    def _sql(self, text: str) -> bytes:
        """The statement on this store's table, rendered once: psycopg renders a Composed
        on every execute."""
        statement = self._rendered.get(text)
        if statement is None:
            statement = self._rendered[text] = SQL(text).format(table=self._table).as_bytes()
        return statement

    def setup(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (SETUP_LOCK,))
            curs.execute(
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {table} (customer_id uuid PRIMARY KEY, "
                    "wrapped_key bytea, erased_at timestamptz)"
                )
            )

    # One statement each, on the pool's autocommit connection: atomic on its own, and one
    # round trip where BEGIN, the statement and COMMIT (or ROLLBACK) were three.
    def wrapped(self, customer_ids: Collection[UUID]) -> dict[UUID, bytes | None]:
        with self.datastore.get_connection() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT customer_id, wrapped_key FROM {table} "
                    "WHERE customer_id = ANY(%b::uuid[])"
                ),
                (list(customer_ids),),
            ).fetchall()
        return {row["customer_id"]: _bytes(row["wrapped_key"]) for row in rows}

    def add(self, keys: Mapping[UUID, bytes]) -> set[UUID]:
        with self.datastore.get_connection() as conn:
            return self.add_in(conn, keys)

    def add_in(self, conn: Connection[Any], keys: Mapping[UUID, bytes]) -> set[UUID]:
        """``add`` within the transaction of ``conn`` (with none, on its own)."""
        insert = self._sql(
            "INSERT INTO {table} AS t (customer_id, wrapped_key) "
            "SELECT * FROM unnest(%b::uuid[], %b::bytea[])" + _ADD_TAIL
        )
        with conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(insert, (list(keys), list(keys.values())), prepare=True)
            return {row[0] for row in curs.fetchall()}

    def destroy(self, customer_id: UUID, at: datetime) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._sql(
                    "INSERT INTO {table} (customer_id, wrapped_key, erased_at) "
                    "VALUES (%s, NULL, %s) ON CONFLICT (customer_id) DO UPDATE SET "
                    "wrapped_key = NULL, erased_at = COALESCE({table}.erased_at, "
                    "excluded.erased_at)"
                ),
                (customer_id, at),
            )

    def check_value(self, candidate: bytes) -> bytes:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._sql(
                    "INSERT INTO {table} (customer_id, wrapped_key) VALUES (%s, %s) "
                    "ON CONFLICT (customer_id) DO NOTHING"
                ),
                (CHECK_ROW, candidate),
            )
            curs.execute(
                self._sql("SELECT wrapped_key FROM {table} WHERE customer_id = %s"), (CHECK_ROW,)
            )
            row = curs.fetchone()
        assert row is not None  # inserted just before, if it was not there
        return bytes(row["wrapped_key"])


class MemoryKeyStore:
    """For a ledger kept in memory (eventsourcing's POPO persistence): keys go with it."""

    def __init__(self) -> None:
        self.rows: dict[UUID, bytes | None] = {}

    def setup(self) -> None:
        pass

    def wrapped(self, customer_ids: Collection[UUID]) -> dict[UUID, bytes | None]:
        return {i: self.rows[i] for i in customer_ids if i in self.rows}

    def add(self, keys: Mapping[UUID, bytes]) -> set[UUID]:
        return {i for i, wrapped in keys.items() if self.rows.setdefault(i, wrapped) == wrapped}

    def destroy(self, customer_id: UUID, at: datetime) -> None:
        self.rows[customer_id] = None

    def check_value(self, candidate: bytes) -> bytes:
        found = self.rows.setdefault(CHECK_ROW, candidate)
        assert found is not None
        return found


def refuse_conflicts(keys: Mapping[UUID, bytes], stored: set[UUID]) -> None:
    """Fails a save whose events were sealed with ``keys`` if some were not stored (its
    customer's row holds another key, or none): the save is tried again on fresh state."""
    if refused := [str(i) for i in keys if i not in stored]:
        raise IntegrityError(f"another personal data key is stored for {', '.join(refused)}")


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def key_store_for(recorder: ApplicationRecorder) -> KeyStore:
    """The key store beside the event store of ``recorder``."""
    datastore = getattr(recorder, "datastore", None)
    if isinstance(datastore, SQLiteDatastore):
        return SQLiteKeyStore(datastore)
    if isinstance(datastore, PostgresDatastore):
        return PostgresKeyStore(datastore)
    return MemoryKeyStore()
