"""The sandbox gateway: an embedded, deterministic stand-in for a card processor.

It keeps its own records in SQLite (a file survives a restart, ``:memory:`` otherwise) and
honours idempotency keys like Stripe: a key already recorded answers the recorded outcome
and never charges again; the same key with other parameters is refused
(``idempotency_key_reused``). References derive from the key (``ch_sb_`` / ``re_sb_`` and
20 hex digits of its SHA-256), so a run can be replayed exactly.

Test tokens:

=======================================  ===================================================
Token                                    Charge outcome
=======================================  ===================================================
``tok_chargeDeclined``                   Declined ``card_declined``
``tok_chargeDeclinedInsufficientFunds``  Declined ``insufficient_funds``
``tok_chargeDeclinedExpiredCard``        Declined ``expired_card``
``tok_processingError``                  RetryableError ``processing_error``, every time;
                                         nothing recorded
``tok_timeout``                          RetryableError ``timeout``; nothing recorded (the
                                         request never reached the bank)
``tok_timeoutAfterCharge``               the charge is recorded as succeeded, then
                                         RetryableError ``timeout`` (the answer was lost);
                                         a retry with the key, or ``find_charge``, gets
                                         the recorded Succeeded
``tok_recoversAfter_<n>`` (n >= 1)       the first n charges with this token (distinct keys)
                                         are declined ``insufficient_funds``, later ones
                                         succeed (the account was topped up)
any other token                          Succeeded
=======================================  ===================================================

An amount <= 0 is declined ``invalid_amount`` and, like a request that fails Stripe's
validation, not recorded. A refund needs a charge recorded as succeeded
(``charge_not_found``), in the same currency (``currency_mismatch``), and the succeeded
refunds of a charge never exceed its amount (``amount_too_large``); those refusals are
recorded under their key.

Fault injection (off by default): with probability ``timeout_rate`` a new charge that would
succeed answers a timeout instead, half of the time after recording the charge, half before;
the draws come from ``random.Random(seed)``, so a seed replays the same faults.
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from gateways.port import (
    ChargeRequest,
    Declined,
    Outcome,
    RefundRequest,
    RetryableError,
    Succeeded,
)
from ledger.money import Money

Status = Literal["succeeded", "declined"]

_DECLINING_TOKENS = {
    "tok_chargeDeclined": "card_declined",
    "tok_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "tok_chargeDeclinedExpiredCard": "expired_card",
}
_RECOVERS_AFTER = re.compile(r"tok_recoversAfter_([1-9][0-9]*)")
_MESSAGES = {
    "card_declined": "The card was declined.",
    "insufficient_funds": "The card has insufficient funds.",
    "expired_card": "The card has expired.",
    "charge_not_found": "No succeeded charge has this reference.",
    "currency_mismatch": "The refund is not in the currency of the charge.",
    "amount_too_large": "The refunds would exceed the amount charged.",
}
_TIMEOUT = RetryableError("timeout", "The gateway did not answer in time.")
_PROCESSING_ERROR = RetryableError("processing_error", "The gateway failed to process it.")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    idempotency_key TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('succeeded', 'declined')),
    code TEXT CHECK ((code IS NULL) = (outcome = 'succeeded')),
    reference TEXT NOT NULL,
    seq INTEGER NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS charges_by_token ON charges (token);
CREATE INDEX IF NOT EXISTS charges_by_reference ON charges (reference);
CREATE TABLE IF NOT EXISTS refunds (
    idempotency_key TEXT PRIMARY KEY,
    charge_reference TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('succeeded', 'declined')),
    code TEXT CHECK ((code IS NULL) = (outcome = 'succeeded')),
    reference TEXT,
    seq INTEGER NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS refunds_by_charge ON refunds (charge_reference);
"""
_CHARGE_COLUMNS = "idempotency_key, token, amount, currency, outcome, code, reference"
_REFUND_COLUMNS = "idempotency_key, charge_reference, amount, currency, outcome, code, reference"


