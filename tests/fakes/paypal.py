"""A small stateful PayPal (REST v2) for tests, served over HTTP by pytest-httpserver.

It answers as PayPal documents: OAuth2 client-credentials tokens (which the test can
expire), Orders v2 create/capture/show, Payments v2 capture show and refund, and the
webhook signature postback. It honours ``PayPal-Request-Id`` (the same id on the same
path answers the recorded response and does nothing again) and the account's unique
``invoice_id`` check, and injects faults per operation: ``429``, ``500``, ``401``,
``malformed`` (a body that is not JSON), ``shapeless`` (JSON without the documented
fields), ``timeout`` (no answer, nothing done) and
``timeout_after`` (done and recorded, then no answer in time).

Vault ids decide how a capture goes: ``vault-declined`` (422 INSTRUMENT_DECLINED),
``vault-payer-action`` (422 PAYER_ACTION_REQUIRED), ``vault-insufficient`` (a DECLINED
capture, processor response 5120), ``vault-pending`` (a PENDING capture); others succeed.

Webhook signatures: PayPal signs ``<transmission id>|<time>|<webhook id>|<crc32 of the
body>`` with its RSA key; this fake signs the same string with HMAC-SHA256 and a key of
its own (``sign``), and checks it on ``POST /v1/notifications/verify-webhook-signature``
against the ``webhook_event`` text exactly as the client sent it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import uuid
import zlib
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateways.paypal import PayPalConfig

CLIENT_ID = "AcLientId123"
CLIENT_SECRET = "EsEcReT-do-not-leak-9f8e7d"
WEBHOOK_ID = "8PT597110X687430LKGECATA"
SIGNING_KEY = b"fake-paypal-signing-key"
SLOW = 1.0  # seconds a timeout fault waits: longer than the tests' client timeout
FAST_TIMEOUT = 0.4  # the client timeout of tests that inject timeouts

Handler = Callable[["FakePayPal", Request, re.Match[str]], Response]


@dataclass(frozen=True)
class Call:
    """One request the fake received, for assertions on its shape."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, the form as a dict, or None


