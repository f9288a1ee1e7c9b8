"""A small fake of Razorpay's REST API: orders, payments and refunds kept in memory and
answered in the shapes Razorpay documents, behind HTTP basic auth, with faults to inject.

Tokens decide how a recurring payment goes (``tokens`` overrides them per token):

===========================  ================================================================
``token_insufficientFunds``  fails, reason ``insufficient_funds``
``token_expiredCard``        fails, reason ``card_expired``
``token_declined``           fails, reason ``card_declined``
``token_pending``            stays ``created`` (a bank that settles later)
any other                    ``captured`` (orders are created with ``payment_capture``)
===========================  ================================================================

A failed payment is kept on its order and answered as Razorpay does: HTTP 400 with the
error and ``metadata.payment_id``. Faults (``fail``) apply to the next matching requests:
``timeout`` sleeps past a short client timeout before doing anything, ``timeout_after``
does the work and then sleeps (the answer is lost), ``server_error`` (500) and
``rate_limited`` (429, Retry-After: 7) do nothing, ``not_json_after`` and
``not_object_after`` do the work and answer an unreadable body, ``empty_after`` answers
an empty collection (a list that lags behind).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateways.razorpay import RazorpayConfig

KEY_ID = "rzp_test_fake"
KEY_SECRET = "fake-key-secret-never-shown"
WEBHOOK_SECRET = "fake-webhook-secret-never-shown"
SLOW = 0.6  # seconds a timeout fault sleeps: longer than the tests' client timeout

FaultKind = Literal[
    "timeout",
    "timeout_after",
    "server_error",
    "rate_limited",
    "not_json_after",
    "not_object_after",
    "empty_after",
]
Behaviour = tuple[Literal["captured", "created", "failed"], str | None]

_TOKENS: dict[str, Behaviour] = {
    "token_insufficientFunds": ("failed", "insufficient_funds"),
    "token_expiredCard": ("failed", "card_expired"),
    "token_declined": ("failed", "card_declined"),
    "token_pending": ("created", None),
}
_DESCRIPTIONS = {
    "insufficient_funds": "Your payment could not be completed due to insufficient account "
    "balance. Try another card or payment method.",
    "card_expired": "The card has expired.",
    "card_declined": "Your payment has been declined by your bank.",
}


@dataclass
class Fault:
    method: str
    path: str
    kind: FaultKind
    times: int


@dataclass(frozen=True)
class Seen:
    """A request the fake received."""

    method: str
    path: str
    args: dict[str, str]
    body: Any
    authorization: str | None


def _error(
    status: int,
    description: str,
    reason: str = "input_validation_failed",
    field: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Response:
    error = {
        "code": "BAD_REQUEST_ERROR",
        "description": description,
        "source": "business" if reason == "input_validation_failed" else "customer",
        "step": "payment_initiation"
        if reason == "input_validation_failed"
        else "payment_authorization",
        "reason": reason,
        "metadata": metadata or {},
        "field": field,
    }
    return _json({"error": error}, status)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers, content_type="application/json")


def _collection(items: list[dict[str, Any]]) -> Response:
    return _json({"entity": "collection", "count": len(items), "items": items})


class FakeRazorpay:
    """Razorpay's orders, recurring payments and refunds, answered by ``server`` (which
    forgets whatever it answered before)."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        server.clear()
        server.expect_request(re.compile(".*")).respond_with_handler(self._handle)
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, Behaviour] = dict(_TOKENS)
        self.require_contact = True  # Razorpay's docs list contact as mandatory
        self.seen: list[Seen] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._clock = itertools.count(1_700_000_000)

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def config(self, **overrides: Any) -> RazorpayConfig:
        """Keys this fake accepts, pointed at it; ``overrides`` replace any field."""
        fields: dict[str, Any] = {
            "key_id": KEY_ID,
            "key_secret": KEY_SECRET,
            "api_base": self.url,
            "webhook_secret": WEBHOOK_SECRET,
            "timeout": 0.3,
        }
        return RazorpayConfig(**(fields | overrides))

    def fail(self, method: str, path: str, kind: FaultKind, times: int = 1) -> None:
        """The next ``times`` requests ``method path`` (path without query) meet ``kind``."""
        with self._lock:
            self._faults.append(Fault(method, path, kind, times))

    def calls(self, method: str, path: str) -> int:
        """How many ``method path`` requests came in (faulted ones included)."""
        return sum(1 for s in self.seen if (s.method, s.path) == (method, path))

    def add_refund(self, payment_id: str, amount: int) -> None:
        """A refund made elsewhere (the Dashboard, another system)."""
        with self._lock:
            self._refund(self.payments[payment_id], amount, None, [])

    # The server side

    def _handle(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        with self._lock:
            self.seen.append(
                Seen(
                    request.method,
                    request.path,
                    dict(request.args),
                    body,
                    request.headers.get("Authorization"),
                )
            )
            fault = self._take_fault(request.method, request.path)
        if fault == "timeout":
            time.sleep(SLOW)
            return _json({}, 504)
        if fault == "server_error":
            return _json({"error": {"code": "SERVER_ERROR", "description": "oops"}}, 500)
        if fault == "rate_limited":
            return _json({"error": {"code": "BAD_REQUEST_ERROR"}}, 429, {"Retry-After": "7"})
        expected = "Basic " + base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, "Authentication failed", reason="authentication_failed")
        with self._lock:
            response = self._route(request.method, request.path, dict(request.args), body)
        if fault == "timeout_after":
            time.sleep(SLOW)
        elif fault == "not_json_after":
            return Response("<html>502 Bad Gateway</html>", 200, content_type="text/html")
        elif fault == "not_object_after":
            return _json(["not", "an", "object"])
        elif fault == "empty_after":
            return _collection([])
        return response

    def _take_fault(self, method: str, path: str) -> FaultKind | None:
        for fault in self._faults:
            if (fault.method, fault.path) == (method, path) and fault.times > 0:
                fault.times -= 1
                return fault.kind
        return None

    def _route(self, method: str, path: str, args: dict[str, str], body: Any) -> Response:
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["v1", "orders"]:
                receipt = args.get("receipt")
                found = [o for o in self.orders.values() if receipt in (None, o["receipt"])]
                return _collection(found[::-1])  # newest first
            case "POST", ["v1", "orders"]:
                return self._create_order(body)
            case "GET", ["v1", "orders", order_id, "payments"] if order_id in self.orders:
                return _collection([p for p in self.payments.values() if p["order_id"] == order_id])
            case "POST", ["v1", "payments", "create", "recurring"]:
                return self._create_payment(body)
            case "GET", ["v1", "payments", payment_id] if payment_id in self.payments:
                return _json(self.payments[payment_id])
            case "POST", ["v1", "payments", payment_id, "refund"] if payment_id in self.payments:
                return self._create_refund(self.payments[payment_id], body)
            case "GET", ["v1", "payments", payment_id, "refunds"] if payment_id in self.payments:
                refunds = [r for r in self.refunds.values() if r["payment_id"] == payment_id]
                skip, count = int(args.get("skip", 0)), int(args.get("count", 10))
                return _collection(refunds[skip : skip + count])
            case _, ["v1", ("orders" | "payments"), _, *_]:
                return _error(400, "The id provided does not exist")
        return _error(404, "The requested URL was not found on the server.")

    def _id(self, prefix: str) -> str:
        return f"{prefix}_Fake{next(self._ids):010d}"

    def _create_order(self, body: dict[str, Any]) -> Response:
        amount, receipt = body.get("amount"), body.get("receipt")
        if not isinstance(amount, int) or amount < 100:
            return _error(400, "The amount must be at least INR 1.00", field="amount")
        if receipt is not None and len(receipt) > 40:
            return _error(
                400, "The receipt may not be greater than 40 characters.", field="receipt"
            )
        order = {
            "id": self._id("order"),
            "entity": "order",
            "amount": amount,
            "amount_paid": 0,
            "amount_due": amount,
            "currency": body["currency"],
            "receipt": receipt,
            "offer_id": None,
            "status": "created",
            "attempts": 0,
            "notes": body.get("notes") or [],
            "created_at": next(self._clock),
        }
        self.orders[order["id"]] = order
        return _json(order)

    def _create_payment(self, body: dict[str, Any]) -> Response:
        for name in ("email", "order_id", "customer_id", "token", "amount", "currency"):
            if not body.get(name):
                return _error(400, f"The {name} field is required.", field=name)
        if self.require_contact and not body.get("contact"):
            return _error(400, "The contact field is required.", field="contact")
        if body.get("recurring") not in ("1", 1, True):
            return _error(400, "The recurring field is invalid.", field="recurring")
        order = self.orders.get(body["order_id"])
        if order is None:
            return _error(400, "The id provided does not exist", field="order_id")
        if order["status"] == "paid":
            return _error(400, "Order has been already paid.", field="order_id")
        if (body["amount"], body["currency"]) != (order["amount"], order["currency"]):
            return _error(400, "The amount must match the order's amount.", field="amount")
        state, reason = self.tokens.get(body["token"], ("captured", None))
        payment = {
            "id": self._id("pay"),
            "entity": "payment",
            "amount": order["amount"],
            "currency": order["currency"],
            "status": state,
            "order_id": order["id"],
            "invoice_id": None,
            "international": False,
            "method": "card",
            "amount_refunded": 0,
            "refund_status": None,
            "captured": state == "captured",
            "description": body.get("description"),
            "email": body["email"],
            "contact": body.get("contact"),
            "customer_id": body["customer_id"],
            "token_id": body["token"],
            "notes": body.get("notes") or [],
            "fee": None,
            "tax": None,
            "error_code": "BAD_REQUEST_ERROR" if reason else None,
            "error_description": _DESCRIPTIONS.get(reason or "") if reason else None,
            "error_source": "customer" if reason else None,
            "error_step": "payment_authorization" if reason else None,
            "error_reason": reason,
            "created_at": next(self._clock),
        }
        self.payments[payment["id"]] = payment
        order["attempts"] += 1
        order["status"] = "paid" if state == "captured" else "attempted"
        if state == "captured":
            order["amount_paid"], order["amount_due"] = order["amount"], 0
        if reason:
            return _error(
                400,
                payment["error_description"],
                reason=reason,
                metadata={"payment_id": payment["id"], "order_id": order["id"]},
            )
        return _json(
            {
                "razorpay_payment_id": payment["id"],
                "razorpay_order_id": order["id"],
                "razorpay_signature": "0" * 64,
            }
        )

    def _create_refund(self, payment: dict[str, Any], body: dict[str, Any]) -> Response:
        amount = body.get("amount", payment["amount"] - payment["amount_refunded"])
        if payment["status"] not in ("captured", "refunded"):
            return _error(400, "The payment has not been captured.", field="payment_id")
        if not isinstance(amount, int) or amount <= 0:
            return _error(400, "The amount must be positive.", field="amount")
        refunded = sum(
            r["amount"] for r in self.refunds.values() if r["payment_id"] == payment["id"]
        )
        if amount > payment["amount"] - refunded:
            return _error(
                400, "The refund amount provided is greater than amount captured", field="amount"
            )
        return _json(self._refund(payment, amount, body.get("receipt"), body.get("notes") or []))

    def _refund(
        self, payment: dict[str, Any], amount: int, receipt: str | None, notes: Any
    ) -> dict[str, Any]:
        refund = {
            "id": self._id("rfnd"),
            "entity": "refund",
            "amount": amount,
            "currency": payment["currency"],
            "payment_id": payment["id"],
            "notes": notes,
            "receipt": receipt,
            "acquirer_data": {"arn": None},
            "created_at": next(self._clock),
            "batch_id": None,
            "status": "processed",
            "speed_processed": "normal",
            "speed_requested": "normal",
        }
        self.refunds[refund["id"]] = refund
        payment["amount_refunded"] += amount
        full = payment["amount_refunded"] == payment["amount"]
        payment["refund_status"] = "full" if full else "partial"
        if full:
            payment["status"] = "refunded"
        return refund
