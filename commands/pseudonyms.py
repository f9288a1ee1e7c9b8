"""Pseudonymous customer ids for analysts, and the opaque cursors of their listings.

Analysts see customers only as pseudonyms: ``cus_`` then the base32 of the first 16 bytes
of HMAC-SHA256 of the customer id, under a key derived from the personal data master key
with a fixed label. So a pseudonym is stable across restarts and processes, needs no new
secret, cannot be turned back into the customer id without the key, and changes for every
customer if the master key is ever replaced.

A listing's cursor names the last row of a page by its customer or subscription id; it is
sealed (AES-GCM, under a second derived key) so that it is opaque and reveals no customer
id, and a forged or altered cursor is refused.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from base64 import b32encode, urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable, Iterable
from uuid import UUID

from ledger.application import PERSONAL_DATA_KEY, Ledger
from ledger.personal_data import aes, master_key

PREFIX = "cus_"
# Bytes of the HMAC kept: 128 bits, which no customer base comes near colliding.
PSEUDONYM_BYTES = 16
# The labels of the derived keys; changing one changes every pseudonym (or cursor).
PSEUDONYM_LABEL = b"subledger analyst pseudonyms v1"
CURSOR_LABEL = b"subledger analyst cursors v1"


class BadCursor(ValueError):
    """A cursor this API did not give (forged, altered, cut short, or another listing's)."""


def derived_key(master: bytes, label: bytes) -> bytes:
    """A 32-byte key of its own for ``label``, from the master key (HMAC as a PRF)."""
    return hmac.new(master, label, hashlib.sha256).digest()


class Pseudonyms:
    """Customer ids to pseudonyms and back (by hashing the known ids, never by reading
    personal data), and the listings' cursors."""

    def __init__(self, master: bytes) -> None:
        self._key = derived_key(master, PSEUDONYM_LABEL)
        self._cursors = aes(derived_key(master, CURSOR_LABEL))
        # pseudonym -> customer id, filled as customers are listed or looked up.
        self._known: dict[str, UUID] = {}

    @classmethod
    def of_ledger(cls, ledger: Ledger) -> Pseudonyms:
        """Under the ledger's personal data master key (``bootstrap`` always sets one)."""
        if PERSONAL_DATA_KEY not in ledger.env:
            raise ValueError("pseudonyms need the personal data master key: use bootstrap()")
        return cls(master_key(ledger.env[PERSONAL_DATA_KEY]))

    def of(self, customer_id: UUID) -> str:
        digest = hmac.new(self._key, customer_id.bytes, hashlib.sha256).digest()
        pseudonym = PREFIX + b32encode(digest[:PSEUDONYM_BYTES]).decode().rstrip("=").lower()
        self._known[pseudonym] = customer_id
        return pseudonym

    def customer(self, pseudonym: str, customer_ids: Callable[[], Iterable[UUID]]) -> UUID | None:
        """The customer whose pseudonym it is, among ``customer_ids`` (read only when the
        pseudonym has not been seen yet: hashing 100,000 ids takes a tenth of a second)."""
        if pseudonym not in self._known:
            for customer_id in customer_ids():
                self.of(customer_id)
        return self._known.get(pseudonym)

    def cursor(self, listing: str, last: UUID) -> str:
        """An opaque cursor that resumes ``listing`` after the row keyed ``last``."""
        sealed = self._cursors.encrypt(f"{listing}:{last}".encode())
        return urlsafe_b64encode(sealed).decode().rstrip("=")

    def resume_after(self, listing: str, cursor: str) -> UUID:
        """The key of the row a cursor of ``listing`` resumes after; ``BadCursor`` if it is
        not one this API gave for that listing."""
        try:
            opened = self._cursors.decrypt(urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            name, _, key = opened.decode().partition(":")
            if name != listing:
                raise ValueError(f"a cursor of {name}")
            return UUID(key)
        except (ValueError, binascii.Error) as error:
            raise BadCursor(f"not a cursor of this listing ({error})") from None
