"""Builds the ledger from settings: the one place that wires storage to the domain."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from commands.settings import Settings, persistence_env
from gateways.port import Gateways
from gateways.sandbox import SandboxGateway
from ledger.application import Ledger
from projections import all_projections
from projections.database import Database, PostgresDatabase, SQLiteDatabase
from projections.runner import Projector


def prepare_storage(env: dict[str, str]) -> None:
    """Creates what eventsourcing expects to exist: the SQLite folder, the PG schema.

    PostgreSQL is connected to once directly, so that a wrong database, user or host is
    reported at once with its cause, not after the pool's wait with none.
    """
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        Path(env["SQLITE_DBNAME"]).parent.mkdir(parents=True, exist_ok=True)
        return
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
        autocommit=True,
    ) as conn:
        if env["POSTGRES_SCHEMA"]:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(env["POSTGRES_SCHEMA"])
                )
            )


def bootstrap(database_url: str | None = None, settings: Settings | None = None) -> Ledger:
    """The ledger on ``database_url``, or on ``SUBLEDGER_DATABASE_URL`` / the default,
    with the business's billing rules from settings."""
    settings = settings or Settings()
    env = persistence_env(database_url or settings.database_url)
    prepare_storage(env)
    ledger = Ledger(env=env)
    ledger.dunning_policy = settings.dunning_policy()
    return ledger


def gateways(settings: Settings | None = None) -> Gateways:
    """The payment gateways payment methods can name: the sandbox for now."""
    settings = settings or Settings()
    Path(settings.sandbox_path).parent.mkdir(parents=True, exist_ok=True)
    return Gateways([SandboxGateway(settings.sandbox_path)])


def projection_database(env: dict[str, str]) -> Database:
    """The projections' connection: the event store's own database (and schema)."""
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        return SQLiteDatabase(env["SQLITE_DBNAME"])
    return PostgresDatabase(
        schema=env["POSTGRES_SCHEMA"],
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
    )


def projector(ledger: Ledger, database_url: str | None = None) -> Projector:
    """Every projection, on the database of ``database_url`` (as ``bootstrap`` reads it)."""
    env = persistence_env(database_url or Settings().database_url)
    return Projector(ledger, projection_database(env), all_projections())
