"""PayPal (REST v2) behind our gateway port, and PayPal's webhook verification.

Built on httpx rather than PayPal's ``paypal-server-sdk``: that SDK is a generated client
with its own transport, timeouts and exceptions that we would have to wrap anyway to get
``gateways.http``'s mapping of timeouts, 429 and 5xx, and it has no webhook verification.

A charge is two calls, so that ``find_charge`` can look without moving money:

1. ``POST /v2/checkout/orders`` with ``PayPal-Request-Id: <key>:order``, intent CAPTURE and
   one purchase unit (amount, ``custom_id`` and ``invoice_id`` = our idempotency key, the
   description). It carries no payment source, so it only creates an order (CREATED).
2. ``POST /v2/checkout/orders/{id}/capture`` with ``PayPal-Request-Id: <key>`` and the
   vaulted token as ``payment_source`` ("a valid payment_source must be provided" to
   capture an order the payer did not approve, says the capture reference). The token is
   ``<vault_id>`` or ``paypal:<vault_id>`` for a saved PayPal wallet (``{"paypal":
   {"vault_id": ...}}``), ``card:<vault_id>`` for a saved card (``{"card": {"vault_id":
   ..., "stored_credential": merchant-initiated, recurring, subsequent}}``).

``find_charge`` replays step 1 only: the same request id answers the same order (a
request never sent creates an empty order, which expires unpaid), then
``GET /v2/checkout/orders/{id}`` shows its capture, if any. PayPal keeps request ids for
6 hours (72 on request to PayPal), so the lookup is exact within that window; later, a
replay would create a new, empty order. Keep the account setting that blocks a second
payment per invoice ID on: PayPal then refuses to pay the key twice
(``DUPLICATE_INVOICE_ID``), which we report as an unknown outcome, never as a decline.
Our keys (about 50 characters) fit PayPal's request id (108), ``custom_id`` and
``invoice_id`` (127) as they are.

Refunds: ``POST /v2/payments/captures/{id}/refund`` with ``PayPal-Request-Id: <refund
key>`` and the key as ``custom_id``/``invoice_id``. Replaying it to look a refund up
would refund, so ``find_refund`` reads the capture (``GET /v2/payments/captures/{id}``),
follows its ``up`` link to the order and looks for the refund whose ``invoice_id`` is
the key among the order's ``payments.refunds``.

OAuth2: ``POST /v1/oauth2/token`` (basic auth, ``grant_type=client_credentials``); the
token is kept until a minute before ``expires_in``, fetched again once on a 401, and never
logged nor put into a message.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

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
from ledger.errors import InvalidMoney, UnknownCurrency
from ledger.money import Money, exponent

_REQUEST_ID = "PayPal-Request-Id"
_REPRESENTATION = {"Prefer": "return=representation"}
# A token is refreshed this long before PayPal says it expires.
_TOKEN_MARGIN = 60.0
# PayPal's ids (orders, captures, vault tokens) are letters, digits, '-' and '_': anything
# else must not reach a URL path.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ORDER_LINK = re.compile(r"/v2/checkout/orders/([A-Za-z0-9_-]+)$")
_CAPTURE_LINK = re.compile(r"/v2/payments/captures/([A-Za-z0-9_-]+)$")
# ISO 4217 gives these two decimals, PayPal accepts none ("DECIMALS_NOT_SUPPORTED").
_WHOLE_UNITS_ONLY = frozenset({"HUF", "TWD"})

_CAPTURED = frozenset({"COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"})
_REFUSED = frozenset({"DECLINED", "FAILED"})
# processor_response.response_code of a declined card capture.
_CARD_CODES = {"5120": "insufficient_funds", "5400": "expired_card", "PPEF": "expired_card"}
# 400/422 issues, in our terms; any other issue becomes its snake_case name.
_ISSUE_CODES = {
    "INSTRUMENT_DECLINED": "card_declined",
    "REFERENCED_CARD_EXPIRED": "expired_card",
    "CANNOT_BE_ZERO_OR_NEGATIVE": "invalid_amount",
    "DECIMAL_PRECISION": "invalid_amount",
    "DECIMALS_NOT_SUPPORTED": "invalid_amount",
    "CAPTURE_FULLY_REFUNDED": "amount_too_large",
    "CAPTURED_AMOUNT_FULLY_REFUNDED": "amount_too_large",
    "REFUND_AMOUNT_EXCEEDED": "amount_too_large",
    "REFUND_CAPTURE_CURRENCY_MISMATCH": "currency_mismatch",
    "REFUND_CURRENCY_MISMATCH": "currency_mismatch",
    "CURRENCY_MISMATCH": "currency_mismatch",
    "INVALID_RESOURCE_ID": "charge_not_found",
}
# A payment or refund under this key may already exist (its request id was forgotten):
# the outcome is unknown, which is not the customer's failure.
# Issues that leave the outcome unknown: the key was paid already, or its first request
# is still being processed.
_UNKNOWN_OUTCOME_ISSUES = frozenset({"DUPLICATE_INVOICE_ID", "PREVIOUS_REQUEST_IN_PROGRESS"})
_AUTH_FAILED = "gateway_auth_failed"


@dataclass(frozen=True, slots=True)
class PayPalConfig:
    """A PayPal REST app's credentials; ``webhook_id`` is the id PayPal gave the webhook
    endpoint (needed only to verify deliveries). Sandbox: ``https://api-m.sandbox.paypal.com``."""

    client_id: str
    client_secret: str = field(repr=False)
    api_base: str = "https://api-m.paypal.com"
    webhook_id: str | None = None
    timeout: float = 30.0


