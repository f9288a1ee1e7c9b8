"""``rebuild``: events per second replayed into every projection on PostgreSQL, next to raw
psycopg reading and JSON-decoding the same stored events.

Each repetition, in a schema of its own: ``bench.population.populate`` stores ``--count``
events (at least 200,000 by default: the demo's kinds and rates, command records
included), untimed. Then, timed:

- ours: ``Projector.rebuild()`` over every projection (``projections.all_projections``):
  drop and create their tables, then page through the event sequence with eventsourcing's
  ``select_notifications``, decode the events of a class some projection reads with the
  application's mapper, and write each projection's batch and position in one
  transaction. The figure is stored events / seconds: the events no projection reads
  (command records, plan events: a third) count too, as a rebuild reads and skips them.
- raw: one plain psycopg connection reads the same table in notification order through a
  server-side cursor (10,000 rows per fetch) and ``json.loads`` every event's state; no
  objects, no writes.

The resident memory of the process is sampled after every page of the rebuild and logged
(``--verbose``): it must stay flat as the position grows (pages are streamed, nothing is
kept between them).
"""

from __future__ import annotations

import json
from time import perf_counter

import psycopg
from psycopg import sql

from bench import Options, register, scratch_schema
from bench.memory import resident_megabytes
from bench.population import populate
from bench.report import Rate, Sample
from commands.bootstrap import bootstrap, projector

MIN_EVENTS = 200_000
FETCH = 10_000


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
        quarters = [memory[len(memory) * q // 4 - 1] for q in (1, 2, 3, 4)]
        options.log(
            "rebuild: resident memory at "
            + ", ".join(f"{position:,} events {mb:.0f} MB" for position, mb in quarters)
        )

        with psycopg.connect(**scratch.connect_kwargs) as conn:
            query = sql.SQL("SELECT {} FROM {} ORDER BY notification_id").format(
                sql.SQL("notification_id, originator_id, originator_version, topic, state"),
                scratch.table("ledger_events"),
            )
            began = perf_counter()
            decoded = 0
            with conn.cursor(name="raw_rebuild") as cursor:
                cursor.itersize = FETCH
                cursor.execute(query)
                for row in cursor:
                    json.loads(row[4])
                    decoded += 1
            raw = Rate(decoded, perf_counter() - began)
        return Sample(ours, raw)
