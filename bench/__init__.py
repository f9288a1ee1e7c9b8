"""Benchmarks: each figure of ours next to raw psycopg doing equivalent work, in the same run.

Run them with ``python -m bench NAME`` (or ``all``; ``--help`` lists them). A benchmark is
a function ``(options) -> Sample`` registered under a name with ``@register``; the runner
calls it ``--repeat`` times and reports the medians (see ``bench.report``). Each call works
in a schema of its own (``scratch_schema``), created for it and dropped afterwards, so
repetitions do not see each other's rows and nothing is left behind, even on error.

Add a benchmark by writing a module that registers one and naming it in ``MODULES``.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.report import Sample
from commands.settings import persistence_env

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
MODULES = (
    "bench.commands",
    "bench.rebuild",
    "bench.billing",
    "bench.bus",
    "bench.audit",
    "bench.dashboard",
)


def ignore(message: str) -> None:
    """The default ``Options.log``: details are printed only with ``--verbose``."""


@dataclass(frozen=True)
class Options:
    count: int
    database_url: str
    log: Callable[[str], None] = field(default=ignore)


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    unit: str
    measure: Callable[[Options], Sample]


REGISTRY: dict[str, Benchmark] = {}


def register(
    name: str, summary: str, unit: str
) -> Callable[[Callable[[Options], Sample]], Callable[[Options], Sample]]:
    """Registers the decorated ``(options) -> Sample`` function as benchmark ``name``."""

    def decorate(measure: Callable[[Options], Sample]) -> Callable[[Options], Sample]:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} is registered twice")
        REGISTRY[name] = Benchmark(name, summary, unit, measure)
        return measure

    return decorate


def benchmarks() -> dict[str, Benchmark]:
    """Every benchmark, by name, in registration order."""
    for module in MODULES:
        importlib.import_module(module)
    return REGISTRY


@dataclass(frozen=True)
class Scratch:
    """A schema of one's own: its name, the ledger's URL on it, and psycopg's arguments."""

    schema: str
    database_url: str
    connect_kwargs: dict[str, Any]

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))


def with_schema(database_url: str, schema: str) -> str:
    """``database_url`` with its ``?schema=`` set to ``schema``."""
    parts = urlsplit(database_url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    query["schema"] = schema
    return urlunsplit(parts._replace(query=urlencode(query)))


def connect_kwargs(database_url: str) -> dict[str, Any]:
    """psycopg's connection arguments for a PostgreSQL URL, as the ledger reads it."""
    env = persistence_env(database_url)
    if env["PERSISTENCE_MODULE"] != "eventsourcing.postgres":
        raise ValueError(f"benchmarks need PostgreSQL, not {database_url!r}")
    return {
        "dbname": env["POSTGRES_DBNAME"],
        "host": env["POSTGRES_HOST"],
        "port": env["POSTGRES_PORT"],
        "user": env["POSTGRES_USER"],
        "password": env["POSTGRES_PASSWORD"],
    }


@contextmanager
def scratch_schema(database_url: str) -> Iterator[Scratch]:
    """A fresh schema ``bench_<hex>`` on the server of ``database_url``, dropped on exit.

    End every transaction on its tables before leaving the block: DROP waits for them.
    """
    kwargs = connect_kwargs(database_url)
    schema = f"bench_{uuid.uuid4().hex}"
    name = sql.Identifier(schema)
    with psycopg.connect(**kwargs, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
    try:
        yield Scratch(schema, with_schema(database_url, schema), kwargs)
    finally:
        with psycopg.connect(**kwargs, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))