class _Session:
    """Calls PayPal's REST API with a bearer token, cached until shortly before it expires
    and fetched again once when PayPal answers 401."""

    def __init__(
        self,
        config: PayPalConfig,
        client: httpx.Client | None,
        monotonic: Callable[[], float],
    ) -> None:
        self._config = config
        self._base = config.api_base.rstrip("/")
        self._owns_client = client is None
        self._client = client or httpx.Client()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def call(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response | RetryableError:
        for fresh in (False, True):
            token = self._bearer(fresh)
            if isinstance(token, RetryableError):
                return token
            response = send(
                self._client,
                method,
                self._base + path,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                timeout=self._config.timeout,
                **kwargs,
            )
            if isinstance(response, RetryableError) or response.status_code != 401:
                break
        if isinstance(response, httpx.Response) and response.status_code in (401, 403):
            return RetryableError(
                _AUTH_FAILED, f"PayPal refused our credentials (HTTP {response.status_code})"
            )
        return response

    def _bearer(self, fresh: bool) -> str | RetryableError:
        with self._lock:
            if fresh or self._token is None or self._monotonic() >= self._expires_at:
                self._token = None
                fetched = self._fetch()
                if isinstance(fetched, RetryableError):
                    return fetched
                self._token, lifetime = fetched
                self._expires_at = self._monotonic() + max(lifetime - _TOKEN_MARGIN, 0.0)
            return self._token

    def _fetch(self) -> tuple[str, float] | RetryableError:
        response = send(
            self._client,
            "POST",
            self._base + "/v1/oauth2/token",
            auth=(self._config.client_id, self._config.client_secret),
            data={"grant_type": "client_credentials"},
            headers={"Accept": "application/json"},
            timeout=self._config.timeout,
        )
        if isinstance(response, RetryableError):
            return response
        if response.status_code != 200:
            return RetryableError(
                _AUTH_FAILED,
                f"PayPal refused the client credentials (HTTP {response.status_code})",
            )
        body = json_body(response)
        if isinstance(body, RetryableError):
            return body
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(lifetime, int):
            return _malformed("the OAuth2 token answer")
        return token, float(lifetime)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class PayPalGateway:
    """Charges vaulted PayPal wallets and cards through Orders v2, refunds captures through
    Payments v2; see the module docstring for the calls and their idempotency."""

    name = "paypal"

    def __init__(
        self,
        config: PayPalConfig,
        client: httpx.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = _Session(config, client, monotonic)

    def charge(self, request: ChargeRequest) -> Outcome:
        refused = _refused_amount(request.amount)
        if refused is not None:
            return refused
        source = _payment_source(request.token)
        if isinstance(source, Declined):
            return source
        order = self._order(request)
        if not isinstance(order, str):
            return order
        response = self._session.call(
            "POST",
            f"/v2/checkout/orders/{order}/capture",
            headers={_REQUEST_ID: request.idempotency_key, **_REPRESENTATION},
            json={"payment_source": source},
        )
        if isinstance(response, RetryableError):
            return response
        if response.status_code in (200, 201):
            body = json_body(response)
            if isinstance(body, RetryableError):
                return body
            capture = _capture_of(body)
            if capture is None:
                return _malformed("the capture answer")
            return _capture_outcome(capture, request.amount)
        if _issue(response) == "ORDER_ALREADY_CAPTURED":
            # The capture's request id was forgotten, the order was not: read its capture.
            recorded = self._recorded(order, request.amount)
            return recorded if recorded is not None else _malformed("the captured order")
        return _refusal(response)

    def find_charge(self, request: ChargeRequest) -> Recorded | None:
        never_sent = _refused_amount(request.amount) is not None
        if never_sent or isinstance(_payment_source(request.token), Declined):
            return None  # refused before any call: nothing was ever sent
        order = self._order(request)
        if isinstance(order, RetryableError):
            raise GatewayUnavailable(order.message)
        if isinstance(order, Declined):
            return None  # PayPal refuses to create this order, so nothing was captured
        recorded = self._recorded(order, request.amount)
        if isinstance(recorded, RetryableError):
            raise GatewayUnavailable(recorded.message)
        return recorded

    def refund(self, request: RefundRequest) -> Outcome:
        refused = _refused_amount(request.amount)
        if refused is not None:
            return refused
        if not _ID.fullmatch(request.charge_reference):
            return Declined("charge_not_found", "No PayPal capture has this reference.")
        key = request.idempotency_key
        response = self._session.call(
            "POST",
            f"/v2/payments/captures/{request.charge_reference}/refund",
            headers={_REQUEST_ID: key, **_REPRESENTATION},
            json={"amount": _amount(request.amount), "custom_id": key, "invoice_id": key},
        )
        if isinstance(response, RetryableError):
            return response
        if response.status_code in (200, 201):
            body = json_body(response)
            if isinstance(body, RetryableError):
                return body
            return _refund_outcome(body, request.amount)
        if response.status_code == 404:
            return Declined("charge_not_found", "No PayPal capture has this reference.")
        return _refusal(response)

    def find_refund(self, request: RefundRequest) -> Recorded | None:
        # Replaying the refund call would refund: read the order's refunds instead.
        if not _ID.fullmatch(request.charge_reference):
            return None
        capture = self._read(f"/v2/payments/captures/{request.charge_reference}")
        if capture is None:
            return None  # no such capture: nothing was refunded from it
        order = _linked_id(capture, "up", _ORDER_LINK)
        if order is None:
            raise GatewayUnavailable("PayPal's capture does not link to its order")
        found = self._read(f"/v2/checkout/orders/{order}")
        if found is None:
            raise GatewayUnavailable("PayPal no longer finds the capture's order")
        for unit in _list(found.get("purchase_units")):
            for refund in _list(_dict(unit.get("payments")).get("refunds")):
                if request.idempotency_key in (refund.get("invoice_id"), refund.get("custom_id")):
                    outcome = _refund_outcome(refund, request.amount)
                    if isinstance(outcome, RetryableError):
                        raise GatewayUnavailable(outcome.message)
                    return outcome
        return None

    def close(self) -> None:
        self._session.close()

    def _order(self, request: ChargeRequest) -> str | Declined | RetryableError:
        """The id of the order for this request's key, created by the first call."""
        unit = {
            "custom_id": request.idempotency_key,
            "invoice_id": request.idempotency_key,
            "amount": _amount(request.amount),
        }
        if request.description:
            unit["description"] = request.description[:127]
        response = self._session.call(
            "POST",
            "/v2/checkout/orders",
            headers={_REQUEST_ID: f"{request.idempotency_key}:order"},
            json={"intent": "CAPTURE", "purchase_units": [unit]},
        )
        if isinstance(response, RetryableError):
            return response
        if response.status_code not in (200, 201):
            return _refusal(response)
        body = json_body(response)
        if isinstance(body, RetryableError):
            return body
        order = body.get("id")
        if not isinstance(order, str) or not _ID.fullmatch(order):
            return _malformed("the order answer")
        return order

    def _recorded(self, order: str, amount: Money) -> Recorded | RetryableError | None:
        """What the order's capture came to; None while it has none."""
        response = self._session.call("GET", f"/v2/checkout/orders/{order}")
        if isinstance(response, RetryableError):
            return response
        if response.status_code != 200:
            return RetryableError(
                "lookup_failed", f"PayPal answered HTTP {response.status_code} for an order"
            )
        body = json_body(response)
        if isinstance(body, RetryableError):
            return body
        capture = _capture_of(body)
        return None if capture is None else _capture_outcome(capture, amount)

    def _read(self, path: str) -> dict[str, Any] | None:
        """A resource, None if PayPal has none there; raises GatewayUnavailable otherwise."""
        response = self._session.call("GET", path)
        if isinstance(response, RetryableError):
            raise GatewayUnavailable(response.message)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise GatewayUnavailable(f"PayPal answered HTTP {response.status_code}")
        body = json_body(response)
        if isinstance(body, RetryableError):
            raise GatewayUnavailable(body.message)
        return body


class PayPalWebhooks:
    """Verifies deliveries with PayPal's ``POST /v1/notifications/verify-webhook-signature``
    (PayPal checks the signature against its certificate) and reads the events the ledger
    acts on. A delivery whose ``paypal-transmission-time`` is more than ``tolerance``
    seconds away from ``now`` is refused as a replay."""

    name = "paypal"

    def __init__(
        self,
        config: PayPalConfig,
        client: httpx.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        tolerance: float = 300.0,
    ) -> None:
        if not config.webhook_id:
            raise ValueError("verifying PayPal webhooks needs the webhook_id PayPal gave it")
        self._webhook_id = config.webhook_id
        self._tolerance = timedelta(seconds=tolerance)
        self._session = _Session(config, client, monotonic)

    def verify(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> ProviderEvent | None:
        names = ("auth-algo", "cert-url", "transmission-id", "transmission-sig")
        fields = {name.replace("-", "_"): headers.get(f"paypal-{name}", "") for name in names}
        sent_at = headers.get("paypal-transmission-time", "")
        if not all(fields.values()) or not sent_at:
            raise WebhookRejected("a PayPal signature header is missing")
        try:
            when = datetime.fromisoformat(sent_at)
        except ValueError:
            raise WebhookRejected("paypal-transmission-time is not a timestamp") from None
        if when.tzinfo is None or abs(now - when) > self._tolerance:
            raise WebhookRejected("the delivery's transmission time is stale or skewed")
        try:
            text = body.decode("utf-8")
            event = json.loads(text)
        except ValueError:
            raise WebhookRejected("the delivery is not JSON") from None
        if not isinstance(event, dict):
            raise WebhookRejected("the delivery is not a JSON object")
        self._check(fields | {"transmission_time": sent_at}, text)
        return _event(event)

    def close(self) -> None:
        self._session.close()

    def _check(self, fields: dict[str, str], event: str) -> None:
        # The event goes back byte for byte: PayPal checks the signature against the body
        # it sent, and re-encoding the parsed JSON can change it.
        head = json.dumps(fields | {"webhook_id": self._webhook_id})
        payload = f'{head[:-1]}, "webhook_event": {event}}}'
        response = self._session.call(
            "POST",
            "/v1/notifications/verify-webhook-signature",
            headers={"Content-Type": "application/json"},
            content=payload.encode(),
        )
        if isinstance(response, RetryableError):
            # PayPal delivers again later: refuse now rather than act on an unchecked event.
            raise WebhookRejected(f"could not verify with PayPal: {response.message}")
        if response.status_code != 200:
            raise WebhookRejected(f"PayPal's verification answered HTTP {response.status_code}")
        answer = json_body(response)
        if isinstance(answer, RetryableError) or answer.get("verification_status") != "SUCCESS":
            raise WebhookRejected("PayPal did not verify the delivery's signature")


# CUSTOMER.DISPUTE.RESOLVED dispute_outcome.outcome_code: who keeps the money. With
# RESOLVED_WITH_PAYOUT PayPal paid the buyer from its own funds; a buyer who cancels or a
# denied claim leaves the money with the business.
_DISPUTE_OUTCOMES: dict[str, EventKind] = {
    "RESOLVED_SELLER_FAVOUR": "dispute_won",
    "RESOLVED_WITH_PAYOUT": "dispute_won",
    "CANCELED_BY_BUYER": "dispute_won",
    "DENIED": "dispute_won",
    "RESOLVED_BUYER_FAVOUR": "dispute_lost",
    "ACCEPTED": "dispute_lost",
}


def _event(event: dict[str, Any]) -> ProviderEvent | None:
    event_id, kind, resource = event.get("id"), event.get("event_type"), event.get("resource")
    if not isinstance(event_id, str) or not isinstance(resource, dict):
        raise WebhookRejected("the delivery has no event id or resource")

    def provider_event(kind: EventKind, charge: Any, **more: Any) -> ProviderEvent:
        return ProviderEvent("paypal", event_id, kind, _text(charge), **more)

    if kind in ("PAYMENT.CAPTURE.COMPLETED", "PAYMENT.CAPTURE.DENIED", "PAYMENT.CAPTURE.DECLINED"):
        completed = kind == "PAYMENT.CAPTURE.COMPLETED"
        return provider_event(
            "payment_succeeded" if completed else "payment_failed",
            resource.get("id"),
            idempotency_key=_text(resource.get("custom_id")),
            amount=_event_money(resource.get("amount")),
            code=None if completed else _capture_decline(resource),
        )
    if kind == "PAYMENT.CAPTURE.REFUNDED":  # the resource is the refund
        return provider_event(
            "refund_succeeded",
            _linked_id(resource, "up", _CAPTURE_LINK),
            idempotency_key=_text(resource.get("custom_id")),
            object_reference=_text(resource.get("id")),
            amount=_event_money(resource.get("amount")),
        )
    if kind in ("CUSTOMER.DISPUTE.CREATED", "CUSTOMER.DISPUTE.RESOLVED"):
        dispute_kind: EventKind = "dispute_opened"
        if kind == "CUSTOMER.DISPUTE.RESOLVED":
            outcome = _dict(resource.get("dispute_outcome")).get("outcome_code")
            if outcome not in _DISPUTE_OUTCOMES:
                return None  # an outcome that moves no money either way
            dispute_kind = _DISPUTE_OUTCOMES[outcome]
        transactions = _list(resource.get("disputed_transactions"))
        first = transactions[0] if transactions else {}
        return provider_event(
            dispute_kind,
            first.get("seller_transaction_id"),
            idempotency_key=_text(first.get("invoice_number")),
            object_reference=_text(resource.get("dispute_id")),
            amount=_event_money(resource.get("dispute_amount")),
            code=_text(resource.get("reason")),
        )
    return None


def _amount(money: Money) -> dict[str, str]:
    """PayPal's amount object: a decimal string with the currency's decimals."""
    if money.currency in _WHOLE_UNITS_ONLY:
        value = str(money.amount // 10 ** exponent(money.currency))
    else:
        value = f"{money.to_decimal():f}"
    return {"currency_code": money.currency, "value": value}


def _refused_amount(money: Money) -> Declined | None:
    if money.amount <= 0:
        return Declined("invalid_amount", f"The amount must be positive, got {money}.")
    if money.currency in _WHOLE_UNITS_ONLY and money.to_decimal() % 1:
        return Declined("invalid_amount", f"PayPal takes whole {money.currency} only, got {money}.")
    return None


def _payment_source(token: str) -> dict[str, Any] | Declined:
    kind, _, vault_id = token.rpartition(":")
    if kind not in ("", "paypal", "card") or not _ID.fullmatch(vault_id):
        return Declined("invalid_token", "The payment method is not a PayPal vault token.")
    if kind == "card":
        # A renewal the payer does not attend: the card network must know it is one.
        stored = {
            "payment_initiator": "MERCHANT",
            "payment_type": "RECURRING",
            "usage": "SUBSEQUENT",
        }
        return {"card": {"vault_id": vault_id, "stored_credential": stored}}
    return {"paypal": {"vault_id": vault_id}}


def _capture_of(order: Mapping[str, Any]) -> dict[str, Any] | None:
    """The order's latest capture (intent CAPTURE allows one)."""
    for unit in _list(order.get("purchase_units")):
        captures = _list(_dict(unit.get("payments")).get("captures"))
        if captures:
            return captures[-1]
    return None


def _capture_outcome(capture: Mapping[str, Any], requested: Money) -> Recorded | RetryableError:
    reference, status = capture.get("id"), capture.get("status")
    if not isinstance(reference, str) or not reference:
        return _malformed("a capture without an id")
    amount = _money(capture.get("amount")) or requested
    if status in _CAPTURED:
        return Succeeded(reference, amount)
    if status == "PENDING":
        return Pending(reference, amount)
    if status in _REFUSED:
        return Declined(_capture_decline(capture), "PayPal declined the payment.", reference)
    return _malformed(f"a capture in status {status!r}")


def _capture_decline(capture: Mapping[str, Any]) -> str:
    code = _dict(capture.get("processor_response")).get("response_code")
    return _CARD_CODES.get(code, "card_declined") if isinstance(code, str) else "card_declined"


def _refund_outcome(refund: Mapping[str, Any], requested: Money) -> Recorded | RetryableError:
    reference, status = refund.get("id"), refund.get("status")
    if not isinstance(reference, str) or not reference or not isinstance(status, str):
        return _malformed("a refund without an id or status")
    if status in ("COMPLETED", "PENDING"):  # accepted: a pending refund still settles
        return Succeeded(reference, _money(refund.get("amount")) or requested)
    return Declined(f"refund_{status.lower()}", f"PayPal's refund is {status}.")


def _issue(response: httpx.Response) -> str | None:
    """The first ``details[].issue`` of a PayPal error body (else its ``name``)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    details = _list(body.get("details"))
    issue = details[0].get("issue") if details else body.get("name")
    return issue if isinstance(issue, str) else None


def _refusal(response: httpx.Response) -> Declined | RetryableError:
    """A 4xx answer: a final decline for 400/422 with an issue PayPal names, an unknown
    outcome otherwise."""
    issue = _issue(response)
    if response.status_code not in (400, 422) or issue is None:
        return RetryableError(
            "processing_error", f"PayPal answered HTTP {response.status_code} ({issue or '?'})"
        )
    if issue in _UNKNOWN_OUTCOME_ISSUES:
        return RetryableError(issue.lower(), f"PayPal cannot answer for the key yet ({issue})")
    return Declined(_ISSUE_CODES.get(issue, issue.lower()), f"PayPal refused it: {issue}.")


def _linked_id(resource: Mapping[str, Any], rel: str, pattern: re.Pattern[str]) -> str | None:
    for link in _list(resource.get("links")):
        href = link.get("href")
        if link.get("rel") == rel and isinstance(href, str):
            found = pattern.search(httpx.URL(href).path)
            if found:
                return found[1]
    return None


def _money(value: Any) -> Money | None:
    """A PayPal amount object as Money; None if it is missing or unreadable."""
    amount = _dict(value)
    try:
        return Money.of(str(amount["value"]), str(amount["currency_code"]))
    except (KeyError, InvalidMoney, UnknownCurrency):
        return None


def _event_money(value: Any) -> Money | None:
    if value is None:
        return None
    money = _money(value)
    if money is None:
        raise WebhookRejected("the delivery's amount is unreadable")
    return money


def _malformed(what: str) -> RetryableError:
    return RetryableError("malformed_response", f"PayPal answered {what} that we cannot read")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
