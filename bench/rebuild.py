"""``rebuild``: events per second replayed into every projection on PostgreSQL, next to raw
psycopg reading the same stored events and writing the same projection rows.

Each repetition, in a schema of its own: ``bench.population.populate`` stores ``--count``
events (at least 200,000 by default: the demo's kinds and rates, command records
included), untimed. Then, timed:

- ours: ``Projector.rebuild()`` over every projection (``projections.all_projections``):
  drop and create their tables, then page through the event sequence with eventsourcing's
  ``select_notifications``, decode the events of a class some projection reads with the
  application's mapper, and write each projection's batch and position in one
  transaction. The figure is stored events / seconds: the events no projection reads
  (command records, plan events: a third) count too, as a rebuild reads and skips them.
- raw: one plain psycopg connection does the database work of that rebuild. It reads the
  same table in notification order through a server-side cursor (a page of events per
  fetch, as ours) and ``json.loads`` every event's state; after each page, for each
  projection, one transaction moves a position row and COPYs its share of the rows ours
  left in that projection's tables (the same rows, in tables created ``LIKE`` them, with
  their indexes). Raw does no decoding into objects, no projection logic and none of the
  updates and deletes ours makes on the way to those rows: the ratio charges all of that
  to us. (Until November 2026 raw only read and decoded, writing nothing: a baseline
  doing a fraction of the work. ``read_only`` in the figures is that old ratio.)

The resident memory of the process is sampled after every page of the rebuild and logged
(``--verbose``): it must stay flat as the position grows (pages are streamed, nothing is
kept between them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from time import perf_counter
from typing import Any

import psycopg
from psycopg import sql

from bench import Options, Scratch, register, scratch_schema
from bench.memory import resident_megabytes
from bench.population import populate
from bench.report import Rate, Sample
from commands.bootstrap import bootstrap, projector

MIN_EVENTS = 200_000


@register("rebuild", "rebuild every projection from >= 200,000 stored events", "events")
def measure(options: Options) -> Sample:
    events = max(options.count, MIN_EVENTS)
    with scratch_schema(options.database_url) as scratch, bootstrap(scratch.database_url) as ledger:
        counts = populate(ledger, events, log=options.log)
        stored = counts.total()
        options.log(f"rebuild: {stored:,} events stored: {dict(counts.most_common())}")

        memory: list[tuple[int, float]] = []

        def sample_memory(position: int, head: int) -> None:
            memory.append((position, resident_megabytes()))

        with projector(ledger, scratch.database_url) as projections:
            began = perf_counter()
            projections.rebuild(progress=sample_memory)
            ours = Rate(stored, perf_counter() - began)
            tables = {p.name: p.tables for p in projections.projections.values()}
            page_size = projections.batch_size
        quarters = [memory[len(memory) * q // 4 - 1] for q in (1, 2, 3, 4)]
        options.log(
            "rebuild: resident memory at "
            + ", ".join(f"{position:,} events {mb:.0f} MB" for position, mb in quarters)
        )
        with (
            psycopg.connect(**scratch.connect_kwargs) as conn,
            psycopg.connect(**scratch.connect_kwargs, autocommit=True) as writer,
        ):
            raw, read_only = raw_rebuild(conn, writer, scratch, tables, page_size, options.log)
    return Sample(ours, raw, figures={"read_only": ours.per_second / read_only.per_second})


def raw_rebuild(
    conn: psycopg.Connection[Any],
    writer: psycopg.Connection[Any],
    scratch: Scratch,
    tables: dict[str, tuple[str, ...]],
    page: int,
    log: Callable[[str], None],
) -> tuple[Rate, Rate]:
    """The rebuild's database work in plain psycopg (see the module's docstring): the events
    read with the time all of it took, and with the time reading and decoding took alone.
    ``conn`` reads through a server-side cursor (its transaction open throughout);
    ``writer``, in autocommit, commits each projection's page on its own, as ours does."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for table in (t for names in tables.values() for t in names):
        source, target = scratch.table(table), scratch.table(f"raw_{table}")
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(target, source))
        rows[table] = conn.execute(sql.SQL("SELECT * FROM {}").format(source)).fetchall()
    positions = scratch.table("raw_positions")
    conn.execute(
        sql.SQL("CREATE TABLE {} (name text PRIMARY KEY, position bigint)").format(positions)
    )
    for name in tables:
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, 0)").format(positions), (name,))
    conn.commit()
    total = sum(len(r) for r in rows.values())
    log(
        f"rebuild: raw writes {total:,} rows: "
        + ", ".join(f"{t} {len(r):,}" for t, r in rows.items())
    )
    head = conn.execute(
        sql.SQL("SELECT max(notification_id) FROM {}").format(scratch.table("ledger_events"))
    ).fetchone()
    assert head is not None
    pages = max(1, -(-int(head[0]) // page))
    move = sql.SQL("UPDATE {} SET position = %s WHERE name = %s").format(positions)
    query = sql.SQL("SELECT {} FROM {} ORDER BY notification_id").format(
        sql.SQL("notification_id, originator_id, originator_version, topic, state"),
        scratch.table("ledger_events"),
    )
    began = perf_counter()
    reading = 0.0
    decoded, written = 0, 0
    with conn.cursor(name="raw_rebuild") as cursor:
        cursor.itersize = page
        cursor.execute(query)
        for number in range(pages):
            read_from = perf_counter()
            batch = cursor.fetchmany(page)
            for row in batch:
                json.loads(row[4])
            decoded += len(batch)
            reading += perf_counter() - read_from
            last = batch[-1][0] if batch else 0
            for name, owned in tables.items():
                with writer.transaction():
                    writer.execute(move, (last, name), prepare=True)
                    for table in owned:
                        share = rows[table]
                        chunk = share[
                            len(share) * number // pages : len(share) * (number + 1) // pages
                        ]
                        target = scratch.table(f"raw_{table}")
                        with writer.cursor().copy(
                            sql.SQL("COPY {} FROM STDIN").format(target)
                        ) as copy:
                            for values in chunk:
                                copy.write_row(values)
                        written += len(chunk)
    seconds = perf_counter() - began
    if written != total:
        raise AssertionError(f"raw wrote {written} rows of {total}")
    return Rate(decoded, seconds), Rate(decoded, reading)
