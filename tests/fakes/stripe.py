"""A small stateful fake of Stripe's v1 API, served by pytest-httpserver (threaded, so a
retry can arrive while an earlier request is still running).

It speaks what the adapter uses, as Stripe documents it: form-encoded POSTs, JSON
objects and lists, errors as ``{"error": {"type", "code", "decline_code", "message",
"param", "payment_intent"}}`` with 400/401/402/404/409. It keeps Stripe's idempotency: the
first answer to an ``Idempotency-Key`` is saved (a 402 included) and replayed; the same
key with other parameters is an ``idempotency_error``; a key whose first request is still
running gets a 409; requests that fail validation are not saved.

Payment methods decide a confirmation (names after Stripe's test cards): ``DECLINES``
below decline with a card error, ``pm_bank_debit_processing`` stays ``processing``, any
other ``pm_...`` succeeds.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from itertools import count
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

API_KEY = "sk_test_51FakeSecretKeyOnlyForTheseTests"
PROCESSING = "pm_bank_debit_processing"
# payment method -> (code, decline_code, message)
DECLINES = {
    "pm_card_visa_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_visa_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_visa_chargeDeclinedExpiredCard": (
        "expired_card",
        "expired_card",
        "Your card has expired.",
    ),
    "pm_card_visa_chargeDeclinedFraudulent": (
        "card_declined",
        "fraudulent",
        "Your card was declined.",
    ),
    "pm_card_visa_chargeDeclinedLostCard": (
        "card_declined",
        "lost_card",
        "Your card was declined.",
    ),
    "pm_card_chargeDeclinedProcessingError": (
        "processing_error",
        None,
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    "pm_card_authenticationRequired": (
        "authentication_required",
        "authentication_required",
        "Your card was declined. This transaction requires authentication.",
    ),
}
_INTENT_PATH = re.compile(r"/v1/payment_intents/([A-Za-z0-9_]+)")


@dataclass(frozen=True)
class Seen:
    """A request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    query: dict[str, str]


@dataclass(frozen=True)
class _Saved:
    path: str
    form: dict[str, str]
    status: int
    body: dict[str, Any]


