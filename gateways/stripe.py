"""Stripe: off-session PaymentIntents on a customer's saved payment method, refunds, and
signed webhooks, through the official ``stripe`` library (``StripeClient``).

Idempotency: every POST carries our key as ``Idempotency-Key`` (Stripe keeps up to 255
characters, so our keys go as they are) and in ``metadata[idempotency_key]``, which the
webhooks and the look-ups read back. Stripe saves the first answer to a key once it
started executing the request, a 402 or a 500 included, and replays it; it saves nothing
for a 429, a request that failed validation, or one that collided with a concurrent
request under the same key (409). So only answers that may change under the same key are
a ``RetryableError``: timeouts, lost connections, 429, 409, 5xx, unreadable bodies, and
refused API keys (the operator's to fix, never the customer's fault). A card decline is
final for its key, even Stripe's ``processing_error``: dunning retries it with a new key.

Look-ups read the strongly consistent list endpoints (``GET /v1/payment_intents?customer=``
and ``GET /v1/refunds?payment_intent=``), never Search, which lags by up to a minute.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import stripe

from gateways.http import retry_after
from gateways.port import (
    ChargeRequest,
    Declined,
    GatewayUnavailable,
    Outcome,
    Pending,
    RefundRequest,
    RetryableError,
    Succeeded,
)
from gateways.webhooks import EventKind, ProviderEvent, WebhookRejected
from ledger.errors import UnknownCurrency
from ledger.money import Money, exponent

# Stripe's own minor units (docs.stripe.com/currencies): these are zero-decimal, the five
# below three-decimal, every other currency two-decimal. They differ from ISO 4217 for a
# few (ISK is ISO 0 but Stripe 2, MGA is ISO 2 but Stripe 0).
_STRIPE_ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
)
_STRIPE_THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())

# Issuer decline codes (decline_code, else code) that have a code of ours; the hard ones
# dunning knows (lost_card, stolen_card, fraudulent...) keep Stripe's name.
_DECLINE_CODES = {
    "generic_decline": "card_declined",
    "do_not_honor": "card_declined",
    "call_issuer": "card_declined",
    "insufficient_funds": "insufficient_funds",
    "expired_card": "expired_card",
    "invalid_amount": "invalid_amount",
    "amount_too_small": "invalid_amount",
    "amount_too_large": "invalid_amount",
}
# Lists are walked newest first; a key we ask about is recent, so this bound (1,000
# PaymentIntents of one customer, 1,000 refunds of one charge) is never reached in practice.
MAX_PAGES = 10
PAGE_SIZE = 100
# Secrets that a Stripe message may echo (a masked key in a 401 message, say).
_SECRET = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StripeConfig:
    """How to reach Stripe. ``timeout`` is seconds per request; ``webhook_tolerance`` is
    how far (seconds) a delivery's signed timestamp may be from now."""

    api_key: str = field(repr=False)
    api_base: str = "https://api.stripe.com"
    webhook_secret: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    webhook_tolerance: float = 300.0


def to_stripe_amount(money: Money) -> int | None:
    """``money`` in Stripe's minor units; None if Stripe cannot express it exactly."""
    shift = _stripe_exponent(money.currency) - exponent(money.currency)
    if shift >= 0:
        return money.amount * int(10**shift)
    whole, rest = divmod(money.amount, int(10**-shift))
    return None if rest else whole


def from_stripe_amount(amount: int, currency: str) -> Money:
    """A Stripe amount (its minor units of ``currency``, any case) as Money."""
    code = currency.upper()
    shift = _stripe_exponent(code) - exponent(code)
    if shift <= 0:
        return Money(amount * int(10**-shift), code)
    whole, rest = divmod(amount, int(10**shift))
    if rest:
        raise ValueError(f"{amount} is not a whole number of {code} minor units")
    return Money(whole, code)


def _stripe_exponent(currency: str) -> int:
    if currency in _STRIPE_ZERO_DECIMAL:
        return 0
    return 3 if currency in _STRIPE_THREE_DECIMAL else 2


