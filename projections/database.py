"""The projections' own connection to the database that holds the event store.

One small interface over psycopg and sqlite3, so that every projection runs the same SQL
on both: ``?`` placeholders (numbered ``$1, $2`` for PostgreSQL), and parameters passed
as text, integers or booleans only. PostgreSQL casts text to the declared column type
(``UUID``, ``TIMESTAMPTZ``, ``DATE``); SQLite keeps it as ISO 8601 text, whose order is
time order. What comes back differs (PostgreSQL gives ``UUID``, ``datetime``, ``date``,
and ``Decimal`` for sums; SQLite gives text and integers): ``projections.values`` reads
either.

Only ``insert_rows`` differs in how, not what: on PostgreSQL it sends rows with COPY
(through a staging table when conflicts must be resolved), many times faster than INSERT
statements; on SQLite, where statements cost no round trip, with ``executemany``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any, Protocol

import psycopg
from psycopg import sql

Params = Sequence[Any]
Row = tuple[Any, ...]

# Keys per IN (...) list: well below the limits on bound parameters (SQLite 32,766,
# PostgreSQL 65,535), large enough to amortise each statement.
IN_CHUNK = 2_000
# The key of the PostgreSQL advisory lock that exclusive transactions take.
SCHEMA_LOCK = 0x7375626C6564  # "subled"
_INSERT = re.compile(r"INSERT INTO (\w+) \(([\w, ]+)\)")


class Transaction(Protocol):
    def execute(self, statement: str, params: Params = ()) -> int:
        """Runs one statement; returns the number of rows it changed."""

    def query(self, statement: str, params: Params = ()) -> list[Row]: ...

    def insert_rows(self, insert: str, rows: Sequence[Params], on_conflict: str = "") -> None:
        """``insert`` (``INSERT INTO t (a, b)``) of every row, then ``on_conflict`` (for
        example ``ON CONFLICT (a) DO UPDATE SET b = excluded.b``) if given. Rows must not
        repeat a key that ``on_conflict`` updates."""


class Database(Protocol):
    backend: str

    def transaction(self, exclusive: bool = False) -> AbstractContextManager[Transaction]:
        """Commits on a normal exit, rolls back on an exception. An ``exclusive`` one
        waits for any other exclusive one on the database (schema changes)."""

    def query(self, statement: str, params: Params = ()) -> list[Row]:
        """Reads outside any explicit transaction."""

    def close(self) -> None: ...


def placeholders(count: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` list of ``count`` values."""
    return ", ".join("?" * count)


def chunked(keys: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``keys`` a few hundred at a time, for ``IN (...)`` lists."""
    for i in range(0, len(keys), IN_CHUNK):
        yield keys[i : i + IN_CHUNK]


def select_in(tx: Transaction, select: str, column: str, keys: Sequence[Any]) -> Iterator[Row]:
    """The rows of ``select WHERE column IN keys``."""
    for chunk in chunked(keys):
        yield from tx.query(f"{select} WHERE {column} IN ({placeholders(len(chunk))})", chunk)


class _PostgresTransaction:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    def execute(self, statement: str, params: Params = ()) -> int:
        with self._conn.cursor() as cur:
            cur.execute(_pg(statement), params)
            return cur.rowcount

    def query(self, statement: str, params: Params = ()) -> list[Row]:
        with self._conn.cursor() as cur:
            cur.execute(_pg(statement), params)
            return cur.fetchall()

    def insert_rows(self, insert: str, rows: Sequence[Params], on_conflict: str = "") -> None:
        if not rows:
            return
        if not on_conflict:
            self._copy(insert, rows)
            return
        # Through a staging table: COPY, then one INSERT ... SELECT that resolves the
        # conflicts, which is several times faster than binding the rows as parameters.
        match = _INSERT.fullmatch(insert)
        if match is None:
            raise ValueError(f"not an INSERT INTO table (columns): {insert!r}")
        table, columns = match.groups()
        stage = f"stage_{table}"
        self.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        self._copy(f"INSERT INTO {stage} ({columns})", rows)
        self.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} {on_conflict}")
        self.execute(f"TRUNCATE {stage}")

    def _copy(self, insert: str, rows: Sequence[Params]) -> None:
        copy = insert.replace("INSERT INTO", "COPY", 1) + " FROM STDIN"
        with self._conn.cursor() as cur, cur.copy(_pg(copy)) as pipe:
            for row in rows:
                pipe.write_row(row)


class PostgresDatabase:
    backend = "postgresql"

    def __init__(self, schema: str = "", **connect_kwargs: Any) -> None:
        self._schema = schema
        self._connect_kwargs = connect_kwargs
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Row]:
        # A raw cursor sends $n placeholders as they are, and no statement is prepared:
        # each batch's statements differ in length, so preparing them would only cost.
        conn: psycopg.Connection[Row] = psycopg.connect(
            **self._connect_kwargs,
            autocommit=True,
            cursor_factory=psycopg.RawCursor,
            prepare_threshold=None,
        )
        if self._schema:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
        # Instants come back in the session's zone: UTC, as everything in the ledger.
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    def _live(self) -> psycopg.Connection[Row]:
        """The connection, opened again if it was lost (the server restarted): the work
        that failed on it fails once, and the next (a node's next tick) finds a new one."""
        if self._conn.broken:
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def transaction(self, exclusive: bool = False) -> Iterator[Transaction]:
        conn = self._live()
        with conn.transaction():
            tx = _PostgresTransaction(conn)
            if exclusive:
                # Even CREATE TABLE IF NOT EXISTS fails when two sessions run it at once.
                tx.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            yield tx

    def query(self, statement: str, params: Params = ()) -> list[Row]:
        return _PostgresTransaction(self._live()).query(statement, params)

    def close(self) -> None:
        self._conn.close()


class _SQLiteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, statement: str, params: Params = ()) -> int:
        return self._conn.execute(statement, params).rowcount

    def query(self, statement: str, params: Params = ()) -> list[Row]:
        return self._conn.execute(statement, params).fetchall()

    def insert_rows(self, insert: str, rows: Sequence[Params], on_conflict: str = "") -> None:
        if rows:
            values = f"VALUES ({placeholders(len(rows[0]))})"
            self._conn.executemany(f"{insert} {values} {on_conflict}", rows)


class SQLiteDatabase:
    backend = "sqlite"
    # The event store writes to the same file; a writer waits this long for the other.
    BUSY_TIMEOUT_SECONDS = 30.0

    def __init__(self, path: str) -> None:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE takes the write
        # lock up front, so two runners cannot both read a position and then both write).
        self._conn = sqlite3.connect(
            path, isolation_level=None, timeout=self.BUSY_TIMEOUT_SECONDS, check_same_thread=False
        )

    @contextmanager
    def transaction(self, exclusive: bool = False) -> Iterator[Transaction]:
        # BEGIN IMMEDIATE takes SQLite's one write lock: every transaction is exclusive.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SQLiteTransaction(self._conn)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def query(self, statement: str, params: Params = ()) -> list[Row]:
        return self._conn.execute(statement, params).fetchall()

    def close(self) -> None:
        self._conn.close()


@lru_cache(maxsize=512)
def _pg(statement: str) -> sql.SQL:
    """The statement with PostgreSQL's own numbered placeholders (our SQL text has no
    other ``?``), which a raw cursor sends as they are: psycopg would otherwise parse a
    statement of thousands of ``%s`` on every call."""
    parts = statement.split("?")
    numbered = "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)) + parts[-1]
    return sql.SQL(numbered)
