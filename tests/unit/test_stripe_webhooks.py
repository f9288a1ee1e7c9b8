"""Stripe webhook deliveries: the ``Stripe-Signature`` check (HMAC-SHA256 of
``"<t>.<body>"``, the timestamp within the tolerance of the given now) and the events the
ledger acts on, read into ``ProviderEvent``s."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateways.stripe import StripeConfig, StripeWebhooks
from gateways.webhooks import ProviderEvent, WebhookRejected
from ledger.money import Money

SECRET = "whsec_test_0123456789abcdefSecret"
NOW = datetime(2025, 2, 28, 9, 0, tzinfo=UTC)
KEY = "0b6f4d7e-8a52-4c1b-9f0e-3d2a1c5b7e90:payment:2"


def webhooks(tolerance: float = 300.0) -> StripeWebhooks:
    return StripeWebhooks(
        StripeConfig("sk_test_x", webhook_secret=SECRET, webhook_tolerance=tolerance)
    )


def signature(body: bytes, at: datetime = NOW, secret: str = SECRET) -> str:
    t = int(at.timestamp())
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": "evt_1Fake",
            "object": "event",
            "type": event_type,
            "data": {"object": obj},
            "livemode": False,
        }
    ).encode()


def verified(body: bytes) -> ProviderEvent | None:
    return webhooks().verify({"stripe-signature": signature(body)}, body, NOW)


def intent(**fields: Any) -> dict[str, Any]:
    return {
        "id": "pi_3Fake1",
        "object": "payment_intent",
        "amount": 1000,
        "amount_received": 0,
        "currency": "eur",
        "metadata": {"idempotency_key": KEY},
        **fields,
    }


SUCCEEDED = event("payment_intent.succeeded", intent(amount_received=1000, status="succeeded"))


# The signature


def test_a_delivery_signed_with_the_endpoint_secret_is_read() -> None:
    assert verified(SUCCEEDED) == ProviderEvent(
        "stripe",
        "evt_1Fake",
        "payment_succeeded",
        "pi_3Fake1",
        idempotency_key=KEY,
        amount=Money(1000, "EUR"),
    )


def test_one_matching_v1_among_several_is_enough() -> None:
    # While a secret is rolled, Stripe signs with the old and the new one.
    other = signature(SUCCEEDED, secret="whsec_old").split(",")[1]
    header = f"{signature(SUCCEEDED)},{other},v0=ignored"
    assert webhooks().verify({"stripe-signature": header}, SUCCEEDED, NOW) is not None


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"stripe-signature": signature(SUCCEEDED, secret="whsec_other")}, SUCCEEDED),
        ({"stripe-signature": signature(SUCCEEDED)}, SUCCEEDED.replace(b"1000", b"9000")),
        ({}, SUCCEEDED),
        ({"stripe-signature": ""}, SUCCEEDED),
        ({"stripe-signature": signature(SUCCEEDED).split(",")[0]}, SUCCEEDED),  # no v1
        ({"stripe-signature": signature(SUCCEEDED).split(",")[1]}, SUCCEEDED),  # no t
        ({"stripe-signature": "t=abc," + signature(SUCCEEDED).split(",")[1]}, SUCCEEDED),
    ],
    ids=[
        "wrong-secret",
        "altered-body",
        "missing-header",
        "empty-header",
        "no-v1",
        "no-timestamp",
        "bad-timestamp",
    ],
)
def test_a_delivery_not_provably_stripes_is_rejected(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        webhooks().verify(headers, body, NOW)


@pytest.mark.parametrize("offset", [timedelta(seconds=301), timedelta(seconds=-301)])
def test_a_delivery_signed_outside_the_tolerance_is_rejected(offset: timedelta) -> None:
    header = signature(SUCCEEDED, at=NOW + offset)
    with pytest.raises(WebhookRejected, match="tolerance"):
        webhooks().verify({"stripe-signature": header}, SUCCEEDED, NOW)
    # Within it, the same delivery is read.
    assert webhooks(tolerance=302).verify({"stripe-signature": header}, SUCCEEDED, NOW)


def test_a_signed_body_that_is_not_an_event_is_rejected() -> None:
    for body in (b"not json", b"[]", json.dumps({"type": "payment_intent.succeeded"}).encode()):
        with pytest.raises(WebhookRejected):
            verified(body)


def test_the_webhooks_need_a_secret_and_never_show_it() -> None:
    with pytest.raises(ValueError, match="signing secret"):
        StripeWebhooks(StripeConfig("sk_test_x"))
    config = StripeConfig("sk_test_key_hidden", webhook_secret=SECRET)
    assert SECRET not in repr(config)
    assert "sk_test_key_hidden" not in repr(config)
    assert SECRET not in repr(StripeWebhooks(config))
    with pytest.raises(WebhookRejected) as rejected:
        webhooks().verify({"stripe-signature": "t=1,v1=00"}, SUCCEEDED, NOW)
    assert SECRET not in str(rejected.value)


# The events


def test_a_failed_payment_carries_our_decline_code() -> None:
    error = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    }
    body = event(
        "payment_intent.payment_failed",
        intent(status="requires_payment_method", last_payment_error=error),
    )
    assert verified(body) == ProviderEvent(
        "stripe",
        "evt_1Fake",
        "payment_failed",
        "pi_3Fake1",
        idempotency_key=KEY,
        amount=Money(1000, "EUR"),
        code="insufficient_funds",
        message="Your card has insufficient funds.",
    )


def refund(**fields: Any) -> dict[str, Any]:
    return {
        "id": "re_3Fake2",
        "object": "refund",
        "amount": 400,
        "currency": "eur",
        "payment_intent": "pi_3Fake1",
        "status": "succeeded",
        "metadata": {"idempotency_key": "inv:refund:1"},
        **fields,
    }


@pytest.mark.parametrize("status", ["succeeded", "pending"])
def test_a_refund_stripe_accepted_is_a_refund_of_the_payment_intent(status: str) -> None:
    assert verified(event("refund.created", refund(status=status))) == ProviderEvent(
        "stripe",
        "evt_1Fake",
        "refund_succeeded",
        "pi_3Fake1",
        idempotency_key="inv:refund:1",
        object_reference="re_3Fake2",
        amount=Money(400, "EUR"),
    )


def test_a_refund_made_in_the_dashboard_has_no_key_of_ours() -> None:
    found = verified(event("refund.created", refund(metadata={})))
    assert found is not None
    assert (found.kind, found.idempotency_key) == ("refund_succeeded", None)


def dispute(status: str) -> dict[str, Any]:
    return {
        "id": "du_1Fake",
        "object": "dispute",
        "amount": 1000,
        "currency": "eur",
        "charge": "ch_1Fake",
        "payment_intent": "pi_3Fake1",
        "reason": "fraudulent",
        "status": status,
    }


@pytest.mark.parametrize(
    ("event_type", "status", "kind"),
    [
        ("charge.dispute.created", "needs_response", "dispute_opened"),
        ("charge.dispute.closed", "won", "dispute_won"),
        ("charge.dispute.closed", "warning_closed", "dispute_won"),
        ("charge.dispute.closed", "lost", "dispute_lost"),
    ],
)
def test_a_dispute_is_read_with_its_payment_intent_amount_and_reason(
    event_type: str, status: str, kind: str
) -> None:
    assert verified(event(event_type, dispute(status))) == ProviderEvent(
        "stripe",
        "evt_1Fake",
        kind,  # type: ignore[arg-type]  # one of EventKind, from the parameters
        "pi_3Fake1",
        object_reference="du_1Fake",
        amount=Money(1000, "EUR"),
        code="fraudulent",
    )


@pytest.mark.parametrize(
    "body",
    [
        event("refund.created", refund(status="failed")),
        event("charge.refunded", {"id": "ch_1Fake", "object": "charge", "amount_refunded": 400}),
        event("charge.dispute.closed", dispute("under_review")),
        event("customer.created", {"id": "cus_Ann", "object": "customer"}),
    ],
    ids=["failed-refund", "charge-refunded", "dispute-not-decided", "other-type"],
)
def test_genuine_events_the_ledger_does_not_act_on_are_none(body: bytes) -> None:
    assert verified(body) is None
