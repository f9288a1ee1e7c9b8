"""Fixtures shared by every test: a ledger on each backend, a simulated clock, and bus
keys of the test's own on Redis (SUBLEDGER_TEST_REDIS_URL, default the local server).

PostgreSQL tests run in a schema of their own, dropped afterwards, in the database named
by SUBLEDGER_TEST_POSTGRES_URL (default: the local server's ``test`` database).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
import redis

from commands.bootstrap import bootstrap
from commands.streams import Streams
from ledger.application import Ledger
from ledger.clock import SimulatedClock


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/reliability/conftest.py: plain `pytest --scale 5` must know it.
    parser.addoption(
        "--scale",
        type=int,
        default=1,
        help="multiplies the sizes of the reliability tests (default 1)",
    )


POSTGRES_URL = os.environ.get(
    "SUBLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose schema is fresh and is dropped after the test."""
    schema = f"test_{uuid4().hex[:12]}"
    yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


REDIS_URL = os.environ.get("SUBLEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def streams() -> Iterator[Streams]:
    """Bus keys under a prefix of the test's own (replies too: ``<prefix>-...``),
    deleted afterwards."""
    mine = Streams(f"test-{uuid4().hex[:12]}")
    yield mine
    with redis.Redis.from_url(REDIS_URL) as client:
        if keys := list(client.scan_iter(f"{mine.prefix}*", count=1000)):
            client.delete(*keys)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on both backends."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    with bootstrap(database_url) as app:
        yield app


@pytest.fixture
def clock() -> SimulatedClock:
    # The 31st, so that every test also crosses short months.
    return SimulatedClock(datetime(2025, 1, 31, 9, 0, tzinfo=UTC))
