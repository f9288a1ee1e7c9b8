"""``dashboard``: revenue dashboard pages rendered per second on a large ledger, next to raw
psycopg running the very statements a page runs.

Each repetition, in a schema of its own: ``bench.population.populate`` stores ``--count``
events (at least 200,000; ``--count 1000000`` for a ledger of a million), and every
projection is rebuilt, untimed. Then, timed, ``PAGES`` times each:

- ours: one dashboard page as ``GET /dashboard`` makes it, over the default period (the
  last 12 months) in the ledger's first currency: ``dashboard_figures`` (the projections'
  aggregate queries, through ``projections.database``) then ``dashboard_html`` (figures,
  charts as inline SVG, the page);
- raw: one plain psycopg connection runs the statements that page ran (recorded once,
  with their parameters) and fetches every row: no figures, no HTML.

The page reads aggregates by day and plan, and each customer's MRR changes for the churn
cohorts, which grow with the customers (``--verbose`` logs the statements' row count).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from time import perf_counter

import psycopg

from bench import Options, register, scratch_schema
from bench.population import populate
from bench.report import Rate, Sample
from commands.bootstrap import bootstrap, projector
from commands.dashboard import dashboard_figures, dashboard_html, default_period
from projections import stats
from projections.database import Database, Params, Row, Transaction

MIN_EVENTS = 200_000
PAGES = 20


class Recorder:
    """A database that keeps every read statement it passes on, with its parameters."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.backend = database.backend
        self.statements: list[tuple[str, Params]] = []

    def transaction(self, exclusive: bool = False) -> AbstractContextManager[Transaction]:
        return self.database.transaction(exclusive)

    def query(self, statement: str, params: Params = ()) -> list[Row]:
        self.statements.append((statement, params))
        return self.database.query(statement, params)

    def close(self) -> None:
        self.database.close()


@register("dashboard", "render the revenue dashboard on a ledger of >= 200,000 events", "pages")
def measure(options: Options) -> Sample:
    events = max(options.count, MIN_EVENTS)
    with scratch_schema(options.database_url) as scratch, bootstrap(scratch.database_url) as ledger:
        stored = populate(ledger, events, log=options.log).total()
        with projector(ledger, scratch.database_url) as projections:
            projections.rebuild()
            db = projections.database
            currency = stats.currencies(db)[0]
            start, end = default_period(db)
            recorder = Recorder(db)
            dashboard_figures(recorder, currency, start, end)

            began = perf_counter()
            for _ in range(PAGES):
                dashboard_html(dashboard_figures(db, currency, start, end))
            ours = Rate(PAGES, perf_counter() - began)

        with psycopg.connect(**scratch.connect_kwargs, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{scratch.schema}"')
            rows = 0
            began = perf_counter()
            for _ in range(PAGES):
                for statement, params in recorder.statements:
                    rows += len(conn.execute(statement.replace("?", "%s"), params).fetchall())
            raw = Rate(PAGES, perf_counter() - began)
        options.log(
            f"dashboard: {stored:,} events; a page runs {len(recorder.statements)} statements "
            f"returning {rows // PAGES:,} rows ({currency}, {start} to {end})"
        )
        return Sample(ours, raw)
