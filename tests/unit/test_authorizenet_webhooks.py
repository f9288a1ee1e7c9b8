"""Authorize.net webhook notifications: X-ANET-Signature checks and what each event means."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gateways.authorizenet import AuthorizeNetConfig, AuthorizeNetWebhooks
from gateways.webhooks import ProviderEvent, WebhookRejected
from ledger.money import Money

SIGNATURE_KEY = "8E1A3C5F7B9D" * 10 + "0A1B2C3D"  # 128 hex characters, like the real ones
NOW = datetime(2025, 2, 28, 9, 5, tzinfo=UTC)
CONFIG = AuthorizeNetConfig("login", "txn-key", signature_key=SIGNATURE_KEY, currency="EUR")


def notification(event_type: str, **payload: Any) -> bytes:
    body = {
        "notificationId": "d0e8e7fe-c3e7-4add-a480-27bc5ce28a0b",
        "eventType": event_type,
        "eventDate": "2025-02-28T09:00:02.0080095Z",
        "webhookId": "63d6fea2-aa13-4b1d-a204-f5fbc15942b7",
        "payload": {"entityName": "transaction", "id": "60020981676", **payload},
    }
    return json.dumps(body).encode()


def signed(body: bytes, key: str = SIGNATURE_KEY, upper: bool = True) -> dict[str, str]:
    digest = hmac.new(key.encode(), body, hashlib.sha512).hexdigest()
    return {"x-anet-signature": f"sha512={digest.upper() if upper else digest}"}


def verify(body: bytes, headers: dict[str, str] | None = None) -> ProviderEvent | None:
    return AuthorizeNetWebhooks(CONFIG).verify(
        signed(body) if headers is None else headers, body, NOW
    )


APPROVED = notification(
    "net.authorize.payment.authcapture.created", responseCode=1, authAmount=19.99
)


def test_a_genuine_approval_reads_as_a_succeeded_payment() -> None:
    assert verify(APPROVED) == ProviderEvent(
        gateway="authorizenet",
        event_id="d0e8e7fe-c3e7-4add-a480-27bc5ce28a0b",
        kind="payment_succeeded",
        charge_reference="60020981676",
        amount=Money(1999, "EUR"),
        message="net.authorize.payment.authcapture.created",
    )


def test_a_lower_case_signature_is_accepted_too() -> None:
    event = verify(APPROVED, signed(APPROVED, upper=False))
    assert event is not None
    assert event.kind == "payment_succeeded"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (signed(APPROVED, key="0" * 128), APPROVED),  # another key
        (signed(APPROVED), APPROVED.replace(b"19.99", b"1.99")),  # altered body
        ({}, APPROVED),  # no signature
        ({"x-anet-signature": "sha256=" + "A" * 64}, APPROVED),  # another scheme
        ({"x-anet-signature": "sha512="}, APPROVED),  # empty digest
    ],
)
def test_a_delivery_that_is_not_provably_authorize_nets_is_rejected(
    headers: dict[str, str], body: bytes
) -> None:
    with pytest.raises(WebhookRejected):
        verify(body, headers)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"eventType": "x", "payload": {}}).encode(),  # no notificationId
        json.dumps({"notificationId": "n1", "eventType": "x"}).encode(),  # no payload
    ],
)
def test_a_signed_body_that_is_not_a_notification_is_rejected(body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        verify(body)


def test_an_old_event_date_is_not_refused_because_retries_come_days_later() -> None:
    event = AuthorizeNetWebhooks(CONFIG).verify(signed(APPROVED), APPROVED, datetime(2025, 3, 9))
    assert event is not None


@pytest.mark.parametrize(
    ("event_type", "payload", "expected"),
    [
        (
            "net.authorize.payment.authcapture.created",
            {"responseCode": 2, "authAmount": 19.99},
            ("payment_failed", "60020981676", None, 1999, "card_declined"),
        ),
        (
            "net.authorize.payment.fraud.approved",
            {"responseCode": 1, "authAmount": 19.99},
            ("payment_succeeded", "60020981676", None, 1999, None),
        ),
        (
            "net.authorize.payment.fraud.declined",
            {"responseCode": 2, "authAmount": 19.99},
            ("payment_failed", "60020981676", None, 1999, "fraud_declined"),
        ),
        (
            "net.authorize.payment.refund.created",
            {"responseCode": 1, "authAmount": 5, "refTransId": "60020981600"},
            ("refund_succeeded", "60020981600", "60020981676", 500, None),
        ),
        (
            "net.authorize.payment.refund.created",
            {"responseCode": 1, "authAmount": 5},
            ("refund_succeeded", None, "60020981676", 500, None),
        ),
        (
            "net.authorize.payment.void.created",
            {"responseCode": 1, "authAmount": 19.99},
            ("refund_succeeded", "60020981676", "60020981676", 1999, None),
        ),
    ],
)
def test_each_event_the_ledger_acts_on(
    event_type: str, payload: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    event = verify(notification(event_type, **payload))
    assert event is not None
    amount = None if event.amount is None else event.amount.amount
    assert (event.kind, event.charge_reference, event.object_reference, amount, event.code) == (
        expected
    )
    assert event.amount is None or event.amount.currency == "EUR"


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("net.authorize.payment.authcapture.created", {"responseCode": 4}),  # held for review
        ("net.authorize.customer.created", {"entityName": "customerProfile"}),
        ("net.authorize.payment.priorAuthCapture.created", {"responseCode": 1}),
    ],
)
def test_events_the_ledger_does_not_act_on_read_as_none(
    event_type: str, payload: dict[str, Any]
) -> None:
    assert verify(notification(event_type, **payload)) is None


def test_verifying_needs_a_signature_key_which_never_shows() -> None:
    with pytest.raises(ValueError, match="signature_key"):
        AuthorizeNetWebhooks(AuthorizeNetConfig("login", "txn-key"))
    assert SIGNATURE_KEY not in repr(AuthorizeNetWebhooks(CONFIG))
    assert SIGNATURE_KEY not in repr(CONFIG)
