"""A PostgreSQL recorder with the library's guarantees and fewer round trips.

eventsourcing's recorder serialises writers with ``LOCK TABLE ... IN EXCLUSIVE MODE``
(commit order equals notification order, so projections never skip an event) and
NOTIFYs listeners. It sends each statement through a pipeline and inserts through an
array of composite values. This one keeps the lock, the lock timeout and the NOTIFY,
sends them as one simple query, then one INSERT ... RETURNING: per command (or batch of
commands), two round trips and a commit. A command's few rows go as prepared VALUES (the
fastest for a handful); more, as one prepared statement over four arrays (unnest), which
psycopg need not parse anew for each size. Errors are translated by the datastore as before
(a duplicate key is ``IntegrityError``: the optimistic-concurrency signal).

It also reads many aggregates' events (and snapshots) in one query, which the library's
recorder can only do one aggregate at a time: the billing clock and the payment
processor load hundreds of aggregates per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.sql import SQL, Composed, Identifier

# Up to this many rows, a prepared VALUES statement per row count; beyond, unnest.
MAX_VALUES_ROWS = 32


class LeanPostgresApplicationRecorder(PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        notify = SQL("NOTIFY {0}").format(Identifier(self.channel_name))
        self._preamble = SQL("; ").join([*self.lock_table_statements, notify])
        self._insert_prefix = SQL(
            "INSERT INTO {0}.{1} (originator_id, originator_version, topic, state) "
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        # Rows come out of unnest in array order, and get their ids in that order.
        self._insert_arrays = self._insert_prefix + SQL(
            "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[]) "
            "RETURNING notification_id"
        )
        self._insert_values: dict[int, Composed] = {}

    def _insert(self, stored_events: Sequence[StoredEvent]) -> tuple[Composed, list[Any]]:
        """The statement inserting ``stored_events``, and its parameters."""
        rows = len(stored_events)
        if rows > MAX_VALUES_ROWS:
            columns: list[Any] = [
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ]
            return self._insert_arrays, columns
        statement = self._insert_values.get(rows)
        if statement is None:
            values = SQL(", ").join([SQL("(%s, %s, %s, %s)")] * rows)
            statement = self._insert_prefix + SQL("VALUES ") + values
            statement += SQL(" RETURNING notification_id")
            self._insert_values[rows] = statement
        params: list[Any] = []
        for e in stored_events:
            params += (e.originator_id, e.originator_version, e.topic, e.state)
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
        statement, params = self._insert(stored_events)
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            curs.execute(self._preamble)
            curs.execute(statement, params, prepare=True)
            return [row["notification_id"] for row in curs.fetchall()]

    def select_latest(self, table: str, ids: Sequence[UUID]) -> list[StoredEvent]:
        """The newest row of each of ``ids`` in ``table`` (a snapshots table), in one query."""
        statement = SQL(
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state "
            "FROM {0}.{1} WHERE originator_id = ANY(%s) "
            "ORDER BY originator_id, originator_version DESC"
        ).format(Identifier(self.datastore.schema), Identifier(table))
        rows: list[StoredEvent] = self._select(statement, (list(ids),))
        return rows

    def select_events_after(self, after: Mapping[UUID, int]) -> list[StoredEvent]:
        """The events of many aggregates, each after a version, in one query, ordered by
        aggregate then version (what loading a batch of aggregates needs).

        A lateral index look-up per aggregate: as a join, the planner scans the whole
        table whenever its statistics are stale (a new schema, a burst of inserts)."""
        statement = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS a(id, version) "
            "CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state "
            "FROM {0}.{1} WHERE originator_id = a.id AND originator_version > a.version "
            "ORDER BY originator_version) e "
            "ORDER BY e.originator_id, e.originator_version"
        ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        rows: list[StoredEvent] = self._select(statement, (list(after), list(after.values())))
        return rows

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _select(self, statement: Composed, params: tuple[Any, ...]) -> list[StoredEvent]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]