@dataclass(frozen=True, slots=True)
class SandboxCharge:
    """A charge the sandbox recorded (declined ones too: they have a reference, as in Stripe)."""

    key: str
    token: str
    amount: Money
    outcome: Status
    code: str | None
    reference: str

    def answer(self) -> Succeeded | Declined:
        if self.outcome == "succeeded":
            return Succeeded(self.reference, self.amount)
        # The schema's CHECK guarantees a declined record has a code; this only narrows.
        return _declined(self.code or "card_declined", self.reference)


@dataclass(frozen=True, slots=True)
class SandboxRefund:
    """A refund the sandbox recorded; a declined one has no reference."""

    key: str
    charge_reference: str
    amount: Money
    outcome: Status
    code: str | None
    reference: str | None

    def answer(self) -> Succeeded | Declined:
        if self.outcome == "succeeded" and self.reference is not None:
            return Succeeded(self.reference, self.amount)
        return _declined(self.code or "charge_not_found")


def _declined(code: str, reference: str | None = None) -> Declined:
    return Declined(code, _MESSAGES[code], reference)


def _reference(prefix: str, idempotency_key: str) -> str:
    return prefix + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]


def _invalid_amount(amount: Money) -> Declined | None:
    if amount > Money.zero(amount.currency):
        return None
    return Declined("invalid_amount", f"The amount must be positive, got {amount}.")


def _key_reused(key: str) -> Declined:
    return Declined(
        "idempotency_key_reused",
        f"The idempotency key {key!r} was already used with other parameters.",
    )


