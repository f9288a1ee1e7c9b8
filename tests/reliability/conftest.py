"""Reliability tests run at a size that fits in a few minutes; ``--scale N`` multiplies
their sizes (``pytest tests/reliability --scale 5``). The option is registered in
tests/conftest.py: pytest reads options only from the conftest files it loads before
parsing the command line, and plain ``pytest`` does not load this one that early."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from commands.bootstrap import bootstrap
from ledger.application import Ledger


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> int:
    """How many times the default size a reliability test runs at."""
    value = int(request.config.getoption("--scale"))
    if value < 1:
        raise pytest.UsageError(f"--scale must be at least 1, got {value}")
    return value


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[Ledger]:
    """On PostgreSQL only, what bus workers run on in production; its tables exist before
    any worker the test starts."""
    with bootstrap(postgres_url) as app:
        yield app
