"""Razorpay: recurring payments on a saved card token, refunds, and signed webhooks.

A charge takes Razorpay's two documented steps for a subsequent recurring payment: an
order (``POST /v1/orders``), then a payment on it with the saved token
(``POST /v1/payments/create/recurring``, with ``recurring: "1"``). The token is the
payment method's ``token`` (``token_...``) and ``customer_reference`` the Razorpay customer
it is saved under (``cust_...``). Amounts go in the currency's subunits, which is what
``Money.amount`` holds.

Idempotency: Razorpay takes no idempotency key, so the order's ``receipt`` stands in for
one. It is ``sl_`` and the first 32 hex digits of the SHA-256 of our idempotency key
(35 characters: Razorpay allows 40, our keys run to ~50); the key itself rides in
``notes.subledger_key`` on the order, the payment and the refund, for people and for
webhooks. Before paying, a charge looks its order up by receipt
(``GET /v1/orders?receipt=``) and reads the order's payments
(``GET /v1/orders/{id}/payments``): an order that has a payment is never paid again, and
that payment's state is the answer (captured: Succeeded; created or authorized: Pending,
settled later by webhook; only failed ones: Declined). ``find_charge`` reads the same
records and never pays. Limit: nothing at Razorpay makes "find, then create" atomic, so two
processes sending the same key at the same instant could both pay; the payment processor
never sends one request from two places at once.

Refunds (``POST /v1/payments/{id}/refund``) carry a receipt derived the same way from the
refund's key. Razorpay does not deduplicate them either, so a refund first looks for one
of ours among the payment's refunds (``GET /v1/payments/{id}/refunds``), by receipt or
note, and answers that one instead of refunding twice.

Contact: Razorpay lists the payer's phone (``contact``) as mandatory on a recurring
payment, beside ``email``: it is the customer's phone (``customer.register`` /
``customer.change_contact`` take one). A customer without one is charged without it, and
Razorpay's validation error comes back as ``Declined("invalid_contact")``, which dunning
retries once a phone is on file.

Why httpx and not the official ``razorpay`` package: that client is built on ``requests``
and raises its own errors; wrapping it would still leave us to map timeouts, 429 and 5xx,
which ``gateways.http`` already does for every adapter, over an API of five calls.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import httpx

from gateways.http import json_body, send
from gateways.port import (
    ChargeRequest,
    Declined,
    GatewayUnavailable,
    Outcome,
    Pending,
    Recorded,
    RefundRequest,
    RetryableError,
    Succeeded,
)
from gateways.webhooks import EventKind, ProviderEvent, WebhookRejected
from ledger.errors import InvalidMoney
from ledger.money import Money

_T = TypeVar("_T")

NOTE_KEY = "subledger_key"  # our idempotency key, in the notes of what we create
REFUNDS_PAGE = 100  # the most Razorpay lists at once

_FAILED = "failed"
# Razorpay's error reasons that have a code of ours; others keep their own name.
_DECLINE_CODES = {
    "insufficient_funds": "insufficient_funds",
    "insufficient_balance": "insufficient_funds",
    "card_expired": "expired_card",
    "expired_card": "expired_card",
    "card_declined": "card_declined",
    "payment_declined": "card_declined",
    "payment_failed": "card_declined",
}


def receipt_for(idempotency_key: str) -> str:
    """The order's or refund's ``receipt`` for our key: short enough for Razorpay's 40
    characters, and the same for the same key on every call."""
    return "sl_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def decline_code(reason: str | None) -> str:
    """Our code for a Razorpay error reason (``insufficient_funds``, ``card_expired``...)."""
    if not reason:
        return "card_declined"
    own = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")
    return _DECLINE_CODES.get(reason, own or "card_declined")


@dataclass(frozen=True, slots=True)
class RazorpayConfig:
    """API keys (HTTP basic auth ``key_id:key_secret``) and the webhook secret set on the
    Dashboard, which is needed only to verify webhooks."""

    key_id: str
    key_secret: str = field(repr=False)
    api_base: str = "https://api.razorpay.com"
    webhook_secret: str | None = field(default=None, repr=False)
    timeout: float = 30.0


class _Unreadable(ValueError):
    """Razorpay answered something that is not the documented shape."""


class _Unanswered(Exception):
    """No usable answer (timeout, 5xx, 429, refused keys, unreadable body)."""

    def __init__(self, error: RetryableError) -> None:
        super().__init__(error.message)
        self.error = error


class _Refused(Exception):
    """A final no, found before the end of the steps."""

    def __init__(self, declined: Declined) -> None:
        super().__init__(declined.message)
        self.declined = declined


def _text(entity: Mapping[str, Any], name: str) -> str:
    value = entity.get(name)
    if not isinstance(value, str) or not value:
        raise _Unreadable(f"{name} is not a string")
    return value


def _optional_text(entity: Mapping[str, Any], name: str) -> str | None:
    value = entity.get(name)
    return value if isinstance(value, str) and value else None


def _integer(entity: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = entity.get(name)
    if value is None and default is not None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Unreadable(f"{name} is not an integer")
    return value


def _money(entity: Mapping[str, Any], amount: str = "amount") -> Money:
    try:
        return Money(_integer(entity, amount), _text(entity, "currency"))
    except InvalidMoney as error:
        raise _Unreadable(str(error)) from None


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Unreadable(f"{what} is not an object")
    return value


def _items(collection: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = collection.get("items")
    if not isinstance(items, list):
        raise _Unreadable("a collection without items")
    return [_object(item, "an item") for item in items]


def _our_key(entity: Mapping[str, Any]) -> str | None:
    # Razorpay shows empty notes as [] rather than {}.
    notes = entity.get("notes")
    return _optional_text(notes, NOTE_KEY) if isinstance(notes, Mapping) else None


@dataclass(frozen=True, slots=True)
class _Payment:
    id: str
    status: str
    amount: Money
    refunded: Money
    created_at: int
    reason: str | None
    description: str | None
    captured: bool

    @classmethod
    def of(cls, entity: Mapping[str, Any]) -> _Payment:
        amount = _money(entity)
        return cls(
            id=_text(entity, "id"),
            status=_text(entity, "status"),
            amount=amount,
            refunded=Money(_integer(entity, "amount_refunded", 0), amount.currency),
            created_at=_integer(entity, "created_at", 0),
            reason=_optional_text(entity, "error_reason"),
            description=_optional_text(entity, "error_description"),
            captured=entity.get("captured") is True,
        )

    @property
    def paid(self) -> bool:
        """The money was collected: captured (and maybe refunded since)."""
        return self.status == "captured" or (self.status == "refunded" and self.captured)

    @property
    def failed(self) -> bool:
        """No money was collected: failed, or refunded by Razorpay without ever being
        captured (an authorization left past the capture window, a duplicate payment on
        a paid order: Razorpay's automatic refunds)."""
        return self.status == _FAILED or (self.status == "refunded" and not self.captured)

    def answer(self) -> Recorded:
        if self.paid:
            return Succeeded(self.id, self.amount)
        if self.status == _FAILED:
            message = self.description or "Razorpay failed the payment."
            return Declined(decline_code(self.reason), message, self.id)
        if self.failed:
            message = "Razorpay refunded the payment by itself, uncaptured."
            return Declined("payment_auto_refunded", message, self.id)
        # Created, authorized, or a state unknown to us: in flight, never to be paid again.
        return Pending(self.id, self.amount)


def _recorded(payments: list[_Payment]) -> Recorded | None:
    """What an order's payments say about our charge: a captured one is the charge; else
    one still in flight is Pending; else (failed ones only) the last failure."""
    if not payments:
        return None
    return max(payments, key=lambda p: (p.paid, not p.failed, p.created_at)).answer()


@dataclass(frozen=True, slots=True)
class _Refund:
    id: str
    status: str
    amount: Money

    @classmethod
    def of(cls, entity: Mapping[str, Any]) -> _Refund:
        return cls(_text(entity, "id"), _text(entity, "status"), _money(entity))

    def answer(self) -> Succeeded | Declined:
        # Pending refunds are accepted: they settle on their own (port.Gateway.refund).
        if self.status == _FAILED:
            return Declined("refund_failed", "Razorpay failed the refund.", self.id)
        return Succeeded(self.id, self.amount)


def _refusal(body: Mapping[str, Any], default: str = "card_declined") -> Declined:
    """A Razorpay error body (``{"error": {code, description, reason, field, metadata}}``)
    as a decline; its ``metadata.payment_id`` is the failed payment, if one was made."""
    error = body.get("error")
    if not isinstance(error, Mapping):
        return Declined(default, "Razorpay refused the request.")
    reason = _optional_text(error, "reason")
    bad_field = _optional_text(error, "field")
    metadata = error.get("metadata")
    payment_id = _optional_text(metadata, "payment_id") if isinstance(metadata, Mapping) else None
    if bad_field and reason in (None, "input_validation_failed"):
        code = decline_code(f"invalid_{bad_field}")
    else:
        code = decline_code(reason) if reason else default
    message = _optional_text(error, "description") or "Razorpay refused the request."
    return Declined(code, message, payment_id)


def _invalid_amount(amount: Money) -> Declined | None:
    if amount.amount > 0:
        return None
    return Declined("invalid_amount", f"The amount must be positive, got {amount}.")


def _key_reused(key: str) -> Declined:
    return Declined(
        "idempotency_key_reused",
        f"The idempotency key {key!r} was already used with other parameters.",
    )


class RazorpayGateway:
    """Charges saved Razorpay tokens and refunds their payments; see the module docstring."""

    name = "razorpay"

    def __init__(self, config: RazorpayConfig, client: httpx.Client | None = None) -> None:
        self._config = config
        self._api = config.api_base.rstrip("/") + "/v1"
        # Per request rather than on the client, so that a client passed in works too.
        self._auth = httpx.BasicAuth(config.key_id, config.key_secret)
        self._client = client or httpx.Client(timeout=config.timeout)

    def __repr__(self) -> str:
        return f"RazorpayGateway(key_id={self._config.key_id!r}, api_base={self._api!r})"

    def close(self) -> None:
        self._client.close()

    # The port

    def charge(self, request: ChargeRequest) -> Outcome:
        if (invalid := _invalid_amount(request.amount)) is not None:
            return invalid
        if not request.customer_reference:
            return Declined(
                "no_payment_method",
                "A Razorpay token is charged with the customer (cust_...) it is saved under; "
                "this payment method has none.",
            )
        try:
            return self._charge(request)
        except _Unanswered as failure:
            return failure.error
        except _Refused as refusal:
            return refusal.declined

    def find_charge(self, request: ChargeRequest) -> Recorded | None:
        try:
            orders = self._orders(receipt_for(request.idempotency_key))
            return _recorded(self._payments_of([order_id for order_id, _ in orders]))
        except _Unanswered as failure:
            raise GatewayUnavailable(failure.error.message) from None

    def refund(self, request: RefundRequest) -> Outcome:
        if (invalid := _invalid_amount(request.amount)) is not None:
            return invalid
        try:
            return self._refund(request)
        except _Unanswered as failure:
            return failure.error
        except _Refused as refusal:
            return refusal.declined

    def find_refund(self, request: RefundRequest) -> Recorded | None:
        try:
            if self._payment(request.charge_reference) is None:
                return None  # no such payment: certainly no refund of it
            found = self._our_refund(request)
        except _Unanswered as failure:
            raise GatewayUnavailable(failure.error.message) from None
        return None if found is None else found.answer()

    # Charges

    def _charge(self, request: ChargeRequest) -> Outcome:
        receipt = receipt_for(request.idempotency_key)
        orders = self._orders(receipt)
        if any(amount != request.amount for _, amount in orders):
            return _key_reused(request.idempotency_key)
        recorded = _recorded(self._payments_of([order_id for order_id, _ in orders]))
        if recorded is not None:
            return recorded
        order_id = orders[0][0] if orders else self._create_order(request, receipt)
        return self._pay(request, order_id)

    def _orders(self, receipt: str) -> list[tuple[str, Money]]:
        """Our orders with this receipt, oldest first, as (id, amount)."""
        status, body = self._call("GET", "/orders", params={"receipt": receipt})
        self._expect_ok(status, body)
        try:
            # Compared here too: only an order with exactly our receipt is ours.
            found = [item for item in _items(body) if item.get("receipt") == receipt]
            found.sort(key=lambda item: _integer(item, "created_at", 0))
            return [(_text(item, "id"), _money(item)) for item in found]
        except _Unreadable as error:
            raise self._unreadable("/orders", error) from None

    def _payments_of(self, order_ids: list[str]) -> list[_Payment]:
        payments: list[_Payment] = []
        for order_id in order_ids:
            path = f"/orders/{order_id}/payments"
            status, body = self._call("GET", path)
            self._expect_ok(status, body)
            try:
                payments += [_Payment.of(item) for item in _items(body)]
            except _Unreadable as error:
                raise self._unreadable(path, error) from None
        return payments

    def _create_order(self, request: ChargeRequest, receipt: str) -> str:
        status, body = self._call(
            "POST",
            "/orders",
            json={
                "amount": request.amount.amount,
                "currency": request.amount.currency,
                "receipt": receipt,
                "notes": {NOTE_KEY: request.idempotency_key},
                "payment_capture": True,
            },
        )
        if status != 200:
            raise _Refused(_refusal(body))
        return self._read("/orders", lambda: _text(body, "id"))

    def _pay(self, request: ChargeRequest, order_id: str) -> Outcome:
        payload: dict[str, Any] = {
            "email": request.email,
            "amount": request.amount.amount,
            "currency": request.amount.currency,
            "order_id": order_id,
            "customer_id": request.customer_reference,
            "token": request.token,
            "recurring": "1",
            "notes": {NOTE_KEY: request.idempotency_key},
        }
        if request.phone:
            payload["contact"] = request.phone
        if request.description:
            payload["description"] = request.description
        path = "/payments/create/recurring"
        status, body = self._call("POST", path, json=payload)
        if status != 200:
            # A failed payment stays on the order, and another process may have paid the
            # order meanwhile: the order's payments tell which, else the refusal does.
            return _recorded(self._payments_of([order_id])) or _refusal(body)
        # The creation answers ids only: the payment itself tells how it went.
        payment_id = self._read(path, lambda: _text(body, "razorpay_payment_id"))
        payment = self._payment(payment_id)
        if payment is None:
            return RetryableError("processing_error", f"Razorpay cannot show {payment_id} yet.")
        return payment.answer()

    def _payment(self, payment_id: str) -> _Payment | None:
        """The payment, or None if Razorpay has none with this id (400 or 404: Razorpay
        answers "The id provided does not exist" with a 400)."""
        path = f"/payments/{payment_id}"
        status, body = self._call("GET", path)
        if status in (400, 404):
            return None
        self._expect_ok(status, body)
        return self._read(path, lambda: _Payment.of(body))

    # Refunds

    def _refund(self, request: RefundRequest) -> Outcome:
        payment = self._payment(request.charge_reference)
        if payment is None or not payment.paid:
            return Declined(
                "charge_not_found",
                f"Razorpay has no captured payment {request.charge_reference}.",
            )
        found = self._our_refund(request)
        if found is not None:
            if found.amount != request.amount:
                return _key_reused(request.idempotency_key)
            return found.answer()
        if payment.amount.currency != request.amount.currency:
            return Declined(
                "currency_mismatch",
                f"The payment is in {payment.amount.currency}, the refund in "
                f"{request.amount.currency}.",
            )
        if payment.refunded + request.amount > payment.amount:
            return Declined(
                "amount_too_large",
                f"{payment.refunded} of {payment.amount} is refunded already; "
                f"{request.amount} more would exceed it.",
            )
        path = f"/payments/{request.charge_reference}/refund"
        status, body = self._call(
            "POST",
            path,
            json={
                "amount": request.amount.amount,
                "receipt": receipt_for(request.idempotency_key),
                "notes": {NOTE_KEY: request.idempotency_key},
            },
        )
        if status != 200:
            declined = _refusal(body, default="refund_failed")
            # A refusal about the amount is Razorpay's "more than what is left".
            code = "amount_too_large" if declined.code == "invalid_amount" else declined.code
            return Declined(code, declined.message)
        return self._read(path, lambda: _Refund.of(body)).answer()

    def _our_refund(self, request: RefundRequest) -> _Refund | None:
        """The payment's refund that carries this request's receipt or key, if any."""
        receipt = receipt_for(request.idempotency_key)
        path = f"/payments/{request.charge_reference}/refunds"
        skip = 0
        while True:
            status, body = self._call("GET", path, params={"count": REFUNDS_PAGE, "skip": skip})
            self._expect_ok(status, body)
            try:
                items = _items(body)
                for item in items:
                    if item.get("receipt") == receipt or _our_key(item) == request.idempotency_key:
                        return _Refund.of(item)
            except _Unreadable as error:
                raise self._unreadable(path, error) from None
            if len(items) < REFUNDS_PAGE:
                return None
            skip += len(items)

    # HTTP

    def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Mapping[str, Any]]:
        """Razorpay's status and JSON object; raises _Unanswered when there is none."""
        response = send(self._client, method, self._api + path, auth=self._auth, **kwargs)
        if isinstance(response, RetryableError):
            raise _Unanswered(response)
        if response.status_code in (401, 403):
            # Keys or account set-up, not the customer's card: the operator must act.
            raise _Unanswered(
                RetryableError(
                    "gateway_auth_failed",
                    f"Razorpay refused the API key {self._config.key_id!r} "
                    f"(HTTP {response.status_code})",
                )
            )
        body = json_body(response)
        if isinstance(body, RetryableError):
            raise _Unanswered(body)
        return response.status_code, body

    def _expect_ok(self, status: int, body: Mapping[str, Any]) -> None:
        # A read refused for another reason leaves what Razorpay holds unknown.
        if status != 200:
            error = _refusal(body)
            raise _Unanswered(
                RetryableError("processing_error", f"Razorpay refused a lookup: {error.message}")
            )

    def _read(self, path: str, read: Callable[[], _T]) -> _T:
        try:
            return read()
        except _Unreadable as error:
            raise self._unreadable(path, error) from None

    @staticmethod
    def _unreadable(path: str, error: _Unreadable) -> _Unanswered:
        return _Unanswered(
            RetryableError("malformed_response", f"Razorpay answered {path} oddly: {error}")
        )


