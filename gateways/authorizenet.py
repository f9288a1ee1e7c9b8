"""Authorize.net behind the gateway port, over its JSON API (``.../xml/v1/request.api``).

Charges are ``createTransactionRequest`` / ``authCaptureTransaction`` on a saved customer
payment profile: ``ChargeRequest.customer_reference`` is the customer profile id and
``ChargeRequest.token`` the payment profile id.

Authorize.net has no idempotency key. What stands in for one:

- every transaction carries ``order.invoiceNumber`` (and ``refId``) derived from our key:
  ``sl`` + the first 18 hex digits of its SHA-256 (the API allows 20 characters), the
  same for every retry of that key, different for every other key;
- ``transactionSettings.duplicateWindow`` (``AuthorizeNetConfig.duplicate_window``, by
  default 28800 s, the most Authorize.net accepts): within it, a retry of the same
  invoice number and amount is refused as a duplicate (response reason 11) with the
  original ``transId``, which is then looked up with ``getTransactionDetailsRequest``
  and answered as the original outcome, so a retry never charges twice;
- after the window, ``find_charge`` / ``find_refund`` find the transaction by invoice
  number and amount in ``getUnsettledTransactionListRequest`` and, for a charge, the
  customer's ``getTransactionListForCustomerRequest``. The payment processor asks them
  before sending a request again after a crash.

Refunds (``refundTransaction`` with ``refTransId``) need the card's last four digits,
which ``getTransactionDetailsRequest`` gives. A charge not settled yet cannot be refunded:
a refund of its whole amount voids it (``voidTransaction``, no money moves, and the
void's reference is the charge's own ``transId``); a partial one is declined
``refund_before_settlement`` until the charge settles (usually within a day).

Requests keep the element order of Authorize.net's XML schema (AnetApiSchema.xsd), which
the JSON API validates too. Answers start with a UTF-8 byte order mark, which the JSON
decoder (``json.loads`` on bytes) skips.

Limitations: Authorize.net does not tell an insufficient-funds decline apart from other
card declines (both reason 2, ``card_declined``); a refund settled and recorded on another
customer profile than the charge's is not found by ``find_refund``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import partial
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
from gateways.webhooks import ProviderEvent, WebhookRejected
from ledger.errors import InvalidMoney
from ledger.money import Money

PRODUCTION_URL = "https://api.authorize.net/xml/v1/request.api"
SANDBOX_URL = "https://apitest.authorize.net/xml/v1/request.api"
MAX_DUPLICATE_WINDOW = 28800  # seconds (8 hours): the largest value Authorize.net accepts
# What a refund on a card sends for the expiry date, as Authorize.net documents it: the
# date itself is not needed (nor kept by us), the last four digits name the card.
MASKED_EXPIRY = "X" * 4
_PAGE = 1000  # the most transactions a list request returns at once
_MAX_PAGES = 20

# Transaction statuses (transactionStatusEnum) as outcomes of a charge we sent.
_CHARGE_SUCCEEDED = frozenset(
    {
        "capturedPendingSettlement",
        "settledSuccessfully",
        "pendingSettlement",
        "pendingFinalSettlement",
        "updatingSettlement",
        "approvedReview",
        # The charge was taken; what happened to the money later is a refund or a dispute.
        "couldNotVoid",
        "chargeback",
        "chargebackReversal",
        "returnedItem",
    }
)
_CHARGE_PENDING = frozenset(
    {
        "FDSPendingReview",
        "FDSAuthorizedPendingReview",
        "underReview",
        "authorizedPendingCapture",
        "authorizedPendingRelease",
    }
)
_REFUND_SUCCEEDED = frozenset({"refundPendingSettlement", "refundSettledSuccessfully"})
_FAILED = frozenset(
    {"declined", "failedReview", "expired", "generalError", "communicationError", "settlementError"}
)
# A charge in these statuses has not settled: it can be voided, not refunded.
_UNSETTLED_CHARGE = frozenset(
    {
        "capturedPendingSettlement",
        "authorizedPendingCapture",
        "approvedReview",
    }
)

# Response reason codes (transactionResponse errors) that are final, in our words where
# one fits; the others read ``authorizenet_reason_<n>``.
_REASON_CODES = {
    "2": "card_declined",
    "3": "card_declined",  # referral
    "4": "card_declined",  # pick up card
    "5": "invalid_amount",
    "6": "invalid_card_number",
    "37": "invalid_card_number",
    "7": "invalid_expiration_date",
    "8": "expired_card",
    "16": "charge_not_found",
    "17": "card_type_not_accepted",
    "28": "card_type_not_accepted",
    "27": "address_verification_failed",
    "44": "card_code_mismatch",
    "45": "card_code_mismatch",
    "65": "card_code_mismatch",
    "39": "currency_not_supported",
    "54": "refund_not_allowed",
    "55": "amount_too_large",
    "250": "fraud_declined",
    "251": "fraud_declined",
    "254": "fraud_declined",
}
# "An error occurred during processing. Please try again" and processor timeouts.
_RETRY_REASONS = frozenset(
    {"19", "20", "21", "22", "23", "25", "26", "57", "58", "59", "60", "61", "62", "63"}
    | {"120", "121", "122"}
)
# The merchant's credentials or permissions, not the card: the operator must act.
_AUTH_REASONS = frozenset({"13", "103", "123"})
_DUPLICATE = "11"
# API-level message codes (messages.message[].code).
_AUTH_MESSAGES = frozenset({"E00007", "E00008", "E00011", "E00044"})
_RETRY_MESSAGES = frozenset({"E00001", "E00104"})
_NOT_FOUND = "E00040"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AuthorizeNetConfig:
    """Credentials and options of one Authorize.net account.

    ``api_url`` defaults to production; the sandbox is ``SANDBOX_URL``. ``signature_key``
    is only needed to verify webhooks. ``duplicate_window`` (seconds, 0 to 28800) is how
    long Authorize.net refuses a repeat of the same invoice number and amount; the default
    is the maximum, so that a retry of a request whose answer was lost never charges
    again. ``currency`` is the account's currency, for webhook amounts (their payloads
    name none).
    """

    api_login_id: str
    transaction_key: str = field(repr=False)
    api_url: str = PRODUCTION_URL
    signature_key: str | None = field(default=None, repr=False)
    duplicate_window: int = MAX_DUPLICATE_WINDOW
    timeout: float = 30.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        if not 0 <= self.duplicate_window <= MAX_DUPLICATE_WINDOW:
            raise ValueError(
                f"duplicate_window must be 0 to {MAX_DUPLICATE_WINDOW} seconds, "
                f"got {self.duplicate_window}"
            )
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")


def short_id(idempotency_key: str) -> str:
    """The invoice number and refId that stand for our key (20 characters at most)."""
    return "sl" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:18]


def _decimal(money: Money) -> str:
    # "10.00" for 1000 EUR cents, "1000" for 1000 JPY: the currency's own decimals.
    return f"{money.to_decimal():f}"


def _money(value: Any, currency: str) -> Money | None:
    """An amount of an answer (a JSON number, or a string) as Money; None if unreadable."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        # str() of a float is its shortest repr ("1018.88"): parsing it is exact.
        return Money.of(Decimal(str(value)), currency)
    except (InvalidOperation, InvalidMoney):
        return None