def decline_code(error: Mapping[str, Any] | None) -> str:
    """Our code for a Stripe payment error (``last_payment_error`` or an API error body):
    its ``decline_code`` (the issuer's reason), else its ``code``."""
    error = error or {}
    stripe_code = str(error.get("decline_code") or error.get("code") or "card_declined")
    return _DECLINE_CODES.get(stripe_code, stripe_code)


def _redacted(message: str) -> str:
    return _SECRET.sub("[redacted]", message)


class _Malformed(ValueError):
    """A 2xx answer without the fields Stripe documents."""


class StripeGateway:
    """The Stripe adapter. ``client`` replaces the ``StripeClient`` built from ``config``
    (then ``config.api_base`` and ``timeout`` are the client's business)."""

    name = "stripe"

    def __init__(self, config: StripeConfig, client: stripe.StripeClient | None = None) -> None:
        self.config = config
        self._http: stripe.RequestsClient | None = None
        if client is None:
            # requests is the library's own dependency; its HTTPXClient would also open an
            # async client and trips httpx deprecation warnings.
            self._http = stripe.RequestsClient(timeout=config.timeout)
            client = stripe.StripeClient(
                config.api_key,
                base_addresses={"api": config.api_base},
                # The payment processor retries, with the same key, when it decides to.
                max_network_retries=0,
                http_client=self._http,
            )
        self._client = client

    def __repr__(self) -> str:
        return f"StripeGateway(api_base={self.config.api_base!r})"

    def charge(self, request: ChargeRequest) -> Outcome:
        """``POST /v1/payment_intents``, confirmed off-session on the saved method."""
        if request.customer_reference is None:
            # A saved method can only be reused off-session through its Stripe customer.
            return Declined("no_payment_method", "The card is not saved at a Stripe customer.")
        amount = to_stripe_amount(request.amount)
        if amount is None:
            return Declined("invalid_amount", f"Stripe cannot charge {request.amount} exactly.")
        params: dict[str, Any] = {
            "amount": amount,
            "currency": request.amount.currency.lower(),
            "customer": request.customer_reference,
            "payment_method": request.token,
            "off_session": True,
            "confirm": True,
            # The customer is away: no redirect-based method can be completed, and without
            # this Stripe asks for a return_url.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {"idempotency_key": request.idempotency_key},
        }
        if request.description:
            params["description"] = request.description
        try:
            intent = self._client.v1.payment_intents.create(
                params,  # type: ignore[arg-type]  # a plain dict of the documented fields
                {"idempotency_key": request.idempotency_key},
            )
            return _intent_outcome(_plain(intent))
        except stripe.CardError as error:
            body = _error_body(error)
            intent_id = _id_of(body.get("payment_intent"))
            return Declined(decline_code(body), _message(error), intent_id)
        except stripe.IdempotencyError as error:
            return Declined("idempotency_key_reused", _message(error))
        except stripe.InvalidRequestError as error:
            return _invalid_charge(error)
        except stripe.StripeError as error:
            return _retryable(error)
        except _Malformed as error:
            return RetryableError("malformed_response", str(error))

    def refund(self, request: RefundRequest) -> Outcome:
        """``POST /v1/refunds`` of the PaymentIntent, after checking its currency (Stripe
        refunds in the charge's currency whatever we meant)."""
        try:
            intent = self._client.v1.payment_intents.retrieve(request.charge_reference)
            currency = _field(_plain(intent), "currency", str).upper()
            if currency != request.amount.currency:
                return Declined(
                    "currency_mismatch",
                    f"The charge is in {currency}, the refund in {request.amount.currency}.",
                )
            amount = to_stripe_amount(request.amount)
            if amount is None:
                return Declined("invalid_amount", f"Stripe cannot refund {request.amount}.")
            refund = self._client.v1.refunds.create(
                {
                    "payment_intent": request.charge_reference,
                    "amount": amount,
                    "metadata": {"idempotency_key": request.idempotency_key},
                },
                {"idempotency_key": request.idempotency_key},
            )
            return _refund_outcome(_plain(refund))
        except stripe.IdempotencyError as error:
            return Declined("idempotency_key_reused", _message(error))
        except stripe.InvalidRequestError as error:
            return _invalid_refund(error)
        except stripe.StripeError as error:
            return _retryable(error)
        except _Malformed as error:
            return RetryableError("malformed_response", str(error))

    def find_charge(self, request: ChargeRequest) -> Succeeded | Declined | Pending | None:
        """What the customer's PaymentIntent whose metadata holds the request's key says."""
        if request.customer_reference is None:
            return None  # charge() sent nothing
        pages = self._pages(
            self._client.v1.payment_intents.list, {"customer": request.customer_reference}
        )
        intent = _with_key(pages, request.idempotency_key)
        return None if intent is None else _recorded(_intent_outcome, intent)

    def find_refund(self, request: RefundRequest) -> Succeeded | Declined | Pending | None:
        """What the PaymentIntent's refund whose metadata holds the request's key says."""
        pages = self._pages(
            self._client.v1.refunds.list, {"payment_intent": request.charge_reference}
        )
        refund = _with_key(pages, request.idempotency_key)
        return None if refund is None else _recorded(_refund_outcome, refund)

    def _pages(
        self, list_page: Callable[[Any], stripe.StripeObject], params: dict[str, Any]
    ) -> Iterator[object]:
        """The objects of a list endpoint, newest first, a bounded number of pages; raises
        GatewayUnavailable when a page cannot be read."""
        params = {**params, "limit": PAGE_SIZE}
        for _ in range(MAX_PAGES):
            try:
                page = _plain(list_page(params))
                objects = _field(page, "data", list)
                more = _field(page, "has_more", bool)
                last = _field(objects[-1], "id", str) if objects else None
            except stripe.InvalidRequestError as error:
                if error.code == "resource_missing":
                    return  # no such customer or charge: nothing was recorded under it
                raise GatewayUnavailable(_unavailable(error)) from None
            except stripe.StripeError as error:
                raise GatewayUnavailable(_unavailable(error)) from None
            except _Malformed as error:
                raise GatewayUnavailable(str(error)) from None
            yield from objects
            if not more or last is None:
                return
            params["starting_after"] = last
        # Not found among the newest: it may still be there, so "none" would be a guess.
        raise GatewayUnavailable(f"not among the newest {MAX_PAGES * PAGE_SIZE} Stripe objects")

    def close(self) -> None:
        if self._http is not None:
            self._http.close()  # type: ignore[no-untyped-call]


