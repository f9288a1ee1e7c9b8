"""PayPal webhook deliveries: checked with PayPal's verify-webhook-signature postback (the
local fake checks a real HMAC over PayPal's signed string), refused when stale, forged or
unreadable, and read into the events the ledger acts on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from gateways.paypal import PayPalConfig, PayPalWebhooks
from gateways.webhooks import ProviderEvent, WebhookRejected
from ledger.money import Money
from tests.fakes import threaded_server
from tests.fakes.paypal import (
    CLIENT_SECRET,
    FAST_TIMEOUT,
    WEBHOOK_ID,
    FakePayPal,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SENT_AT = "2025-03-01T11:59:58Z"
KEY = "0b7c6a9e-6f43-4a5e-9d7e-2f1c3b4a5d6e:payment:1"
REFUND_KEY = "0b7c6a9e-6f43-4a5e-9d7e-2f1c3b4a5d6e:refund:1"
CAPTURE = "3C000000000000002"


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    with threaded_server() as server:
        yield server


@pytest.fixture
def fake(server: HTTPServer) -> FakePayPal:
    return FakePayPal(server)


@pytest.fixture
def webhooks(fake: FakePayPal) -> Iterator[PayPalWebhooks]:
    verifier = PayPalWebhooks(fake.config(timeout=FAST_TIMEOUT))
    yield verifier
    verifier.close()


def delivery(event_type: str, resource: dict[str, Any], event_id: str = "WH-1") -> bytes:
    # PayPal's own layout (key order, spacing, non-ASCII) must reach the check unchanged.
    event = {
        "id": event_id,
        "event_version": "1.0",
        "create_time": "2025-03-01T11:59:57.123Z",
        "resource_type": "capture",
        "event_type": event_type,
        "summary": "Paiement reçu de 19,99 €",
        "resource": resource,
    }
    return json.dumps(event, indent=1, ensure_ascii=False).encode()


def capture(status: str = "COMPLETED", **more: Any) -> dict[str, Any]:
    return {
        "id": CAPTURE,
        "status": status,
        "amount": {"currency_code": "EUR", "value": "19.99"},
        "custom_id": KEY,
        "invoice_id": KEY,
        "links": [
            {"href": f"https://api.paypal.com/v2/payments/captures/{CAPTURE}", "rel": "self"},
            {"href": "https://api.paypal.com/v2/checkout/orders/5O0000001", "rel": "up"},
        ],
        **more,
    }


def dispute(outcome: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "dispute_id": "PP-D-27803",
        "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
        "status": "RESOLVED" if outcome else "OPEN",
        "dispute_amount": {"currency_code": "EUR", "value": "19.99"},
        "disputed_transactions": [
            {
                "seller_transaction_id": CAPTURE,
                "buyer_transaction_id": "BUYER1",
                "invoice_number": KEY,
            }
        ],
    }
    if outcome:
        resource["dispute_outcome"] = {"outcome_code": outcome}
    return resource


def verify(
    webhooks: PayPalWebhooks, fake: FakePayPal, body: bytes, **signing: Any
) -> ProviderEvent | None:
    return webhooks.verify(fake.sign(body, SENT_AT, **signing), body, NOW)


# Verification


def test_a_genuine_delivery_is_verified_with_paypal_and_read(
    webhooks: PayPalWebhooks, fake: FakePayPal
) -> None:
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())
    headers = fake.sign(body, SENT_AT)

    event = webhooks.verify(headers, body, NOW)

    assert event == ProviderEvent(
        "paypal",
        "WH-1",
        "payment_succeeded",
        CAPTURE,
        idempotency_key=KEY,
        amount=Money(1999, "EUR"),
    )
    [call] = fake.calls_to("POST", "/v1/notifications/verify-webhook-signature")
    assert call.headers["authorization"].startswith("Bearer A21AA-")
    assert {k: v for k, v in call.body.items() if k != "webhook_event"} == {
        "auth_algo": headers["paypal-auth-algo"],
        "cert_url": headers["paypal-cert-url"],
        "transmission_id": headers["paypal-transmission-id"],
        "transmission_sig": headers["paypal-transmission-sig"],
        "transmission_time": SENT_AT,
        "webhook_id": WEBHOOK_ID,
    }
    assert call.body["webhook_event"] == json.loads(body)


def test_a_delivery_signed_with_another_key_is_rejected(
    webhooks: PayPalWebhooks, fake: FakePayPal
) -> None:
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())

    with pytest.raises(WebhookRejected):
        verify(webhooks, fake, body, key=b"someone-else")


def test_an_altered_body_is_rejected(webhooks: PayPalWebhooks, fake: FakePayPal) -> None:
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())
    headers = fake.sign(body, SENT_AT)
    altered = body.replace(b'"19.99"', b'"1999.00"')

    with pytest.raises(WebhookRejected):
        webhooks.verify(headers, altered, NOW)


def test_a_delivery_for_another_webhook_is_rejected(fake: FakePayPal) -> None:
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())
    other = PayPalWebhooks(fake.config(webhook_id="3XR00000000000000"))

    with pytest.raises(WebhookRejected):
        other.verify(fake.sign(body, SENT_AT, webhook_id="3XR00000000000000"), body, NOW)
    other.close()


@pytest.mark.parametrize("age", [timedelta(seconds=301), timedelta(seconds=-301)])
def test_a_stale_or_skewed_transmission_is_rejected_without_asking_paypal(
    webhooks: PayPalWebhooks, fake: FakePayPal, age: timedelta
) -> None:
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())
    sent_at = (NOW - age).isoformat().replace("+00:00", "Z")

    with pytest.raises(WebhookRejected, match="stale"):
        webhooks.verify(fake.sign(body, sent_at), body, NOW)
    assert fake.calls == []


def test_a_delivery_within_the_tolerance_is_accepted(
    webhooks: PayPalWebhooks, fake: FakePayPal
) -> None:
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())
    sent_at = (NOW - timedelta(seconds=299)).isoformat()

    assert webhooks.verify(fake.sign(body, sent_at), body, NOW) is not None


@pytest.mark.parametrize(
    "header",
    [
        "paypal-auth-algo",
        "paypal-cert-url",
        "paypal-transmission-id",
        "paypal-transmission-sig",
        "paypal-transmission-time",
    ],
)
def test_a_missing_header_is_rejected(
    webhooks: PayPalWebhooks, fake: FakePayPal, header: str
) -> None:
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())
    headers = fake.sign(body, SENT_AT)
    del headers[header]

    with pytest.raises(WebhookRejected):
        webhooks.verify(headers, body, NOW)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_an_unreadable_body_is_rejected(
    webhooks: PayPalWebhooks, fake: FakePayPal, body: bytes
) -> None:
    with pytest.raises(WebhookRejected):
        verify(webhooks, fake, body)


@pytest.mark.parametrize(
    ("operation", "fault"), [("verify", "500"), ("verify", "timeout"), ("token", "429")]
)
def test_when_paypal_cannot_verify_the_delivery_is_rejected_for_redelivery(
    webhooks: PayPalWebhooks, fake: FakePayPal, operation: str, fault: str
) -> None:
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())
    fake.inject(operation, fault)

    with pytest.raises(WebhookRejected, match="could not verify"):
        verify(webhooks, fake, body)


def test_a_verifier_needs_the_webhook_id_and_keeps_the_secret_out_of_its_errors(
    fake: FakePayPal,
) -> None:
    with pytest.raises(ValueError, match="webhook_id"):
        PayPalWebhooks(PayPalConfig("id", CLIENT_SECRET))
    wrong = PayPalWebhooks(fake.config(client_secret="nope-" + CLIENT_SECRET))
    body = delivery("PAYMENT.CAPTURE.COMPLETED", capture())

    with pytest.raises(WebhookRejected) as rejected:
        verify(wrong, fake, body)
    assert CLIENT_SECRET not in str(rejected.value)
    wrong.close()


# What the ledger acts on


@pytest.mark.parametrize("event_type", ["PAYMENT.CAPTURE.DENIED", "PAYMENT.CAPTURE.DECLINED"])
def test_a_denied_capture_is_a_failed_payment(
    webhooks: PayPalWebhooks, fake: FakePayPal, event_type: str
) -> None:
    resource = capture("DECLINED", processor_response={"response_code": "5400"})

    event = verify(webhooks, fake, delivery(event_type, resource))

    assert event == ProviderEvent(
        "paypal",
        "WH-1",
        "payment_failed",
        CAPTURE,
        idempotency_key=KEY,
        amount=Money(1999, "EUR"),
        code="expired_card",
    )


def test_a_refund_names_the_capture_it_refunds(webhooks: PayPalWebhooks, fake: FakePayPal) -> None:
    resource = {
        "id": "1R000000000000009",
        "status": "COMPLETED",
        "amount": {"currency_code": "EUR", "value": "5.00"},
        "custom_id": REFUND_KEY,
        "invoice_id": REFUND_KEY,
        "links": [
            {"href": "https://api.paypal.com/v2/payments/refunds/1R000000000000009", "rel": "self"},
            {"href": f"https://api.paypal.com/v2/payments/captures/{CAPTURE}", "rel": "up"},
        ],
    }

    event = verify(webhooks, fake, delivery("PAYMENT.CAPTURE.REFUNDED", resource))

    assert event == ProviderEvent(
        "paypal",
        "WH-1",
        "refund_succeeded",
        CAPTURE,
        idempotency_key=REFUND_KEY,
        object_reference="1R000000000000009",
        amount=Money(500, "EUR"),
    )


@pytest.mark.parametrize(
    ("event_type", "outcome", "kind"),
    [
        ("CUSTOMER.DISPUTE.CREATED", None, "dispute_opened"),
        ("CUSTOMER.DISPUTE.RESOLVED", "RESOLVED_SELLER_FAVOUR", "dispute_won"),
        ("CUSTOMER.DISPUTE.RESOLVED", "CANCELED_BY_BUYER", "dispute_won"),
        ("CUSTOMER.DISPUTE.RESOLVED", "RESOLVED_BUYER_FAVOUR", "dispute_lost"),
        ("CUSTOMER.DISPUTE.RESOLVED", "ACCEPTED", "dispute_lost"),
    ],
)
def test_disputes_name_the_disputed_capture_and_their_outcome(
    webhooks: PayPalWebhooks, fake: FakePayPal, event_type: str, outcome: str | None, kind: str
) -> None:
    event = verify(webhooks, fake, delivery(event_type, dispute(outcome)))

    assert event == ProviderEvent(
        "paypal",
        "WH-1",
        kind,  # type: ignore[arg-type]
        CAPTURE,
        idempotency_key=KEY,
        object_reference="PP-D-27803",
        amount=Money(1999, "EUR"),
        code="MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
    )


@pytest.mark.parametrize(
    ("event_type", "resource"),
    [
        ("CHECKOUT.ORDER.APPROVED", {"id": "5O0000001"}),
        ("PAYMENT.CAPTURE.PENDING", capture("PENDING")),
        ("CUSTOMER.DISPUTE.RESOLVED", dispute("NONE")),
    ],
)
def test_genuine_events_the_ledger_does_not_act_on_are_none(
    webhooks: PayPalWebhooks, fake: FakePayPal, event_type: str, resource: dict[str, Any]
) -> None:
    assert verify(webhooks, fake, delivery(event_type, resource)) is None


def test_a_genuine_delivery_with_an_unreadable_amount_is_rejected(
    webhooks: PayPalWebhooks, fake: FakePayPal
) -> None:
    resource = capture(amount={"currency_code": "EUR", "value": "19.999"})

    with pytest.raises(WebhookRejected, match="amount"):
        verify(webhooks, fake, delivery("PAYMENT.CAPTURE.COMPLETED", resource))