# Webhooks

_KINDS: dict[str, EventKind] = {
    "payment.captured": "payment_succeeded",
    "payment.failed": "payment_failed",
    "refund.processed": "refund_succeeded",
    "payment.dispute.created": "dispute_opened",
    "payment.dispute.won": "dispute_won",
    "payment.dispute.lost": "dispute_lost",
}


class RazorpayWebhooks:
    """Verifies Razorpay's webhook deliveries and reads them into ``ProviderEvent``.

    ``X-Razorpay-Signature`` is the hex HMAC-SHA256 of the raw body under the webhook
    secret; ``X-Razorpay-Event-Id`` names the event, the same on every redelivery.
    Razorpay signs no timestamp, so a replayed genuine delivery cannot be told from a
    redelivery here: the receiver's dedupe by ``(gateway, event_id)`` is the replay
    protection, and ``now`` is not used.
    """

    name = "razorpay"

    def __init__(self, config: RazorpayConfig) -> None:
        if not config.webhook_secret:
            raise ValueError("verifying Razorpay webhooks needs RazorpayConfig.webhook_secret")
        self._secret = config.webhook_secret.encode()

    def verify(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> ProviderEvent | None:
        signature = headers.get("x-razorpay-signature", "").strip()
        if not signature:
            raise WebhookRejected("no X-Razorpay-Signature header")
        expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise WebhookRejected("the X-Razorpay-Signature does not match the body")
        event_id = headers.get("x-razorpay-event-id", "").strip()
        if not event_id:
            raise WebhookRejected("no X-Razorpay-Event-Id header: the delivery cannot be deduped")
        try:
            event = _object(json.loads(body), "the body")
            kind = _KINDS.get(str(event.get("event")))
            if kind is None:
                return None
            return _provider_event(event_id, kind, _object(event.get("payload"), "payload"))
        except ValueError as error:  # _Unreadable, and JSON or UTF-8 errors
            raise WebhookRejected(f"unreadable Razorpay delivery: {error}") from None


def _entity(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return _object(_object(payload.get(name), name).get("entity"), f"{name}.entity")


def _provider_event(event_id: str, kind: EventKind, payload: Mapping[str, Any]) -> ProviderEvent:
    if kind == "refund_succeeded":
        refund = _entity(payload, "refund")
        return ProviderEvent(
            gateway=RazorpayWebhooks.name,
            event_id=event_id,
            kind=kind,
            charge_reference=_text(refund, "payment_id"),
            idempotency_key=_our_key(refund),
            object_reference=_text(refund, "id"),
            amount=_money(refund),
        )
    if kind in ("dispute_opened", "dispute_won", "dispute_lost"):
        dispute = _entity(payload, "dispute")
        # The payment rides along (``contains: [payment, dispute]``), with our key in its notes.
        payment_entity = _entity(payload, "payment") if "payment" in payload else {}
        return ProviderEvent(
            gateway=RazorpayWebhooks.name,
            event_id=event_id,
            kind=kind,
            charge_reference=_text(dispute, "payment_id"),
            idempotency_key=_our_key(payment_entity),
            object_reference=_text(dispute, "id"),
            amount=_money(dispute),
            code=_optional_text(dispute, "reason_code"),
            message=_optional_text(dispute, "reason_description") or "",
        )
    payment = _entity(payload, "payment")
    failed = kind == "payment_failed"
    return ProviderEvent(
        gateway=RazorpayWebhooks.name,
        event_id=event_id,
        kind=kind,
        charge_reference=_text(payment, "id"),
        idempotency_key=_our_key(payment),
        amount=_money(payment),
        code=decline_code(_optional_text(payment, "error_reason")) if failed else None,
        message=(_optional_text(payment, "error_description") or "") if failed else "",
    )