def _with_key(objects: Iterator[object], key: str) -> Mapping[str, Any] | None:
    for obj in objects:
        if not isinstance(obj, dict):
            raise GatewayUnavailable("Stripe listed something that is not an object")
        metadata = obj.get("metadata")
        if isinstance(metadata, dict) and metadata.get("idempotency_key") == key:
            return obj
    return None


def _recorded(
    read: Callable[[Mapping[str, Any]], Succeeded | Declined | Pending], obj: Mapping[str, Any]
) -> Succeeded | Declined | Pending:
    """An object found by a look-up, read as its outcome; unreadable, it is unknown."""
    try:
        return read(obj)
    except _Malformed as error:
        raise GatewayUnavailable(str(error)) from None


def _intent_outcome(intent: Mapping[str, Any]) -> Succeeded | Declined | Pending:
    intent_id = _field(intent, "id", str)
    status = _field(intent, "status", str)
    currency = _field(intent, "currency", str)
    if status == "succeeded":
        return Succeeded(intent_id, _money(_field(intent, "amount_received", int), currency))
    if status in ("processing", "requires_capture"):
        # Accepted; the money moves later (a bank debit): the webhook tells the outcome.
        return Pending(intent_id, _money(_field(intent, "amount", int), currency))
    error = intent.get("last_payment_error")
    if status == "requires_action" or (error is None and status == "requires_payment_method"):
        # Off-session, nobody can complete 3-D Secure: the customer must pay on-session.
        return Declined(
            "authentication_required", "The bank asks the customer to authenticate.", intent_id
        )
    message = str((error or {}).get("message") or f"The PaymentIntent is {status}.")
    code = decline_code(error) if error else str(intent.get("cancellation_reason") or status)
    return Declined(code, _redacted(message), intent_id)


