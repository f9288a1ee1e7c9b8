"""A PostgreSQL recorder with the library's guarantees and fewer round trips.

eventsourcing's recorder serialises writers with ``LOCK TABLE ... IN EXCLUSIVE MODE``
(commit order equals notification order, so projections never skip an event) and
NOTIFYs listeners. It sends each statement through a pipeline and inserts through an
array of composite values. This one keeps the lock, the lock timeout and the NOTIFY,
sends them after BEGIN and before the read of the newest row's chain hash as one simple
query, then one INSERT ... RETURNING, then COMMIT: per command (or batch of commands),
three round trips. The personal data keys the events were sealed with and that may not
be stored yet (a new customer's) are stored in the same transaction, one round trip more
(see ``ledger.personal_data.keys_to_store``).
Each row also stores its account and its link in the audit chain (``ledger.chain``),
computed under the lock, so that concurrent writers make one chain. A command's few rows
go as prepared VALUES (the fastest for a handful); more, as one prepared statement over
six arrays (unnest), which psycopg need not parse anew for each size. Errors are
translated by the datastore as before (a duplicate key is ``IntegrityError``: the
optimistic-concurrency signal).

It also reads many aggregates' snapshots and events in one query, which the library's
recorder does in two per aggregate: the billing clock and the payment processor load
hundreds of aggregates per batch, and a command loads what it names in one round trip;
and the chain and an account's events, for the audit. Its connections keep one generic
plan per prepared statement (``GENERIC_PLANS``) rather than planning at every execution.

A table made before the chain existed gets its two columns when the recorder starts,
once, under an ACCESS EXCLUSIVE lock (a second process starting together waits, then
finds the columns there): the rows stored before are linked in order, their accounts
left null (telling them needs the application's mapper: states may be compressed or
encrypted).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow, TupleRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

from ledger.accounts import account
from ledger.chain import GENESIS, ChainRow, links
from ledger.ids import as_uuid
from ledger.key_store import PostgresKeyStore, refuse_conflicts
from ledger.personal_data import keys_to_store

# Up to this many rows, a prepared VALUES statement per row count; beyond, unnest.
MAX_VALUES_ROWS = 32
# Rows linked per statement when a table made before the chain is upgraded.
UPGRADE_PAGE = 5_000
GENERIC_PLANS = "plan_cache_mode=force_generic_plan"


class LeanPostgresApplicationRecorder(PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        # Before the pool's first connection: PostgreSQL re-planned the load query at every
        # execution (custom plans for a short array look cheaper than the generic plan's
        # guess for any), half of its time. Every statement on these connections finds rows
        # by key or position, for which one generic plan serves all parameters.
        kwargs = datastore.pool.kwargs
        assert isinstance(kwargs, dict)  # as eventsourcing makes the pool
        kwargs["options"] = f"{kwargs.get('options', '')} -c {GENERIC_PLANS}".strip()
        super().__init__(datastore, events_table_name=events_table_name)
        self._table = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        notify = SQL("NOTIFY {0}").format(Identifier(self.channel_name))
        head = SQL("SELECT chain_hash FROM {0} ORDER BY notification_id DESC LIMIT 1")
        # BEGIN goes with the rest: psycopg's transaction() would send it on its own. The
        # statements run on every save are rendered to bytes once: psycopg renders a
        # Composed on every execute, a tenth of a command's time.
        self._preamble = (
            SQL("; ")
            .join([SQL("BEGIN"), *self.lock_table_statements, notify, head.format(self._table)])
            .as_bytes()
        )
        self._insert_prefix = SQL(
            "INSERT INTO {0} (originator_id, originator_version, topic, state, account_id, "
            "chain_hash) "
        ).format(self._table)
        # Rows come out of unnest in array order, and get their ids in that order. Arrays
        # travel in binary (%b): as text, psycopg quotes each element with regular
        # expressions, a tenth of a billing run.
        self._insert_arrays = (
            self._insert_prefix
            + SQL(
                "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[], "
                "%b::uuid[], %b::bytea[]) RETURNING notification_id"
            )
        ).as_bytes()
        self._insert_values: dict[int, bytes] = {}
        self._select_current: dict[str, bytes] = {}
        self._keys = PostgresKeyStore(datastore)
        self._chain_columns = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, account_id, "
            "state, chain_hash FROM {0} "
        ).format(self._table)

    # Ledgers starting together on a new schema race on the library's DDL (CREATE ... IF
    # NOT EXISTS and CREATE OR REPLACE FUNCTION are not safe concurrently: a duplicate
    # type, "tuple concurrently updated"): the loser tries again and finds the work done.
    @retry((InternalError, IntegrityError), max_attempts=5, wait=0.2)
    def create_table(self) -> None:
        super().create_table()
        self._upgrade()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "CREATE INDEX IF NOT EXISTS {0} ON {1} (account_id, notification_id) "
                    "WHERE account_id IS NOT NULL"
                ).format(Identifier(f"{self.events_table_name}_account_idx"), self._table)
            )

    def _upgrade(self) -> None:
        """Adds the chain's columns to a table made before them, and links its rows."""
        has_chain = SQL(
            "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = 'chain_hash' AND NOT attisdropped"
        )
        table = self._table.as_string()
        with self.datastore.transaction(commit=True) as curs:
            if curs.execute(has_chain, (table,)).fetchone():
                return
            # Writers and readers wait; a second process starting now finds the columns.
            curs.execute(SQL("LOCK TABLE {0} IN ACCESS EXCLUSIVE MODE").format(self._table))
            if curs.execute(has_chain, (table,)).fetchone():
                return
            curs.execute(
                SQL(
                    "ALTER TABLE {0} ADD COLUMN account_id uuid, ADD COLUMN chain_hash bytea"
                ).format(self._table)
            )
            self._link_existing_rows(curs)

    def _link_existing_rows(self, curs: Cursor[DictRow]) -> None:
        """Links every row in order, a page per statement (the session must never sit
        idle in its transaction for long)."""
        previous, position = GENESIS, 0
        select = self._chain_columns + SQL(
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        )
        update = SQL(
            "UPDATE {0} AS t SET chain_hash = u.chain_hash "
            "FROM unnest(%b::bigint[], %b::bytea[]) AS u(notification_id, chain_hash) "
            "WHERE t.notification_id = u.notification_id"
        ).format(self._table)
        while rows := curs.execute(select, (position, UPGRADE_PAGE)).fetchall():
            events = [_stored_event(row) for row in rows]
            hashes = links(previous, events, [None] * len(events))
            curs.execute(update, ([row["notification_id"] for row in rows], hashes))
            previous, position = hashes[-1], rows[-1]["notification_id"]

    def _insert(
        self, stored_events: Sequence[StoredEvent], previous: bytes
    ) -> tuple[bytes, list[Any]]:
        """The statement inserting ``stored_events`` after the row whose chain hash is
        ``previous``, and its parameters."""
        accounts = [account(as_uuid(e.originator_id)) for e in stored_events]
        hashes = links(previous, stored_events, accounts)
        rows = len(stored_events)
        if rows > MAX_VALUES_ROWS:
            columns: list[Any] = [
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
                accounts,
                hashes,
            ]
            return self._insert_arrays, columns
        statement = self._insert_values.get(rows)
        if statement is None:
            values = SQL(", ").join([SQL("(%s, %s, %s, %s, %s, %s)")] * rows)
            statement = (
                self._insert_prefix + SQL("VALUES ") + values + SQL(" RETURNING notification_id")
            ).as_bytes()
            self._insert_values[rows] = statement
        params: list[Any] = []
        for e, account_id, chain_hash in zip(stored_events, accounts, hashes, strict=True):
            params += (e.originator_id, e.originator_version, e.topic, e.state)
            params += (account_id, chain_hash)
        return statement, params

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if kwargs.get("tracking") is not None:
            # Tracking records belong to process recorders, which this one is not.
            raise ProgrammingError("an application recorder does not record tracking")
        if not stored_events:
            return []
        # Tuple rows: a dict per returned id cost a twentieth of a billing run's saves.
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            try:
                curs.execute(self._preamble)
                while curs.nextset():  # to the last statement's result: the newest row's hash
                    pass
                head = curs.fetchone()
                previous = head[0] if head and head[0] else GENESIS
                if keys := keys_to_store():
                    refuse_conflicts(keys, self._keys.add_in(conn, keys))
                statement, params = self._insert(stored_events, previous)
                curs.execute(statement, params, prepare=True)
                ids = [row[0] for row in curs.fetchall()]
                conn.commit()
            except BaseException:
                # The transaction began in the preamble: end it before the connection goes
                # back to the pool (on a broken connection, the pool discards it).
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                raise
            return ids

    def select_current(self, snapshots: str, ids: Sequence[UUID]) -> list[StoredEvent]:
        """What loading each of ``ids`` needs, in one query: its newest snapshot in the
        table ``snapshots`` if it has one, then its events after it, by version; the
        aggregates one after another (what loading a batch of aggregates needs).

        Index look-ups per aggregate (LATERAL, kept from being flattened into a join by
        LIMIT and OFFSET 0): as a join, the planner scanned the whole events table while
        it was small or its statistics stale, three times slower on a fresh ledger."""
        statement = self._select_current.get(snapshots)
        if statement is None:
            statement = self._select_current[snapshots] = (
                SQL(
                    "WITH s AS MATERIALIZED (SELECT a.id, s.originator_version, s.topic, "
                    "s.state FROM unnest(%b::uuid[]) AS a(id) LEFT JOIN LATERAL ("
                    "SELECT originator_version, topic, state FROM {0}.{1} "
                    "WHERE originator_id = a.id ORDER BY originator_version DESC LIMIT 1"
                    ") s ON true) "
                    "SELECT true AS snapshot, id, originator_version, topic, state FROM s "
                    "WHERE originator_version IS NOT NULL UNION ALL "
                    "SELECT false, e.* FROM s CROSS JOIN LATERAL ("
                    "SELECT originator_id, originator_version, topic, state FROM {0}.{2} "
                    "WHERE originator_id = s.id "
                    "AND originator_version > coalesce(s.originator_version, 0) OFFSET 0) e "
                    "ORDER BY 2, 1 DESC, 3"
                )
                .format(
                    Identifier(self.datastore.schema),
                    Identifier(snapshots),
                    Identifier(self.events_table_name),
                )
                .as_bytes()
            )
        # Tuple rows: a dict per row cost more than the rest of reading it.
        return [
            StoredEvent(originator_id=i, originator_version=v, topic=t, state=bytes(s))
            for _, i, v, t, s in self._select_rows(statement, (list(dict.fromkeys(ids)),))
        ]

    def select_chain(self, start: int, limit: int) -> list[ChainRow]:
        """Up to ``limit`` rows of the chain from position ``start`` on, in order."""
        statement = self._chain_columns + SQL(
            "WHERE notification_id >= %s ORDER BY notification_id LIMIT %s"
        )
        return [ChainRow(*row) for row in self._select_rows(statement, (start, limit))]

    def select_head(self) -> tuple[ChainRow, int] | None:
        """The newest row, and how many rows there are (one statement: one snapshot)."""
        statement = SQL(
            "SELECT * FROM ({0} ORDER BY notification_id DESC LIMIT 1) AS head, "
            "(SELECT count(*) FROM {1}) AS total"
        ).format(self._chain_columns, self._table)
        rows = self._select_rows(statement, ())
        return (ChainRow(*rows[0][:-1]), rows[0][-1]) if rows else None

    def select_account(self, account_id: UUID) -> list[tuple[int, StoredEvent]]:
        """The events of an account (position, event), in sequence order."""
        statement = self._chain_columns + SQL("WHERE account_id = %s ORDER BY notification_id")
        return [
            (row[0], StoredEvent(row[1], row[2], row[3], bytes(row[5])))
            for row in self._select_rows(statement, (account_id,))
        ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _select_rows(self, statement: bytes | Composed, params: tuple[Any, ...]) -> list[TupleRow]:
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
            c.execute(statement, params, prepare=True)
            return c.fetchall()


def _stored_event(row: DictRow) -> StoredEvent:
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )
