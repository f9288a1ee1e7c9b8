"""API keys for the HTTP API: who may call what, by role.

A key is shown once, when created, and stored only as its SHA-256 digest. A plain, fast
hash is right here, unlike for passwords: a key holds 256 random bits, so no amount of
guessing per second finds one from its digest, and slow, salted hashes exist to protect
low-entropy secrets. A fast, unsalted digest also lets each request find its key by an
indexed lookup, and comparing digests leaks nothing an attacker can steer by timing.

The table lives in the projections' database but is no projection: keys are not derived
from events, and a rebuild of the projections leaves them alone.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import uuid4

from projections.database import Database
from projections.values import instant, read_instant, read_maybe_instant

SCHEMA = """CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    label TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
)"""
# 32 random bytes: 256 bits, far beyond brute force whatever the hash's speed.
SECRET_BYTES = 32


class Role(StrEnum):
    """What a key's holder is; ``admin`` may do whatever any role may."""

    ANALYST = "analyst"
    AUDITOR = "auditor"
    SERVICE = "service"
    ADMIN = "admin"


class UnknownKey(LookupError):
    """No key has this id."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret (which is stored nowhere)."""

    key_id: str
    role: Role
    label: str
    created_at: datetime
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "role": self.role.value,
            "label": self.label,
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """The ``api_keys`` table: create, list, revoke, and resolve a presented key."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def setup(self) -> None:
        with self.database.transaction(exclusive=True) as tx:
            tx.execute(SCHEMA)

    def create(self, role: Role, label: str, now: datetime) -> tuple[ApiKey, str]:
        """A new key and its secret, which only the caller ever sees."""
        key_id = uuid4().hex[:16]
        # The role in the key's text helps whoever finds a key to know what it opens; it
        # grants nothing (the role comes from the table).
        secret = f"sk_{role.value}_{secrets.token_urlsafe(SECRET_BYTES)}"
        with self.database.transaction() as tx:
            tx.execute(
                "INSERT INTO api_keys (key_id, role, label, hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key_id, role.value, label, digest(secret), instant(now)),
            )
        return ApiKey(key_id, role, label, now, None), secret

    def all_keys(self) -> list[ApiKey]:
        return self._select("ORDER BY created_at, key_id")

    def revoke(self, key_id: str, now: datetime) -> ApiKey:
        """Revokes the key (again is harmless: the first revocation's time stays)."""
        with self.database.transaction() as tx:
            tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (instant(now), key_id),
            )
        found = self._select("WHERE key_id = ?", (key_id,))
        if not found:
            raise UnknownKey(f"no API key {key_id}")
        return found[0]

    def role_of(self, key: str) -> Role | None:
        """The role of a presented key; None if it is unknown or revoked."""
        rows = self.database.query(
            "SELECT role FROM api_keys WHERE hash = ? AND revoked_at IS NULL", (digest(key),)
        )
        return Role(rows[0][0]) if rows else None

    def _select(self, where: str, params: tuple[str, ...] = ()) -> list[ApiKey]:
        rows = self.database.query(
            f"SELECT key_id, role, label, created_at, revoked_at FROM api_keys {where}", params
        )
        return [
            ApiKey(key_id, Role(role), label, read_instant(created), read_maybe_instant(revoked))
            for key_id, role, label, created, revoked in rows
        ]