def _first(items: Any, *keys: str) -> tuple[str, str]:
    """The first (code, text) of a list of Authorize.net messages or errors."""
    if isinstance(items, list) and items and isinstance(items[0], dict):
        code, text = (str(items[0].get(key, "")) for key in keys)
        return code, text
    return "", ""


def _reason_code(reason: str) -> str:
    return _REASON_CODES.get(reason, f"authorizenet_reason_{reason or 'unknown'}")


def _malformed(what: str) -> RetryableError:
    return RetryableError("malformed_response", f"Authorize.net answered {what}")


class _Answer:
    """One decoded API answer: its result code and first message."""

    def __init__(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        messages = messages if isinstance(messages, dict) else {}
        self.ok = messages.get("resultCode") == "Ok"
        self.code, self.text = _first(messages.get("message"), "code", "text")

    def error(self) -> RetryableError | Declined:
        """What an answer with resultCode Error means, when no transaction says more."""
        if self.code in _AUTH_MESSAGES:
            return RetryableError(
                "gateway_auth_failed",
                f"Authorize.net refused the credentials or permissions ({self.code}): "
                "check the API login id, transaction key and account settings",
            )
        if self.code in _RETRY_MESSAGES:
            return RetryableError("processing_error", f"Authorize.net: {self.text} ({self.code})")
        if self.code == _NOT_FOUND:
            return Declined("record_not_found", f"Authorize.net: {self.text} ({self.code})")
        if not self.code:
            return _malformed("without a result message")
        return Declined(f"authorizenet_{self.code.lower()}", f"Authorize.net: {self.text}")


class AuthorizeNetGateway:
    """The Authorize.net adapter; see the module docstring for how it avoids double charges."""

    name = "authorizenet"

    def __init__(self, config: AuthorizeNetConfig, client: httpx.Client | None = None) -> None:
        self._config = config
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=config.timeout)

    def __repr__(self) -> str:
        return f"AuthorizeNetGateway({self._config!r})"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # The port

    def charge(self, request: ChargeRequest) -> Outcome:
        if request.amount <= Money.zero(request.amount.currency):
            return Declined("invalid_amount", f"The amount must be positive, got {request.amount}.")
        if not request.customer_reference:
            return Declined(
                "customer_profile_missing",
                "An Authorize.net payment method needs its customer profile id.",
            )
        transaction = {
            "transactionType": "authCaptureTransaction",
            "amount": _decimal(request.amount),
            "currencyCode": request.amount.currency,
            "profile": {
                "customerProfileId": request.customer_reference,
                "paymentProfile": {"paymentProfileId": request.token},
            },
            "order": {
                "invoiceNumber": short_id(request.idempotency_key),
                "description": request.description[:255],
            },
        }
        return self._run(
            request.idempotency_key,
            transaction,
            request.amount,
            _charge_outcome,
            lambda: self.find_charge(request),
        )

    def refund(self, request: RefundRequest) -> Outcome:
        if request.amount <= Money.zero(request.amount.currency):
            return Declined("invalid_amount", f"The amount must be positive, got {request.amount}.")
        charge = self._details(request.charge_reference)
        if isinstance(charge, RetryableError):
            return charge
        if charge is None:
            return Declined("charge_not_found", "Authorize.net has no such transaction.")
        status = str(charge.get("transactionStatus", ""))
        charged = _money(charge.get("authAmount"), request.amount.currency)
        if charged is None:
            return _malformed("transaction details without an amount")
        if request.amount > charged:
            return Declined("amount_too_large", "The refund would exceed the amount charged.")
        if status == "voided":
            # A void of ours whose answer was lost: the whole charge is already given back.
            if request.amount == charged:
                return Succeeded(request.charge_reference, request.amount)
            return Declined("amount_too_large", "The charge was voided: nothing is left to refund.")
        if status in _UNSETTLED_CHARGE:
            if request.amount != charged:
                return Declined(
                    "refund_before_settlement",
                    "Authorize.net refunds only settled charges, and voids only whole ones: "
                    "retry this partial refund once the charge has settled.",
                )
            return self._void(request)
        if status not in _CHARGE_SUCCEEDED:
            return Declined("charge_not_found", f"The charge did not succeed ({status}).")
        # On the customer profile when the charge was, so that the customer's transaction
        # list shows the refund (how find_refund finds it once settled); else on the card.
        account = _refund_profile(charge.get("profile"))
        if account is None:
            payment = _refund_payment(charge.get("payment"))
            if payment is None:
                return _malformed("transaction details without the payment's last digits")
            account = {"payment": payment}
        transaction = {
            "transactionType": "refundTransaction",
            "amount": _decimal(request.amount),
            "currencyCode": request.amount.currency,
            **account,
            "refTransId": request.charge_reference,
            "order": {"invoiceNumber": short_id(request.idempotency_key)},
        }
        return self._run(
            request.idempotency_key,
            transaction,
            request.amount,
            _refund_outcome,
            lambda: self.find_refund(request),
        )

    def find_charge(self, request: ChargeRequest) -> Recorded | None:
        customer = (
            {
                "customerProfileId": request.customer_reference,
                "customerPaymentProfileId": request.token,
            }
            if request.customer_reference
            else None
        )
        return self._find(
            short_id(request.idempotency_key), request.amount, customer, _charge_outcome
        )

    def find_refund(self, request: RefundRequest) -> Recorded | None:
        charge = _unavailable_if_failed(self._details(request.charge_reference))
        if charge is None:
            return None  # no such charge, so no refund of it either
        charged = _money(charge.get("authAmount"), request.amount.currency)
        if charge.get("transactionStatus") == "voided" and charged == request.amount:
            return Succeeded(request.charge_reference, request.amount)
        profile = _refund_profile(charge.get("profile"))
        customer = None
        if profile is not None:
            customer = {"customerProfileId": profile["profile"]["customerProfileId"]}
        found = self._find(
            short_id(request.idempotency_key), request.amount, customer, _refund_outcome
        )
        if (
            found is None
            and customer is None
            and charge.get("transactionStatus") not in (_UNSETTLED_CHARGE)
        ):
            # A refund on the card settles out of the unsettled list and into no list we
            # can search by it: "none" would be a guess, and a second refund its price.
            raise GatewayUnavailable("a settled refund on a card cannot be looked up")
        return found

    # Requests

    def _call(self, method: str, fields: dict[str, Any]) -> dict[str, Any] | RetryableError:
        """One API request; the decoded answer, or why there is none to read."""
        auth = {"name": self._config.api_login_id, "transactionKey": self._config.transaction_key}
        payload = {method: {"merchantAuthentication": auth, **fields}}
        response = send(
            self._client,
            "POST",
            self._config.api_url,
            content=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            timeout=self._config.timeout,
        )
        if isinstance(response, RetryableError):
            return response
        if response.status_code in (401, 403):
            return RetryableError(
                "gateway_auth_failed", f"Authorize.net refused the request ({response.status_code})"
            )
        if response.status_code != 200:
            return RetryableError(
                "processing_error", f"Authorize.net answered HTTP {response.status_code}"
            )
        return json_body(response)

    def _run(
        self,
        key: str,
        transaction: dict[str, Any],
        amount: Money,
        outcome: Callable[[str, Any, Money | None, Any], Recorded | None],
        find: Callable[[], Recorded | None],
    ) -> Outcome:
        """Sends a charge or refund; a duplicate of one sent within the window is answered
        by the original transaction (``outcome`` reads its status, ``find`` looks for it)."""
        answer = self._transact(key, transaction)
        if not isinstance(answer, dict):
            return answer
        return self._answered(
            answer,
            amount,
            on_duplicate=lambda original: self._original(original, amount, outcome, find),
        )

    def _transact(self, key: str, transaction: dict[str, Any]) -> dict[str, Any] | RetryableError:
        settings = {
            "setting": [
                {
                    "settingName": "duplicateWindow",
                    "settingValue": str(self._config.duplicate_window),
                }
            ]
        }
        return self._call(
            "createTransactionRequest",
            {
                "refId": short_id(key),
                "transactionRequest": {**transaction, "transactionSettings": settings},
            },
        )

    def _void(self, request: RefundRequest) -> Outcome:
        answer = self._call(
            "createTransactionRequest",
            {
                "refId": short_id(request.idempotency_key),
                "transactionRequest": {
                    "transactionType": "voidTransaction",
                    "refTransId": request.charge_reference,
                },
            },
        )
        if not isinstance(answer, dict):
            return answer
        # No duplicate check applies to a void: ``refund`` reads a voided charge as done
        # before it would void again.
        return self._answered(
            answer,
            request.amount,
            on_duplicate=lambda _: _malformed("a void as a duplicate"),
        )

    def _answered(
        self,
        body: dict[str, Any],
        amount: Money,
        on_duplicate: Callable[[str | None], Outcome],
    ) -> Outcome:
        """The outcome a ``createTransactionResponse`` tells."""
        answer = _Answer(body)
        transaction = body.get("transactionResponse")
        if not isinstance(transaction, dict) or not transaction.get("responseCode"):
            return answer.error() if not answer.ok else _malformed("no transaction response")
        response_code = str(transaction["responseCode"])
        trans_id = str(transaction.get("transId") or "")
        reference = trans_id if trans_id.strip("0") else None  # "0" when nothing was made
        reason, text = _first(transaction.get("errors"), "errorCode", "errorText")
        if not reason:
            reason, text = _first(transaction.get("messages"), "code", "description")
        if response_code in ("1", "4"):
            if reference is None:
                return _malformed("an approval without a transaction id")
            return (
                Succeeded(reference, amount) if response_code == "1" else Pending(reference, amount)
            )
        if response_code == "3" and reason == _DUPLICATE:
            return on_duplicate(reference)
        if response_code == "3" and reason in _RETRY_REASONS:
            return RetryableError("processing_error", f"Authorize.net: {text} (reason {reason})")
        if response_code == "3" and reason in _AUTH_REASONS:
            return RetryableError(
                "gateway_auth_failed",
                f"Authorize.net refused the merchant credentials or permissions (reason {reason})",
            )
        if response_code in ("2", "3"):
            return Declined(_reason_code(reason), text or "Declined by Authorize.net.", reference)
        return _malformed(f"response code {response_code!r}")

    def _original(
        self,
        trans_id: str | None,
        amount: Money,
        outcome: Callable[[str, Any, Money | None, Any], Recorded | None],
        find: Callable[[], Recorded | None],
    ) -> Outcome:
        """The outcome of the transaction a duplicate repeats: it was made under the same
        invoice number and amount, hence by an earlier try of the same key."""
        if trans_id is not None:
            details = self._details(trans_id)
            if isinstance(details, RetryableError):
                return details
            if details is not None:
                recorded = outcome(
                    trans_id,
                    details.get("transactionStatus"),
                    _money(details.get("authAmount"), amount.currency) or amount,
                    details.get("responseReasonCode"),
                )
                if recorded is not None:
                    return recorded
        try:
            found = find()
        except GatewayUnavailable as error:
            return RetryableError("processing_error", str(error))
        return found or RetryableError(
            "duplicate_unresolved",
            "Authorize.net refused a repeat of an earlier request whose outcome is not visible yet",
        )

    def _details(self, trans_id: str) -> dict[str, Any] | RetryableError | None:
        """``getTransactionDetailsRequest``: the transaction, None if there is none."""
        body = self._call("getTransactionDetailsRequest", {"transId": trans_id})
        if isinstance(body, RetryableError):
            return body
        answer = _Answer(body)
        if answer.code == _NOT_FOUND:
            return None
        if not answer.ok:
            error = answer.error()
            # Any other refusal of a lookup leaves the answer unknown.
            return error if isinstance(error, RetryableError) else _as_retryable(error)
        transaction = body.get("transaction")
        return transaction if isinstance(transaction, dict) else _malformed("no transaction")

    def _find(
        self,
        invoice: str,
        amount: Money,
        customer: dict[str, str] | None,
        outcome: Callable[[str, Any, Money | None, Any], Recorded | None],
    ) -> Recorded | None:
        """The outcome of the transaction with this invoice number and amount: unsettled
        ones first (a lost answer is usually minutes old), then the customer's."""
        lists: list[tuple[str, dict[str, Any]]] = [("getUnsettledTransactionListRequest", {})]
        if customer is not None:
            lists.append(("getTransactionListForCustomerRequest", customer))
        for method, fields in lists:
            matches = [
                summary
                for summary in self._transactions(method, fields)
                if summary.get("invoiceNumber") == invoice
                and _money(summary.get("settleAmount"), amount.currency) == amount
            ]
            recorded = [
                outcome(
                    str(summary.get("transId", "")),
                    summary.get("transactionStatus"),
                    amount,
                    None,
                )
                for summary in matches
            ]
            if None in recorded:
                raise GatewayUnavailable("Authorize.net listed a transaction in an unknown status")
            # A success wins over a failure: only the first try of a key can have failed
            # and been followed by another within the same invoice number.
            for kind in (Succeeded, Pending, Declined):
                for answer in recorded:
                    if isinstance(answer, kind):
                        return answer
        return None

    def _transactions(self, method: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """Every transaction a list request returns, newest first, page after page."""
        found: list[dict[str, Any]] = []
        for page in range(1, _MAX_PAGES + 1):
            body = _unavailable_if_failed(
                self._call(
                    method,
                    {
                        **fields,
                        "sorting": {"orderBy": "submitTimeUTC", "orderDescending": True},
                        "paging": {"limit": _PAGE, "offset": page},
                    },
                )
            )
            answer = _Answer(body)
            if not answer.ok:
                if answer.code == _NOT_FOUND:
                    return found  # the customer profile has no transactions (or is gone)
                error = answer.error()
                raise GatewayUnavailable(f"{error.code}: {error.message}")
            transactions = body.get("transactions", [])
            if not isinstance(transactions, list):
                raise GatewayUnavailable("Authorize.net listed transactions in an unknown shape")
            found.extend(t for t in transactions if isinstance(t, dict))
            if len(transactions) < _PAGE:
                return found
        # Not among the newest: it may still be there, so "none" would be a guess.
        raise GatewayUnavailable(f"not among the newest {_PAGE * _MAX_PAGES} transactions")


def _charge_outcome(
    reference: str, status: Any, amount: Money | None, reason: Any
) -> Recorded | None:
    """A charge's status as its recorded outcome; None for a status we cannot read."""
    if amount is None:
        return None
    if status in _CHARGE_SUCCEEDED:
        return Succeeded(reference, amount)
    if status in _CHARGE_PENDING:
        return Pending(reference, amount)
    # A charge voided before it settled: a hold for review the merchant declined (our own
    # voids refund charges whose success was recorded, never looked up again).
    if status in _FAILED or status == "voided":
        return _failed(reference, status, reason)
    return None


def _refund_outcome(
    reference: str, status: Any, amount: Money | None, reason: Any
) -> Recorded | None:
    """A refund transaction's status as its recorded outcome."""
    if amount is None:
        return None
    if status in _REFUND_SUCCEEDED:
        return Succeeded(reference, amount)
    if status in _FAILED or status == "voided":
        return _failed(reference, status, reason)
    return None


def _failed(reference: str, status: Any, reason: Any) -> Declined:
    code = _reason_code(str(reason)) if reason not in (None, "") else "card_declined"
    return Declined(code, f"Authorize.net recorded the transaction as {status}.", reference)


def _refund_profile(profile: Any) -> dict[str, Any] | None:
    """The customer profile a charge was made on, as a refund names it, if it was."""
    if not isinstance(profile, dict):
        return None
    customer, payment = profile.get("customerProfileId"), profile.get("customerPaymentProfileId")
    if not customer or not payment:
        return None
    return {
        "profile": {
            "customerProfileId": str(customer),
            "paymentProfile": {"paymentProfileId": str(payment)},
        }
    }


def _refund_payment(payment: Any) -> dict[str, Any] | None:
    """What a refund names the charged account by: the last four digits (documented for
    ``refundTransaction``), from the masked ones of the transaction details."""
    if not isinstance(payment, dict):
        return None
    card = payment.get("creditCard")
    if isinstance(card, dict) and str(card.get("cardNumber", ""))[-4:].isdigit():
        return {
            "creditCard": {
                "cardNumber": str(card["cardNumber"])[-4:],
                "expirationDate": MASKED_EXPIRY,
            }
        }
    bank = payment.get("bankAccount")
    if isinstance(bank, dict) and bank.get("routingNumber") and bank.get("accountNumber"):
        return {
            "bankAccount": {
                "routingNumber": str(bank["routingNumber"]),
                "accountNumber": str(bank["accountNumber"]),
                "nameOnAccount": str(bank.get("nameOnAccount", ""))[:22],
            }
        }
    return None


def _as_retryable(declined: Declined) -> RetryableError:
    return RetryableError(declined.code, declined.message)


def _unavailable_if_failed(answer: _T | RetryableError) -> _T:
    if isinstance(answer, RetryableError):
        raise GatewayUnavailable(f"{answer.code}: {answer.message}")
    return answer


# Webhooks

_AUTHCAPTURE = "net.authorize.payment.authcapture.created"
_FRAUD_APPROVED = "net.authorize.payment.fraud.approved"
_FRAUD_DECLINED = "net.authorize.payment.fraud.declined"
_REFUND = "net.authorize.payment.refund.created"
_VOID = "net.authorize.payment.void.created"


class AuthorizeNetWebhooks:
    """Verifies and reads Authorize.net webhook notifications.

    ``X-ANET-Signature: sha512=<hex>`` is the HMAC-SHA512 of the raw body keyed with the
    account's Signature Key (its text, as Authorize.net's samples use it); Authorize.net
    sends the hex in upper case, so it is compared case-insensitively, in constant time.

    ``event_id`` is the notification's ``notificationId``. Nothing but the body is signed
    and Authorize.net retries failed deliveries for days, so ``eventDate`` is not checked
    against a tolerance (a genuine retry would be refused): replays are harmless because
    the receiver acts once per ``(gateway, event_id)``.

    Events read: ``authcapture.created`` (approved: payment_succeeded; declined:
    payment_failed; held for review: nothing yet), ``fraud.approved`` / ``fraud.declined``
    (a held charge released or refused), ``refund.created``, and ``void.created``, which
    reads as refund_succeeded of the whole charge: a void cancels a charge before it
    settles, so the customer keeps all of it, as after a full refund (and this adapter's
    refunds of unsettled charges are voids, whose reference is the charge's ``transId``).
    Amounts are in the account's currency (``AuthorizeNetConfig.currency``): payloads name
    none. Authorize.net sends no webhooks for disputes (chargebacks): none are read.
    """

    name = "authorizenet"

    def __init__(self, config: AuthorizeNetConfig) -> None:
        if not config.signature_key:
            raise ValueError("verifying Authorize.net webhooks needs the account's signature_key")
        self._key = config.signature_key.encode()
        self._currency = config.currency

    def __repr__(self) -> str:
        return "AuthorizeNetWebhooks()"

    def verify(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> ProviderEvent | None:
        scheme, _, signature = headers.get("x-anet-signature", "").strip().partition("=")
        if scheme.lower() != "sha512" or not signature:
            raise WebhookRejected("missing or unreadable X-ANET-Signature header")
        expected = hmac.new(self._key, body, hashlib.sha512).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
            raise WebhookRejected("the X-ANET-Signature does not match the body")
        try:
            notification = json.loads(body)
        except ValueError:
            raise WebhookRejected("the body is not JSON") from None
        if not isinstance(notification, dict) or not isinstance(notification.get("payload"), dict):
            raise WebhookRejected("the body is not an Authorize.net notification")
        event_id = notification.get("notificationId")
        if not isinstance(event_id, str) or not event_id:
            raise WebhookRejected("the notification has no notificationId")
        event_type = str(notification.get("eventType", ""))
        payload: dict[str, Any] = notification["payload"]
        trans_id = str(payload.get("id") or "") or None
        event = partial(
            ProviderEvent,
            gateway=self.name,
            event_id=event_id,
            amount=_money(payload.get("authAmount"), self._currency),
            message=event_type,
        )
        if event_type == _AUTHCAPTURE:
            response_code = str(payload.get("responseCode", ""))
            if response_code == "1":
                return event(kind="payment_succeeded", charge_reference=trans_id)
            if response_code == "2":
                return event(kind="payment_failed", charge_reference=trans_id, code="card_declined")
            return None  # held for review: fraud.approved or fraud.declined follows
        if event_type == _FRAUD_APPROVED:
            return event(kind="payment_succeeded", charge_reference=trans_id)
        if event_type == _FRAUD_DECLINED:
            return event(kind="payment_failed", charge_reference=trans_id, code="fraud_declined")
        if event_type == _REFUND:
            charge = str(payload.get("refTransId") or "") or None
            return event(
                kind="refund_succeeded", charge_reference=charge, object_reference=trans_id
            )
        if event_type == _VOID:
            return event(
                kind="refund_succeeded", charge_reference=trans_id, object_reference=trans_id
            )
        return None
