"""A small stateful Authorize.net that speaks the JSON API on a pytest-httpserver.

It keeps the transactions it made, answers as Authorize.net documents (a UTF-8 byte order
mark before the JSON, response codes 1-4 with reason codes, ``E000xx`` message codes,
reason 11 with the original ``transId`` for a repeat within the duplicate window), checks
the credentials and the schema's element order of ``transactionRequest``, and can be told
to fail: ``faults`` is a queue of what the next requests meet.

Payment profiles are registered with a behaviour: ``approve``, ``decline`` (2, reason 2),
``expired`` (3, reason 8), ``review`` (4, reason 252, held), ``retry`` (3, reason 19,
nothing made).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from itertools import count
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

PATH = "/xml/v1/request.api"
LOGIN = "login-4Kx9"
TRANSACTION_KEY = "tk-Secret-77Q"  # the fake's secret: tests check it never leaks
BOM = b"\xef\xbb\xbf"
LAST4 = "1111"

# transactionRequestType's sequence in AnetApiSchema.xsd (the part this adapter uses).
_TRANSACTION_ORDER = [
    "transactionType",
    "amount",
    "currencyCode",
    "payment",
    "profile",
    "solution",
    "callId",
    "authCode",
    "refTransId",
    "splitTenderId",
    "order",
    "lineItems",
    "tax",
    "duty",
    "shipping",
    "taxExempt",
    "poNumber",
    "customer",
    "billTo",
    "shipTo",
    "customerIP",
    "cardholderAuthentication",
    "retail",
    "employeeId",
    "transactionSettings",
    "userFields",
]
_OUTCOMES = {
    # behaviour: (responseCode, reason, text, status or None when nothing is made)
    "approve": (1, 1, "This transaction has been approved.", "capturedPendingSettlement"),
    "decline": (2, 2, "This transaction has been declined.", "declined"),
    "expired": (3, 8, "The credit card has expired.", "declined"),
    "review": (4, 252, "Your order has been received. Thank you.", "FDSPendingReview"),
    "retry": (3, 19, "An error occurred during processing. Please try again.", None),
}
_SETTLED = {"settledSuccessfully", "refundSettledSuccessfully"}


@dataclass
class FakeTransaction:
    trans_id: str
    type: str
    status: str
    amount: Decimal
    invoice_number: str
    customer_profile_id: str | None
    payment_profile_id: str | None
    ref_trans_id: str | None
    response_code: int
    reason: int
    text: str


def _ok(**fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "messages": {"resultCode": "Ok", "message": [{"code": "I00001", "text": "Successful."}]},
    }


def _error(code: str, text: str, **fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "messages": {"resultCode": "Error", "message": [{"code": code, "text": text}]},
    }


class FakeAuthorizeNet:
    def __init__(self, delay: float = 0.6) -> None:
        self.transactions: list[FakeTransaction] = []
        self.requests: list[dict[str, Any]] = []
        self.faults: list[
            str | None
        ] = []  # None, lose_answer, http_500, http_429, malformed, wrong_shape
        self.profiles: dict[tuple[str, str], str] = {}
        self.window_open = True  # False: every earlier transaction is outside the window
        self.delay = delay  # how long a lost answer keeps the client waiting
        self._ids = count(60000000001)
        self._answered = threading.Event()
        self._answered.set()

    def install(self, server: HTTPServer) -> str:
        server.expect_request(PATH, method="POST").respond_with_handler(self.handle)
        return server.url_for(PATH)

    def add_profile(self, customer: str, payment: str, behaviour: str = "approve") -> None:
        self.profiles[(customer, payment)] = behaviour

    def charges(self) -> list[FakeTransaction]:
        """Transactions that took (or hold) the customer's money."""
        return [
            t
            for t in self.transactions
            if t.type == "authCaptureTransaction" and t.response_code in (1, 4)
        ]

    def of_type(self, type_: str) -> list[FakeTransaction]:
        return [t for t in self.transactions if t.type == type_]

    def wait_for_lost_answer(self) -> None:
        """Returns once a lost answer has been sent (this server answers one at a time)."""
        self._answered.wait(timeout=10)

    def settle(self) -> None:
        """The nightly batch: captured charges and refunds settle."""
        for t in self.transactions:
            if t.status == "capturedPendingSettlement":
                t.status = "settledSuccessfully"
            elif t.status == "refundPendingSettlement":
                t.status = "refundSettledSuccessfully"

    def find(self, trans_id: str) -> FakeTransaction | None:
        return next((t for t in self.transactions if t.trans_id == trans_id), None)

    # The server

    def handle(self, request: Request) -> Response:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "http_500":
            return Response("Internal Server Error", status=500)
        if fault == "http_429":
            return Response("slow down", status=429, headers={"Retry-After": "7"})
        if fault == "malformed":
            return Response(BOM + b"<html>oops</html>", content_type="text/html")
        if fault == "wrong_shape":
            return self._json(["not", "an", "object"])
        body = json.loads(request.get_data())
        self.requests.append(body)
        ((method, fields),) = body.items()
        auth = fields.get("merchantAuthentication", {})
        if auth != {"name": LOGIN, "transactionKey": TRANSACTION_KEY}:
            answer = _error(
                "E00007", "User authentication failed due to invalid authentication values."
            )
        else:
            answer = getattr(self, f"_{method}")(fields)
        if fault == "lose_answer":
            self._answered.clear()
            time.sleep(self.delay)  # recorded, but the client has given up waiting
            self._answered.set()
        return self._json(answer)

    def _json(self, answer: Any) -> Response:
        return Response(
            BOM + json.dumps(answer).encode(), content_type="application/json; charset=utf-8"
        )

    def _createTransactionRequest(self, fields: dict[str, Any]) -> dict[str, Any]:
        if list(fields) != ["merchantAuthentication", "refId", "transactionRequest"][: len(fields)]:
            return _error("E00003", "The element has invalid child element order.")
        request = fields["transactionRequest"]
        order = [name for name in _TRANSACTION_ORDER if name in request]
        if list(request) != order or len(fields["refId"]) > 20:
            return _error("E00003", "The element 'transactionRequest' has invalid child element.")
        kind = request["transactionType"]
        if kind == "voidTransaction":
            return self._void(request)
        amount = Decimal(request["amount"])
        invoice = request.get("order", {}).get("invoiceNumber", "")
        if len(invoice) > 20:
            return _error("E00003", "invoiceNumber is too long.")
        settings = {
            s["settingName"]: s["settingValue"]
            for s in request.get("transactionSettings", {}).get("setting", [])
        }
        profile = request.get("profile", {})
        customer = profile.get("customerProfileId")
        payment = profile.get("paymentProfile", {}).get("paymentProfileId")
        original = self._duplicate(kind, amount, invoice, customer, payment)
        if original is not None and self.window_open and "duplicateWindow" in settings:
            return self._transaction_answer(
                3, 11, "A duplicate transaction has been submitted.", original.trans_id
            )
        if kind == "authCaptureTransaction":
            behaviour = self.profiles.get((customer, payment))
            if behaviour is None:
                return _error("E00040", "The record cannot be found.")
            code, reason, text, status = _OUTCOMES[behaviour]
            ref = None
        else:
            code, reason, text, status, ref = self._refund(request, amount)
        if status is None:
            return self._transaction_answer(code, reason, text, "0")
        made = FakeTransaction(
            str(next(self._ids)), kind, status, amount, invoice, customer, payment, ref,
            code, reason, text,
        )  # fmt: skip
        self.transactions.append(made)
        return self._transaction_answer(code, reason, text, made.trans_id)

    def _refund(
        self, request: dict[str, Any], amount: Decimal
    ) -> tuple[int, int, str, str | None, str | None]:
        charge = self.find(request.get("refTransId", ""))
        card = request.get("payment", {}).get("creditCard", {})
        profile = request.get("profile", {})
        on_profile = charge is not None and (
            profile.get("customerProfileId"),
            profile.get("paymentProfile", {}).get("paymentProfileId"),
        ) == (charge.customer_profile_id, charge.payment_profile_id)
        if charge is None or not (card.get("cardNumber") == LAST4 or on_profile):
            return 3, 16, "The transaction cannot be found.", None, None
        if charge.status != "settledSuccessfully":
            meets = "The referenced transaction does not meet the criteria for issuing a credit."
            return 3, 54, meets, None, None
        refunded = sum(
            (
                t.amount
                for t in self.of_type("refundTransaction")
                if t.ref_trans_id == charge.trans_id
            ),
            Decimal(0),
        )
        if refunded + amount > charge.amount:
            exceed = "The sum of credits against the referenced transaction would exceed original debit amount."  # noqa: E501
            return 3, 55, exceed, None, None
        return (
            1,
            1,
            "This transaction has been approved.",
            "refundPendingSettlement",
            charge.trans_id,
        )

    def _void(self, request: dict[str, Any]) -> dict[str, Any]:
        charge = self.find(request.get("refTransId", ""))
        if charge is None or charge.status != "capturedPendingSettlement":
            return self._transaction_answer(3, 16, "The transaction cannot be found.", "0")
        charge.status = "voided"
        return self._transaction_answer(
            1, 1, "This transaction has been approved.", charge.trans_id
        )

    def _duplicate(
        self, kind: str, amount: Decimal, invoice: str, customer: str | None, payment: str | None
    ) -> FakeTransaction | None:
        for t in self.transactions:
            same = (t.type, t.amount, t.invoice_number, t.customer_profile_id, t.payment_profile_id)
            if same == (kind, amount, invoice, customer, payment):
                return t
        return None

    def _transaction_answer(
        self, code: int, reason: int, text: str, trans_id: str
    ) -> dict[str, Any]:
        transaction: dict[str, Any] = {
            "responseCode": str(code),
            "authCode": "ABC123" if code == 1 else "",
            "transId": trans_id,
            "refTransID": "",
            "testRequest": "0",
            "accountNumber": f"XXXX{LAST4}",
            "accountType": "Visa",
        }
        if code in (1, 4):
            transaction["messages"] = [{"code": str(reason), "description": text}]
            return _ok(transactionResponse=transaction)
        transaction["errors"] = [{"errorCode": str(reason), "errorText": text}]
        return _error(
            "E00027", "The transaction was unsuccessful.", transactionResponse=transaction
        )

    def _getTransactionDetailsRequest(self, fields: dict[str, Any]) -> dict[str, Any]:
        t = self.find(fields["transId"])
        if t is None:
            return _error("E00040", "The record cannot be found.")
        details: dict[str, Any] = {
            "transId": t.trans_id,
            "submitTimeUTC": "2025-02-28T09:00:00Z",
            "transactionType": t.type,
            "transactionStatus": t.status,
            "responseCode": t.response_code,
            "responseReasonCode": t.reason,
            "responseReasonDescription": t.text,
            "order": {"invoiceNumber": t.invoice_number},
            "authAmount": float(t.amount),
            "settleAmount": float(t.amount),
            "payment": {"creditCard": {"cardNumber": f"XXXX{LAST4}", "expirationDate": "XXXX"}},
        }
        if t.ref_trans_id:
            details["refTransId"] = t.ref_trans_id
        if t.customer_profile_id:
            details["profile"] = {
                "customerProfileId": t.customer_profile_id,
                "customerPaymentProfileId": t.payment_profile_id,
            }
        return _ok(transaction=details)

    def _getUnsettledTransactionListRequest(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self._list([t for t in self.transactions if t.status not in _SETTLED], fields)

    def _getTransactionListForCustomerRequest(self, fields: dict[str, Any]) -> dict[str, Any]:
        # Settled transactions only: the adapter must not count on this list for fresh ones.
        customer = fields["customerProfileId"]
        if customer not in {c for c, _ in self.profiles}:
            return _error("E00040", "The record cannot be found.")
        mine = [
            t
            for t in self.transactions
            if t.status in _SETTLED
            and t.customer_profile_id == customer
            and fields.get("customerPaymentProfileId") in (None, t.payment_profile_id)
        ]
        return self._list(mine, fields)

    def _list(self, transactions: list[FakeTransaction], fields: dict[str, Any]) -> dict[str, Any]:
        paging = fields.get("paging", {"limit": 1000, "offset": 1})
        limit, offset = int(paging["limit"]), int(paging["offset"])
        newest_first = list(reversed(transactions))
        page = newest_first[(offset - 1) * limit : offset * limit]
        summaries = [
            {
                "transId": t.trans_id,
                "submitTimeUTC": "2025-02-28T09:00:00Z",
                "transactionStatus": t.status,
                "invoiceNumber": t.invoice_number,
                "accountType": "Visa",
                "accountNumber": f"XXXX{LAST4}",
                "settleAmount": float(t.amount),
            }
            for t in page
        ]
        if not summaries:
            return _ok(totalNumInResultSet=0)
        return _ok(transactions=summaries, totalNumInResultSet=len(transactions))