def _refund_outcome(refund: Mapping[str, Any]) -> Succeeded | Declined:
    refund_id = _field(refund, "id", str)
    status = _field(refund, "status", str)
    if status in ("succeeded", "pending", "requires_action"):
        # Accepted by Stripe: a refund that settles later is still Succeeded for us.
        amount = _money(_field(refund, "amount", int), _field(refund, "currency", str))
        return Succeeded(refund_id, amount)
    reason = str(refund.get("failure_reason") or status)
    return Declined(f"refund_{status}", f"Stripe could not refund it: {reason}.", refund_id)


def _invalid_charge(error: stripe.InvalidRequestError) -> Declined:
    code = error.code or "invalid_request"
    if error.param == "amount" or code in ("amount_too_small", "amount_too_large"):
        return Declined("invalid_amount", _message(error))
    if code == "resource_missing":
        # The customer or the saved method is gone: only a new method can pay.
        return Declined("no_payment_method", _message(error))
    return Declined(code, _message(error))


def _invalid_refund(error: stripe.InvalidRequestError) -> Declined:
    code = error.code or ""
    if code == "resource_missing":
        return Declined("charge_not_found", _message(error))
    if code == "amount_too_small":
        return Declined("invalid_amount", _message(error))
    # Stripe answers a refund beyond what is left with param=amount and, at times, no code.
    if code in ("charge_already_refunded", "amount_too_large") or error.param == "amount":
        return Declined("amount_too_large", _message(error))
    if error.param == "currency" or "currency" in code:
        return Declined("currency_mismatch", _message(error))
    return Declined(code or "invalid_request", _message(error))


def _retryable(error: stripe.StripeError) -> RetryableError:
    """What a Stripe error that is not a final answer for its key means for a retry."""
    status = error.http_status
    wait = retry_after(_header(error, "retry-after"))
    if isinstance(error, stripe.RateLimitError):
        return RetryableError("rate_limited", "Stripe asked to slow down (429).", wait)
    if isinstance(error, stripe.APIConnectionError):
        # The library wraps the HTTP client's exception; requests' (and httpx's) timeouts
        # are all named ...Timeout.
        timed_out = "Timeout" in type(error.__cause__).__name__
        code = "timeout" if timed_out else "network_error"
        return RetryableError(code, "No answer from Stripe: the outcome is unknown.")
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        return RetryableError(
            "gateway_auth_failed", f"Stripe refused the API key (HTTP {status}): check it."
        )
    if status == 409:
        return RetryableError(
            "idempotency_key_in_use", "Another request with this key is in progress.", wait
        )
    if status is not None and status >= 400:
        return RetryableError("processing_error", f"Stripe failed with HTTP {status}.", wait)
    return RetryableError("malformed_response", "Stripe answered a body that is not readable.")


def _unavailable(error: stripe.StripeError) -> str:
    retryable = _retryable(error)
    return f"{retryable.code}: {retryable.message}"


