"""Values to and from projection tables, the same way on PostgreSQL and SQLite.

Written as text (ISO 8601 instants and days, UUIDs) or integers; read back from either
backend's types (see ``projections.database``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID


def instant(value: datetime) -> str:
    return value.isoformat()


def maybe_instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def read_instant(value: Any) -> datetime:
    """In UTC whatever the server's time zone: days are UTC days (a PostgreSQL server in
    Tokyo gives 2025-03-03 05:00+09:00 for 2025-03-02 20:00 UTC)."""
    instant = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return instant.astimezone(UTC)


def read_maybe_instant(value: Any) -> datetime | None:
    return None if value is None else read_instant(value)


def read_day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def read_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def read_int(value: Any) -> int:
    """An integer column or a SUM of one (``Decimal`` on PostgreSQL, ``None`` over no rows)."""
    return 0 if value is None else int(value)


def read_bool(value: Any) -> bool:
    return bool(value)
