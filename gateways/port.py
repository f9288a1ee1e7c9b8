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
    """Take ``amount`` (> 0) from the saved payment method behind ``token``.

    ``customer_reference`` is the gateway's own id of the customer the token is saved
    under (Stripe ``cus_...``, Razorpay ``cust_...``, Authorize.net's customer profile id),
    for the gateways that need it; ``email`` and ``phone`` (E.164) are the payer's, for
    those that ask for them.
    """

    idempotency_key: str  # derived by the caller from (invoice, attempt)
    token: str
    amount: Money
    description: str = ""
    customer_reference: str | None = None
    email: str = ""
    phone: str | None = None


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


@dataclass(frozen=True, slots=True)
class Pending:
    """The gateway accepted the charge but settles it later (a bank debit, a review):
    its webhook tells the outcome. ``reference`` is its id of the charge."""

    reference: str
    amount: Money


Outcome = Succeeded | Declined | RetryableError | Pending
# What a gateway recorded for an idempotency key.
Recorded = Succeeded | Declined | Pending


class GatewayUnavailable(Exception):
    """``find_charge``/``find_refund`` could not reach the gateway: whether it recorded the
    request is still unknown, so the caller must ask again later, never send a new key."""


class Gateway(Protocol):
    """A payment gateway adapter; ``name`` is what a payment method's ``gateway`` holds."""

    name: str

    def charge(self, request: ChargeRequest) -> Outcome: ...

    def refund(self, request: RefundRequest) -> Outcome:
        """A refund the gateway accepted is Succeeded, even while it settles: never Pending."""
        ...

    def find_charge(self, request: ChargeRequest) -> Recorded | None:
        """The recorded outcome of the charge sent with this request's idempotency key, None
        if none was processed (the rest of the request helps gateways that look up by
        customer or amount).

        Never charges: it only reads what the gateway holds. Raises ``GatewayUnavailable``
        when the gateway cannot be asked (timeouts, 5xx, rate limits, unreadable answers)."""
        ...

    def find_refund(self, request: RefundRequest) -> Recorded | None:
        """The recorded outcome of the refund sent with this request's key, None if none was
        processed; raises ``GatewayUnavailable`` like ``find_charge``."""
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