class FakePayPal:
    def __init__(self, server: HTTPServer, token_lifetime: int = 32400) -> None:
        server.clear()
        self.server = server
        self.token_lifetime = token_lifetime
        self.calls: list[Call] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.captures: dict[str, dict[str, Any]] = {}
        self.tokens_issued = 0
        self._valid_tokens: set[str] = set()
        self._replies: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._faults: dict[str, deque[str]] = defaultdict(deque)
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def config(self, **fields: Any) -> PayPalConfig:
        fields = {"client_secret": CLIENT_SECRET, "webhook_id": WEBHOOK_ID} | fields
        return PayPalConfig(CLIENT_ID, api_base=self.url, **fields)

    def inject(self, operation: str, *faults: str) -> None:
        """Faults for the next calls of ``operation``: token, create_order, capture,
        show_order, show_capture, refund or verify."""
        self._faults[operation].extend(faults)

    def expire_tokens(self) -> None:
        with self._lock:
            self._valid_tokens.clear()

    def forget_request_ids(self, path: str = ".*") -> None:
        """What PayPal does after 6 hours, for the request ids sent to paths like ``path``."""
        with self._lock:
            for key in [key for key in self._replies if re.fullmatch(path, key[0])]:
                del self._replies[key]

    def completed(self) -> list[dict[str, Any]]:
        """The captures that took money, in order."""
        return [c for c in self.captures.values() if c["status"] in _TOOK_MONEY]

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def sign(
        self,
        body: bytes,
        sent_at: str,
        webhook_id: str = WEBHOOK_ID,
        key: bytes = SIGNING_KEY,
    ) -> dict[str, str]:
        """The ``paypal-*`` headers of a delivery of ``body`` (lower-case names)."""
        transmission_id = str(uuid.uuid4())
        return {
            "paypal-auth-algo": "SHA256withRSA",
            "paypal-cert-url": f"{self.url}/v1/notifications/certs/CERT-fake",
            "paypal-transmission-id": transmission_id,
            "paypal-transmission-time": sent_at,
            "paypal-transmission-sig": _signature(key, transmission_id, sent_at, webhook_id, body),
        }

    # The HTTP side.

    def _handle(self, request: Request) -> Response:
        body: Any = None
        if request.mimetype == "application/json":
            body = request.get_json(silent=True)
        elif request.form:
            body = dict(request.form)
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            self.calls.append(Call(request.method, request.path, headers, body))
        for (method, pattern), (operation, handler) in _ROUTES.items():
            match = re.fullmatch(pattern, request.path)
            if method == request.method and match:
                return self._run(operation, handler, request, match)
        return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")

    def _run(
        self, operation: str, handler: Handler, request: Request, match: re.Match[str]
    ) -> Response:
        with self._lock:
            fault = self._faults[operation].popleft() if self._faults[operation] else None
        if fault == "timeout":
            time.sleep(SLOW)
            return _error(500, "INTERNAL_SERVER_ERROR")
        if fault in ("429", "500"):
            return Response(
                json.dumps({"name": "RATE_LIMIT_REACHED" if fault == "429" else "INTERNAL"}),
                int(fault),
                headers={"Retry-After": "7"} if fault == "429" else {},
                content_type="application/json",
            )
        if fault == "401":
            return _invalid_token()
        if operation != "token" and not self._authorized(request):
            return _invalid_token()
        with self._lock:
            response = handler(self, request, match)
        if fault == "malformed":
            return Response("<html>upstream hiccup</html>", 200, content_type="text/html")
        if fault == "shapeless":
            return _json(response.status_code, {"links": []})
        if fault == "timeout_after":
            time.sleep(SLOW)  # the work is recorded; only the answer is late
        return response

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            return scheme == "Bearer" and token in self._valid_tokens

    def _idempotent(
        self, request: Request, work: Callable[[], tuple[int, dict[str, Any]]]
    ) -> Response:
        """Answers a request id already seen with its recorded response, unchanged."""
        request_id = request.headers.get("PayPal-Request-Id")
        key = (request.path, request_id or "")
        if request_id and key in self._replies:
            status, payload = self._replies[key]
        else:
            status, payload = work()
            if request_id:
                self._replies[key] = (status, payload)
        return _json(status, payload)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):015d}"

    # Endpoints (called with the lock held).

    def _token(self, request: Request, match: re.Match[str]) -> Response:
        auth = request.authorization
        valid = auth is not None and (auth.username, auth.password) == (CLIENT_ID, CLIENT_SECRET)
        if not valid or request.form.get("grant_type") != "client_credentials":
            return _json(
                401,
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
            )
        self.tokens_issued += 1
        token = f"A21AA-fake-access-token-{self.tokens_issued}"
        self._valid_tokens.add(token)
        return _json(
            200,
            {
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": self.token_lifetime,
                "nonce": "2026-01-01T00:00:00Znonce",
            },
        )

    def _create_order(self, request: Request, match: re.Match[str]) -> Response:
        def work() -> tuple[int, dict[str, Any]]:
            body = request.get_json(silent=True) or {}
            units = body.get("purchase_units") or []
            if body.get("intent") != "CAPTURE" or len(units) != 1 or "payment_source" in body:
                return 400, _error_body("INVALID_REQUEST", "MALFORMED_REQUEST_JSON")
            unit = units[0]
            if Decimal(unit["amount"]["value"]) <= 0:
                return 422, _error_body("UNPROCESSABLE_ENTITY", "CANNOT_BE_ZERO_OR_NEGATIVE")
            invoice = unit.get("invoice_id")
            if invoice and any(c["invoice_id"] == invoice for c in self.completed()):
                return 422, _error_body("UNPROCESSABLE_ENTITY", "DUPLICATE_INVOICE_ID")
            order_id = self._next_id("5O")
            self.orders[order_id] = {
                "id": order_id,
                "intent": "CAPTURE",
                "status": "CREATED",
                "purchase_units": [{"reference_id": "default", **unit, "payments": {}}],
                "links": [_link(f"/v2/checkout/orders/{order_id}", "self")],
            }
            return 201, _created_view(self.orders[order_id])

        return self._idempotent(request, work)

    def _capture(self, request: Request, match: re.Match[str]) -> Response:
        def work() -> tuple[int, dict[str, Any]]:
            order = self.orders.get(match["order"])
            if order is None:
                return 404, _error_body("RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
            unit = order["purchase_units"][0]
            if unit["payments"].get("captures"):
                return 422, _error_body("UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED")
            source = (request.get_json(silent=True) or {}).get("payment_source") or {}
            vault_id = (source.get("paypal") or source.get("card") or {}).get("vault_id")
            if not vault_id:
                return 422, _error_body("UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED")
            if vault_id == "vault-declined":
                return 422, _error_body("UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED")
            if vault_id == "vault-payer-action":
                return 422, _error_body("UNPROCESSABLE_ENTITY", "PAYER_ACTION_REQUIRED")
            if vault_id == "vault-in-progress":  # the same request id, still being processed
                return 422, _error_body("UNPROCESSABLE_ENTITY", "PREVIOUS_REQUEST_IN_PROGRESS")
            status = {"vault-insufficient": "DECLINED", "vault-pending": "PENDING"}.get(
                vault_id, "COMPLETED"
            )
            capture_id = self._next_id("3C")
            capture: dict[str, Any] = {
                "id": capture_id,
                "status": status,
                "amount": unit["amount"],
                "final_capture": True,
                "custom_id": unit.get("custom_id"),
                "invoice_id": unit.get("invoice_id"),
                "links": [
                    _link(f"/v2/payments/captures/{capture_id}", "self"),
                    _link(f"/v2/payments/captures/{capture_id}/refund", "refund"),
                    _link(f"/v2/checkout/orders/{order['id']}", "up"),
                ],
            }
            if status == "DECLINED":
                capture["processor_response"] = {"response_code": "5120"}
            self.captures[capture_id] = capture
            unit["payments"]["captures"] = [capture]
            order["status"] = "COMPLETED"
            order["payment_source"] = source
            return 201, order

        return self._idempotent(request, work)

    def _show_order(self, request: Request, match: re.Match[str]) -> Response:
        order = self.orders.get(match["order"])
        if order is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        return _json(200, order)

    def _show_capture(self, request: Request, match: re.Match[str]) -> Response:
        capture = self.captures.get(match["capture"])
        if capture is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
        return _json(200, capture)

    def _refund(self, request: Request, match: re.Match[str]) -> Response:
        def work() -> tuple[int, dict[str, Any]]:
            capture = self.captures.get(match["capture"])
            if capture is None or capture["status"] not in _TOOK_MONEY:
                return 404, _error_body("RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID")
            if capture["status"] == "REFUNDED":
                return 422, _error_body("UNPROCESSABLE_ENTITY", "CAPTURE_FULLY_REFUNDED")
            body = request.get_json(silent=True) or {}
            amount = body.get("amount") or capture["amount"]
            if amount["currency_code"] != capture["amount"]["currency_code"]:
                return 422, _error_body("UNPROCESSABLE_ENTITY", "REFUND_CAPTURE_CURRENCY_MISMATCH")
            order = self.orders[_order_of(capture)]
            refunds = order["purchase_units"][0]["payments"].setdefault("refunds", [])
            done = sum(Decimal(r["amount"]["value"]) for r in refunds)
            if done + Decimal(amount["value"]) > Decimal(capture["amount"]["value"]):
                return 422, _error_body("UNPROCESSABLE_ENTITY", "REFUND_AMOUNT_EXCEEDED")
            refund_id = self._next_id("1R")
            refund = {
                "id": refund_id,
                "status": "COMPLETED",
                "amount": amount,
                "custom_id": body.get("custom_id"),
                "invoice_id": body.get("invoice_id"),
                "links": [
                    _link(f"/v2/payments/refunds/{refund_id}", "self"),
                    _link(f"/v2/payments/captures/{capture['id']}", "up"),
                ],
            }
            refunds.append(refund)
            whole = done + Decimal(amount["value"]) == Decimal(capture["amount"]["value"])
            capture["status"] = "REFUNDED" if whole else "PARTIALLY_REFUNDED"
            return 201, refund

        return self._idempotent(request, work)

    def _verify(self, request: Request, match: re.Match[str]) -> Response:
        text = request.get_data(as_text=True)
        fields = json.loads(text)
        # The event's text exactly as the client sent it, as PayPal's check sees it.
        start = text.index('"webhook_event"') + len('"webhook_event"')
        start = text.index(":", start) + 1
        while text[start].isspace():
            start += 1
        _, end = json.JSONDecoder().raw_decode(text, start)
        expected = _signature(
            SIGNING_KEY,
            fields["transmission_id"],
            fields["transmission_time"],
            fields["webhook_id"],
            text[start:end].encode(),
        )
        valid = hmac.compare_digest(expected, fields["transmission_sig"])
        ok = valid and fields["webhook_id"] == WEBHOOK_ID and fields["auth_algo"]
        return _json(200, {"verification_status": "SUCCESS" if ok else "FAILURE"})


_TOOK_MONEY = frozenset({"COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"})

_ROUTES: dict[tuple[str, str], tuple[str, Handler]] = {
    ("POST", "/v1/oauth2/token"): ("token", FakePayPal._token),
    ("POST", "/v2/checkout/orders"): ("create_order", FakePayPal._create_order),
    ("POST", r"/v2/checkout/orders/(?P<order>\w+)/capture"): ("capture", FakePayPal._capture),
    ("GET", r"/v2/checkout/orders/(?P<order>\w+)"): ("show_order", FakePayPal._show_order),
    ("GET", r"/v2/payments/captures/(?P<capture>\w+)"): ("show_capture", FakePayPal._show_capture),
    ("POST", r"/v2/payments/captures/(?P<capture>\w+)/refund"): ("refund", FakePayPal._refund),
    ("POST", "/v1/notifications/verify-webhook-signature"): ("verify", FakePayPal._verify),
}


def _signature(key: bytes, transmission_id: str, sent_at: str, webhook_id: str, body: bytes) -> str:
    signed = f"{transmission_id}|{sent_at}|{webhook_id}|{zlib.crc32(body)}"
    return base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest()).decode()


def _order_of(capture: dict[str, Any]) -> str:
    up = next(link["href"] for link in capture["links"] if link["rel"] == "up")
    return str(up.rsplit("/", 1)[1])


def _created_view(order: dict[str, Any]) -> dict[str, Any]:
    return {"id": order["id"], "status": order["status"], "links": order["links"]}


def _link(path: str, rel: str) -> dict[str, str]:
    return {"href": f"https://api.sandbox.paypal.com{path}", "rel": rel, "method": "GET"}


def _error_body(name: str, issue: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "message": "See details.", "debug_id": "f00d1234"}
    if issue:
        body["details"] = [{"issue": issue, "description": f"{issue} (fake)"}]
    return body


def _error(status: int, name: str, issue: str | None = None) -> Response:
    return _json(status, _error_body(name, issue))


def _invalid_token() -> Response:
    return _json(
        401, {"error": "invalid_token", "error_description": "Access Token not found in cache"}
    )


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status, content_type="application/json")