def _header(error: stripe.StripeError, name: str) -> str | None:
    for key, value in (error.headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _error_body(error: stripe.StripeError) -> Mapping[str, Any]:
    body = error.json_body if isinstance(error.json_body, dict) else {}
    inner = body.get("error")
    return inner if isinstance(inner, dict) else {}


def _message(error: stripe.StripeError) -> str:
    return _redacted(error.user_message or type(error).__name__)


def _plain(answer: object) -> dict[str, Any]:
    """An answer of the library as plain data; it hands a JSON array over as a list."""
    if not isinstance(answer, stripe.StripeObject):
        raise _Malformed("Stripe answered JSON that is not an object")
    return answer.to_dict()


def _id_of(obj: object) -> str | None:
    if isinstance(obj, Mapping):
        value = obj.get("id")
        return value if isinstance(value, str) else None
    return None


def _field(obj: object, name: str, kind: type[T]) -> T:
    value = obj.get(name) if isinstance(obj, Mapping) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(f"Stripe answered an object without a valid {name!r}")
    return value


def _money(amount: int, currency: str) -> Money:
    try:
        return from_stripe_amount(amount, currency)
    except (ValueError, UnknownCurrency) as error:
        raise _Malformed(f"Stripe answered an unreadable amount: {error}") from None


class StripeWebhooks:
    """Verifies ``Stripe-Signature`` (``t=<unix time>,v1=<hex>[,v1=...]``, an HMAC-SHA256
    of ``"<t>.<raw body>"`` under the endpoint's signing secret) against the given ``now``,
    and reads the events the ledger acts on.

    ``refund.created`` (sent for every refund, the Dashboard's too, since API version
    2024-10-28.acacia) is the refund event; ``charge.refunded`` carries only the charge's
    cumulative ``amount_refunded``, so it is ignored.
    """

    name = "stripe"

    def __init__(self, config: StripeConfig) -> None:
        if not config.webhook_secret:
            raise ValueError("Stripe webhooks need the endpoint's signing secret")
        self._secret = config.webhook_secret.encode()
        self._tolerance = config.webhook_tolerance

    def __repr__(self) -> str:
        return "StripeWebhooks()"

    def verify(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> ProviderEvent | None:
        timestamp, signatures = _signature_header(headers.get("stripe-signature"))
        expected = hmac.new(self._secret, timestamp.encode() + b"." + body, hashlib.sha256)
        digest = expected.hexdigest().encode()
        matched = False
        for signature in signatures:  # each compared in constant time, none skipped
            # As bytes: a str with other than ASCII cannot be compared (TypeError).
            matched |= hmac.compare_digest(digest, signature.encode("utf-8", "replace"))
        if not matched:
            raise WebhookRejected("the Stripe-Signature does not match the body")
        if abs(now.timestamp() - int(timestamp)) > self._tolerance:
            raise WebhookRejected("the Stripe-Signature timestamp is outside the tolerance")
        try:
            event = json.loads(body)
            return _provider_event(event)
        except (ValueError, TypeError, KeyError, AttributeError, UnknownCurrency):
            raise WebhookRejected("a signed Stripe event that cannot be read") from None


def _signature_header(header: str | None) -> tuple[str, list[str]]:
    if not header:
        raise WebhookRejected("no Stripe-Signature header")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not signatures:
        raise WebhookRejected("a Stripe-Signature without one t and a v1 signature")
    return timestamps[0], signatures


_DISPUTE_CLOSED: dict[str, EventKind] = {
    "won": "dispute_won",
    # An inquiry closed without a chargeback: the money stays with the business.
    "warning_closed": "dispute_won",
    "lost": "dispute_lost",
}


def _provider_event(event: dict[str, Any]) -> ProviderEvent | None:
    event_type = event["type"]
    obj: dict[str, Any] = event["data"]["object"]

    def provider_event(kind: EventKind, charge: str | None, **fields: Any) -> ProviderEvent:
        return ProviderEvent("stripe", event["id"], kind, charge, **fields)

    metadata = obj.get("metadata") or {}
    key = metadata.get("idempotency_key")
    if event_type == "payment_intent.succeeded":
        return provider_event(
            "payment_succeeded",
            obj["id"],
            idempotency_key=key,
            amount=from_stripe_amount(obj["amount_received"], obj["currency"]),
        )
    if event_type == "payment_intent.payment_failed":
        error = obj.get("last_payment_error") or {}
        return provider_event(
            "payment_failed",
            obj["id"],
            idempotency_key=key,
            amount=from_stripe_amount(obj["amount"], obj["currency"]),
            code=decline_code(error),
            message=_redacted(str(error.get("message") or "")),
        )
    if event_type == "refund.created":
        if obj["status"] not in ("succeeded", "pending", "requires_action"):
            return None  # failed or canceled at once: no money went back
        return provider_event(
            "refund_succeeded",
            obj.get("payment_intent"),
            idempotency_key=key,
            object_reference=obj["id"],
            amount=from_stripe_amount(obj["amount"], obj["currency"]),
        )
    if event_type == "charge.dispute.created":
        kind: EventKind | None = "dispute_opened"
    elif event_type == "charge.dispute.closed":
        kind = _DISPUTE_CLOSED.get(obj["status"])
    else:
        return None
    if kind is None:
        return None
    return provider_event(
        kind,
        obj.get("payment_intent"),
        object_reference=obj["id"],
        amount=from_stripe_amount(obj["amount"], obj["currency"]),
        code=obj.get("reason"),
    )
