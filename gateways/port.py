"""The payment gateway port: what the ledger asks of a gateway, and the three answers.

Every request carries an idempotency key derived by the caller, so a request whose answer
was lost can be sent again without charging twice; ``find_charge`` / ``find_refund`` tell
what the gateway recorded for a key when even the retries fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from ledger.money import Money


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """Take ``amount`` (> 0) from the saved payment method behind ``token``."""

    idempotency_key: str  # derived by the caller from (invoice, attempt)
    token: str
    amount: Money
    description: str = ""


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Give back ``amount`` (> 0) of the charge ``charge_reference``."""

    idempotency_key: str
    charge_reference: str
    amount: Money


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The money moved; ``reference`` is the gateway's id of the charge or refund."""

    reference: str
    amount: Money


@dataclass(frozen=True, slots=True)
class Declined:
    """A final no: sending the same request again gets the same answer.

    Charge codes: card_declined, insufficient_funds, expired_card, invalid_amount,
    idempotency_key_reused. Refund codes add charge_not_found, amount_too_large,
    currency_mismatch.
    """

    code: str
    message: str
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class RetryableError:
    """The outcome is unknown or temporary (timeout, 5xx, rate limit): the same request,
    with the same idempotency key, may be sent again."""

    code: str  # "timeout", "processing_error", "rate_limited"
    message: str
    retry_after: float | None = None  # seconds, when the gateway said


Outcome = Succeeded | Declined | RetryableError


class Gateway(Protocol):
    """A payment gateway adapter; ``name`` is what a payment method's ``gateway`` holds."""

    name: str

    def charge(self, request: ChargeRequest) -> Outcome: ...

    def refund(self, request: RefundRequest) -> Outcome: ...

    def find_charge(self, idempotency_key: str) -> Succeeded | Declined | None:
        """The recorded outcome of the charge sent with this key, None if none was processed."""
        ...

    def find_refund(self, idempotency_key: str) -> Succeeded | Declined | None:
        """The recorded outcome of the refund sent with this key, None if none was processed."""
        ...


class UnknownGateway(KeyError):
    """A payment method names a gateway that is not configured.

    A KeyError (hence a LookupError) so that ``in`` and ``get`` on ``Gateways`` work.
    """

    def __str__(self) -> str:
        # KeyError would show the message quoted, as if it were a key.
        return str(self.args[0]) if self.args else ""


class Gateways(Mapping[str, Gateway]):
    """The configured gateways by name, so a payment method's ``gateway`` picks its adapter."""

    def __init__(self, gateways: Iterable[Gateway]) -> None:
        self._by_name: dict[str, Gateway] = {}
        for gateway in gateways:
            if gateway.name in self._by_name:
                raise ValueError(f"two gateways are named {gateway.name!r}")
            self._by_name[gateway.name] = gateway

    def __getitem__(self, name: str) -> Gateway:
        try:
            return self._by_name[name]
        except KeyError:
            configured = ", ".join(map(repr, self._by_name)) or "none"
            raise UnknownGateway(
                f"no payment gateway is named {name!r} (configured: {configured})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        """The configured names, in the order they were given."""
        return list(self._by_name)