class FakeStripe:
    """The fake's state (``intents``, ``refunds``, ``requests``) and its knobs:
    ``fail_next`` answers the next request with a canned status before it is processed
    (nothing recorded), ``work_delay`` keeps a POST running before it records anything,
    ``answer_delay`` holds a POST's answer after it is recorded (a lost answer)."""

    def __init__(self, server: HTTPServer, api_key: str = API_KEY) -> None:
        server.clear()  # a server may serve one fake after another
        self.server = server
        self.api_key = api_key
        self.intents: dict[str, dict[str, Any]] = {}  # in creation order
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests: list[Seen] = []
        self.work_delay = 0.0
        self.answer_delay = 0.0
        self._faults: list[Response] = []
        self._saved: dict[str, _Saved] = {}
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._ids = count(1)
        server.expect_request(re.compile(r"^/v1/")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def fail_next(
        self, status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._faults.append(Response(raw, status, headers, content_type="application/json"))

    def posts(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    def _handle(self, request: Request) -> Response:
        form = request.form.to_dict()
        self.requests.append(
            Seen(request.method, request.path, dict(request.headers), form, request.args.to_dict())
        )
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            return fault
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid_request_error", "Invalid API Key provided: sk_test_****")
        if request.method == "GET":
            return _json(*self._get(request.path, request.args.to_dict()))
        return self._post(request.path, form, request.headers.get("Idempotency-Key"))

    def _post(self, path: str, form: dict[str, str], key: str | None) -> Response:
        with self._lock:
            saved = self._saved.get(key) if key else None
            if saved is not None:
                if (saved.path, saved.form) != (path, form):
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                return _json(saved.status, saved.body)
            if key in self._running:
                return _error(
                    409,
                    "idempotency_error",
                    "There is currently another in-progress request using this "
                    "Idempotent Key. Please try again later.",
                )
            if key:
                self._running.add(key)
        try:
            time.sleep(self.work_delay)
            status, body, executed = self._execute(path, form)
            with self._lock:
                if key and executed:
                    self._saved[key] = _Saved(path, form, status, body)
        finally:
            with self._lock:
                self._running.discard(key or "")
        time.sleep(self.answer_delay)
        return _json(status, body)

    def _execute(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any], bool]:
        """(status, body, whether execution began, so that the answer is saved)."""
        if path == "/v1/payment_intents":
            return self._create_intent(form)
        if path == "/v1/refunds":
            return self._create_refund(form)
        return (
            404,
            _error_body("invalid_request_error", f"Unrecognized request URL ({path})"),
            False,
        )

    def _create_intent(self, form: dict[str, str]) -> tuple[int, dict[str, Any], bool]:
        amount = form.get("amount", "")
        if not amount.isdigit() or int(amount) < 1:
            body = _error_body("invalid_request_error", "Invalid amount.", "amount_too_small")
            return 400, {"error": {**body["error"], "param": "amount"}}, False
        if not re.fullmatch("[a-z]{3}", form.get("currency", "")):
            return 400, _error_body("invalid_request_error", "Invalid currency."), False
        redirects = form.get("automatic_payment_methods[allow_redirects]")
        if form.get("confirm") == "true" and redirects != "never" and "return_url" not in form:
            return (
                400,
                _error_body("invalid_request_error", "A `return_url` must be specified."),
                False,
            )
        method = form.get("payment_method", "")
        if not method.startswith("pm_") or not form.get("customer", "").startswith("cus_"):
            body = _error_body(
                "invalid_request_error", "No such PaymentMethod.", "resource_missing"
            )
            return 400, body, False
        intent: dict[str, Any] = {
            "id": f"pi_3Fake{next(self._ids):08d}",
            "object": "payment_intent",
            "amount": int(amount),
            "amount_received": 0,
            "currency": form["currency"],
            "customer": form["customer"],
            "payment_method": method,
            "description": form.get("description"),
            "metadata": _metadata(form),
            "status": "succeeded",
            "last_payment_error": None,
            "cancellation_reason": None,
            "livemode": False,
        }
        with self._lock:
            self.intents[intent["id"]] = intent
        if method == PROCESSING:
            intent["status"] = "processing"
            return 200, intent, True
        if method in DECLINES:
            code, decline, message = DECLINES[method]
            error = {"type": "card_error", "code": code, "message": message}
            if decline is not None:
                error["decline_code"] = decline
            intent.update(status="requires_payment_method", last_payment_error=error)
            return 402, {"error": {**error, "payment_intent": intent}}, True
        intent["amount_received"] = intent["amount"]
        return 200, intent, True

    def _create_refund(self, form: dict[str, str]) -> tuple[int, dict[str, Any], bool]:
        intent = self.intents.get(form.get("payment_intent", ""))
        if intent is None:
            body = _error_body(
                "invalid_request_error", "No such payment_intent.", "resource_missing"
            )
            return 400, body, False
        refunded = sum(
            r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent["id"]
        )
        left = intent["amount_received"] - refunded
        amount = int(form.get("amount") or left)
        if left <= 0:
            message = f"Charge for {intent['id']} has already been refunded."
            return (
                400,
                _error_body("invalid_request_error", message, "charge_already_refunded"),
                False,
            )
        if amount > left:
            # As Stripe answers it: param "amount", no code.
            message = (
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            )
            body = _error_body("invalid_request_error", message)
            return 400, {"error": {**body["error"], "param": "amount"}}, False
        refund = {
            "id": f"re_3Fake{next(self._ids):08d}",
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "metadata": _metadata(form),
        }
        with self._lock:
            self.refunds[refund["id"]] = refund
        return 200, refund, True

    def _get(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            intents = list(self.intents.values())
            refunds = list(self.refunds.values())
        if path == "/v1/payment_intents":
            customer = query.get("customer")
            return 200, _page(
                [i for i in intents if customer in (None, i["customer"])], path, query
            )
        if path == "/v1/refunds":
            intent = query.get("payment_intent")
            if intent is not None and intent not in self.intents:
                body = _error_body(
                    "invalid_request_error", "No such payment_intent.", "resource_missing"
                )
                return 400, body
            return 200, _page(
                [r for r in refunds if intent in (None, r["payment_intent"])], path, query
            )
        match = _INTENT_PATH.fullmatch(path)
        if match and match[1] in self.intents:
            return 200, self.intents[match[1]]
        message = f"No such payment_intent: '{match[1] if match else path}'"
        return 404, _error_body("invalid_request_error", message, "resource_missing")


def _page(objects: list[dict[str, Any]], path: str, query: dict[str, str]) -> dict[str, Any]:
    """A list page, newest first, from ``starting_after``."""
    newest_first = objects[::-1]
    after = query.get("starting_after")
    if after is not None:
        ids = [o["id"] for o in newest_first]
        newest_first = newest_first[ids.index(after) + 1 :]
    limit = int(query.get("limit", "10"))
    return {
        "object": "list",
        "url": path,
        "data": newest_first[:limit],
        "has_more": len(newest_first) > limit,
    }


def _metadata(form: dict[str, str]) -> dict[str, str]:
    return {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")}


def _error_body(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    error = {"type": kind, "message": message}
    if code is not None:
        error["code"] = code
    return {"error": error}


def _error(status: int, kind: str, message: str) -> Response:
    return _json(status, _error_body(kind, message))


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body), status, {"Request-Id": "req_fake"}, content_type="application/json"
    )