class SandboxGateway:
    """The embedded default gateway; see the module docstring for its test tokens."""

    name = "sandbox"

    def __init__(self, path: str | None = None, timeout_rate: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= timeout_rate <= 1.0:
            raise ValueError(f"timeout_rate must be between 0 and 1, got {timeout_rate}")
        self._timeout_rate = timeout_rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path or ":memory:", check_same_thread=False)
        with self._lock, self._conn:
            self._conn.executescript(_SCHEMA)

    def charge(self, request: ChargeRequest) -> Outcome:
        invalid = _invalid_amount(request.amount)
        if invalid is not None:
            return invalid
        with self._lock, self._conn:
            recorded = self._charge(request.idempotency_key)
            if recorded is not None:
                if (recorded.token, recorded.amount) != (request.token, request.amount):
                    return _key_reused(request.idempotency_key)
                return recorded.answer()
            if request.token == "tok_processingError":
                return _PROCESSING_ERROR
            if request.token == "tok_timeout":
                return _TIMEOUT
            code = self._decline_code(request.token)
            fault = None if code or request.token == "tok_timeoutAfterCharge" else self._fault()
            if fault == "before":
                return _TIMEOUT
            charge = SandboxCharge(
                key=request.idempotency_key,
                token=request.token,
                amount=request.amount,
                outcome="declined" if code else "succeeded",
                code=code,
                reference=_reference("ch_sb_", request.idempotency_key),
            )
            self._record_charge(charge)
            if request.token == "tok_timeoutAfterCharge" or fault == "after":
                return _TIMEOUT  # the record commits as the block exits: only the answer is lost
            return charge.answer()

    def refund(self, request: RefundRequest) -> Outcome:
        invalid = _invalid_amount(request.amount)
        if invalid is not None:
            return invalid
        with self._lock, self._conn:
            recorded = self._refund(request.idempotency_key)
            if recorded is not None:
                if (recorded.charge_reference, recorded.amount) != (
                    request.charge_reference,
                    request.amount,
                ):
                    return _key_reused(request.idempotency_key)
                return recorded.answer()
            code = self._refund_refusal(request)
            refund = SandboxRefund(
                key=request.idempotency_key,
                charge_reference=request.charge_reference,
                amount=request.amount,
                outcome="declined" if code else "succeeded",
                code=code,
                reference=None if code else _reference("re_sb_", request.idempotency_key),
            )
            self._record_refund(refund)
            return refund.answer()

    def find_charge(self, request: ChargeRequest) -> Succeeded | Declined | None:
        with self._lock:
            charge = self._charge(request.idempotency_key)
        return None if charge is None else charge.answer()

    def find_refund(self, request: RefundRequest) -> Succeeded | Declined | None:
        with self._lock:
            refund = self._refund(request.idempotency_key)
        return None if refund is None else refund.answer()

    def charges(self) -> list[SandboxCharge]:
        """Every charge recorded, in the order recorded (for reconciliation in tests)."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_CHARGE_COLUMNS} FROM charges ORDER BY seq")
            return [_charge_of(row) for row in rows]

    def refunds(self) -> list[SandboxRefund]:
        """Every refund recorded, in the order recorded."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_REFUND_COLUMNS} FROM refunds ORDER BY seq")
            return [_refund_of(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SandboxGateway:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Helpers below run with the lock held.

    def _decline_code(self, token: str) -> str | None:
        if token in _DECLINING_TOKENS:
            return _DECLINING_TOKENS[token]
        recovers = _RECOVERS_AFTER.fullmatch(token)
        if recovers is None:
            return None
        (made,) = self._conn.execute(
            "SELECT COUNT(*) FROM charges WHERE token = ?", (token,)
        ).fetchone()
        return "insufficient_funds" if made < int(recovers[1]) else None

    def _fault(self) -> Literal["before", "after"] | None:
        # No draw when off, so the default gateway never touches the generator.
        if self._timeout_rate == 0.0 or self._random.random() >= self._timeout_rate:
            return None
        return "after" if self._random.random() < 0.5 else "before"

    def _refund_refusal(self, request: RefundRequest) -> str | None:
        row = self._conn.execute(
            f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE reference = ? AND outcome = ?",
            (request.charge_reference, "succeeded"),
        ).fetchone()
        if row is None:
            return "charge_not_found"
        charge = _charge_of(row)
        if charge.amount.currency != request.amount.currency:
            return "currency_mismatch"
        refunded = Money.zero(charge.amount.currency)
        for amount, currency in self._conn.execute(
            "SELECT amount, currency FROM refunds WHERE charge_reference = ? AND outcome = ?",
            (request.charge_reference, "succeeded"),
        ):
            refunded += Money(amount, currency)
        return "amount_too_large" if refunded + request.amount > charge.amount else None

    def _charge(self, key: str) -> SandboxCharge | None:
        row = self._conn.execute(
            f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return None if row is None else _charge_of(row)

    def _refund(self, key: str) -> SandboxRefund | None:
        row = self._conn.execute(
            f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return None if row is None else _refund_of(row)

    def _record_charge(self, charge: SandboxCharge) -> None:
        self._conn.execute(
            f"INSERT INTO charges ({_CHARGE_COLUMNS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?,"
            " (SELECT COALESCE(MAX(seq), 0) + 1 FROM charges))",
            (
                charge.key,
                charge.token,
                charge.amount.amount,
                charge.amount.currency,
                charge.outcome,
                charge.code,
                charge.reference,
            ),
        )

    def _record_refund(self, refund: SandboxRefund) -> None:
        self._conn.execute(
            f"INSERT INTO refunds ({_REFUND_COLUMNS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?,"
            " (SELECT COALESCE(MAX(seq), 0) + 1 FROM refunds))",
            (
                refund.key,
                refund.charge_reference,
                refund.amount.amount,
                refund.amount.currency,
                refund.outcome,
                refund.code,
                refund.reference,
            ),
        )


def _charge_of(row: tuple[str, str, int, str, Status, str | None, str]) -> SandboxCharge:
    key, token, amount, currency, outcome, code, reference = row
    return SandboxCharge(key, token, Money(amount, currency), outcome, code, reference)


def _refund_of(row: tuple[str, str, int, str, Status, str | None, str | None]) -> SandboxRefund:
    key, charge_reference, amount, currency, outcome, code, reference = row
    return SandboxRefund(key, charge_reference, Money(amount, currency), outcome, code, reference)
