"""Razorpay's webhook deliveries: signed with a hex HMAC-SHA256 of the raw body under the
webhook secret, named by X-Razorpay-Event-Id, read into the ledger's ProviderEvents."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateways.port import ChargeRequest, Succeeded
from gateways.razorpay import NOTE_KEY, RazorpayConfig, RazorpayGateway, RazorpayWebhooks
from gateways.webhooks import ProviderEvent, WebhookRejected
from ledger.money import Money
from tests.fakes import threaded_server
from tests.fakes.razorpay import WEBHOOK_SECRET, FakeRazorpay

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
KEY = "3f2b8c1e-7d4a-4f6e-9a0b-1c2d3e4f5a6b:payment:1"
CONFIG = RazorpayConfig("rzp_test_key", "key-secret", webhook_secret=WEBHOOK_SECRET)


def signed(body: bytes, secret: str = WEBHOOK_SECRET, event_id: str = "evt_1") -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-razorpay-signature": signature, "x-razorpay-event-id": event_id}


def delivery(event: str, **entities: dict[str, Any]) -> bytes:
    """A body as Razorpay sends one (``payload.<name>.entity``)."""
    return json.dumps(
        {
            "entity": "event",
            "account_id": "acc_BFQ7uQEaa7j2z7",
            "event": event,
            "contains": list(entities),
            "payload": {name: {"entity": entity} for name, entity in entities.items()},
            "created_at": 1740830400,
        }
    ).encode()


def payment(status: str = "captured", **fields: Any) -> dict[str, Any]:
    return {
        "id": "pay_DESlfW9H8K9uqM",
        "entity": "payment",
        "amount": 1999,
        "currency": "EUR",
        "status": status,
        "order_id": "order_DESlLckIVRkHWj",
        "notes": {NOTE_KEY: KEY},
        "error_code": None,
        "error_description": None,
        "error_reason": None,
        "created_at": 1740830399,
    } | fields


def dispute(status: str) -> dict[str, Any]:
    return {
        "id": "disp_EsIAlDcoUr8CaQ",
        "entity": "dispute",
        "payment_id": "pay_DESlfW9H8K9uqM",
        "amount": 1500,
        "currency": "EUR",
        "amount_deducted": 0,
        "reason_code": "processed_invalid_expired_card",
        "respond_by": 1741435200,
        "status": status,
        "phase": "chargeback",
        "created_at": 1740830400,
    }


def verify(body: bytes, headers: dict[str, str] | None = None) -> ProviderEvent | None:
    return RazorpayWebhooks(CONFIG).verify(signed(body) if headers is None else headers, body, NOW)


# Signatures


def test_a_captured_payment_is_a_payment_succeeded_with_our_key() -> None:
    assert verify(delivery("payment.captured", payment=payment())) == ProviderEvent(
        gateway="razorpay",
        event_id="evt_1",
        kind="payment_succeeded",
        charge_reference="pay_DESlfW9H8K9uqM",
        idempotency_key=KEY,
        amount=Money(1999, "EUR"),
    )


def test_a_delivery_signed_with_another_secret_is_rejected() -> None:
    body = delivery("payment.captured", payment=payment())
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(body, signed(body, secret="someone-else-s-secret"))


def test_an_altered_body_is_rejected() -> None:
    body = delivery("payment.captured", payment=payment())
    headers = signed(body)
    altered = body.replace(b"1999", b"9999")
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(altered, headers)


@pytest.mark.parametrize("header", ["x-razorpay-signature", "x-razorpay-event-id"])
def test_a_delivery_without_a_signature_or_an_event_id_is_rejected(header: str) -> None:
    body = delivery("payment.captured", payment=payment())
    headers = signed(body)
    del headers[header]
    with pytest.raises(WebhookRejected, match="no X-Razorpay"):
        verify(body, headers)


def test_a_signed_body_that_is_not_a_readable_event_is_rejected() -> None:
    for body in (b"not json", b"[1, 2]", delivery("payment.captured", order=payment())):
        with pytest.raises(WebhookRejected, match="unreadable"):
            verify(body)
    no_amount = payment()
    del no_amount["amount"]
    with pytest.raises(WebhookRejected, match="unreadable"):
        verify(delivery("payment.captured", payment=no_amount))


def test_the_signature_uses_the_secret_of_the_config_and_needs_one() -> None:
    body = delivery("payment.captured", payment=payment())
    other = RazorpayConfig("k", "s", webhook_secret="rotated-secret")
    event = RazorpayWebhooks(other).verify(signed(body, secret="rotated-secret"), body, NOW)
    assert event is not None
    with pytest.raises(ValueError, match="webhook_secret"):
        RazorpayWebhooks(RazorpayConfig("k", "s"))


def test_the_secret_does_not_show_in_the_verifier_or_its_rejections() -> None:
    body = delivery("payment.captured", payment=payment())
    with pytest.raises(WebhookRejected) as rejected:
        verify(body, signed(body, secret="wrong"))
    for text in (str(rejected.value), repr(RazorpayWebhooks(CONFIG)), repr(CONFIG)):
        assert WEBHOOK_SECRET not in text


# What each event means


def test_a_failed_payment_carries_our_code_and_razorpay_s_description() -> None:
    failed = payment(
        "failed",
        error_code="BAD_REQUEST_ERROR",
        error_description="Your payment could not be completed due to insufficient funds.",
        error_reason="insufficient_funds",
    )
    event = verify(delivery("payment.failed", payment=failed))
    assert event is not None
    assert (event.kind, event.charge_reference, event.idempotency_key) == (
        "payment_failed",
        "pay_DESlfW9H8K9uqM",
        KEY,
    )
    assert (event.code, event.message) == (
        "insufficient_funds",
        "Your payment could not be completed due to insufficient funds.",
    )


def test_a_processed_refund_names_its_payment_and_our_refund_key() -> None:
    refund = {
        "id": "rfnd_FP8QHiV938haTz",
        "entity": "refund",
        "amount": 500,
        "currency": "EUR",
        "payment_id": "pay_DESlfW9H8K9uqM",
        "notes": {NOTE_KEY: "3f2b8c1e:refund:1"},
        "receipt": "sl_0123",
        "status": "processed",
        "created_at": 1740830400,
    }
    event = verify(delivery("refund.processed", refund=refund, payment=payment()))
    assert event == ProviderEvent(
        gateway="razorpay",
        event_id="evt_1",
        kind="refund_succeeded",
        charge_reference="pay_DESlfW9H8K9uqM",
        idempotency_key="3f2b8c1e:refund:1",
        object_reference="rfnd_FP8QHiV938haTz",
        amount=Money(500, "EUR"),
    )


@pytest.mark.parametrize(
    ("name", "status", "kind"),
    [
        ("payment.dispute.created", "open", "dispute_opened"),
        ("payment.dispute.won", "won", "dispute_won"),
        ("payment.dispute.lost", "lost", "dispute_lost"),
    ],
)
def test_disputes_name_the_payment_the_dispute_and_the_reason(
    name: str, status: str, kind: str
) -> None:
    event = verify(delivery(name, payment=payment(), dispute=dispute(status)))
    assert event == ProviderEvent(
        gateway="razorpay",
        event_id="evt_1",
        kind=kind,  # type: ignore[arg-type]
        charge_reference="pay_DESlfW9H8K9uqM",
        idempotency_key=KEY,
        object_reference="disp_EsIAlDcoUr8CaQ",
        amount=Money(1500, "EUR"),
        code="processed_invalid_expired_card",
    )


def test_events_the_ledger_does_not_act_on_are_none() -> None:
    assert verify(delivery("payment.authorized", payment=payment("authorized"))) is None
    assert verify(delivery("payment.dispute.under_review", dispute=dispute("under_review"))) is None


def test_a_payment_without_our_notes_has_no_key() -> None:
    # Razorpay shows empty notes as a list.
    event = verify(delivery("payment.captured", payment=payment(notes=[])))
    assert event is not None
    assert event.idempotency_key is None


# The same reference as the adapter's


@pytest.fixture
def fake() -> Iterator[FakeRazorpay]:
    with threaded_server() as server:
        yield FakeRazorpay(server)


def test_the_event_of_a_charge_names_the_reference_and_key_the_adapter_returned(
    fake: FakeRazorpay,
) -> None:
    gateway = RazorpayGateway(fake.config())
    request = ChargeRequest(
        KEY,
        "token_visa",
        Money(1999, "EUR"),
        customer_reference="cust_1",
        email="a@example.com",
        phone="+919876543210",
    )
    outcome = gateway.charge(request)
    gateway.close()
    assert isinstance(outcome, Succeeded)
    # Razorpay's webhook carries the payment entity as its API shows it.
    body = delivery("payment.captured", payment=fake.payments[outcome.reference])
    event = RazorpayWebhooks(fake.config()).verify(signed(body), body, NOW)
    assert event is not None
    assert (event.charge_reference, event.idempotency_key, event.amount) == (
        outcome.reference,
        KEY,
        outcome.amount,
    )
