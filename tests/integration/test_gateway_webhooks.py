"""Inbound webhooks end to end: a provider's signed delivery, POSTed to ``subledger
http``, settles a charge the gateway processes later, records refunds made in its
dashboard and disputes, once per event id; forged, altered and stale deliveries change
nothing. Stripe's signature scheme is used; every provider's verifier is tested with its
own module."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from commands.gateway_webhooks import GatewayWebhooks
from commands.http_app import http_app
from gateways.port import (
    ChargeRequest,
    Outcome,
    Pending,
    RefundRequest,
    Succeeded,
)
from gateways.stripe import StripeConfig, StripeWebhooks
from ledger.invoices import InvoiceStatus, payment_key, period_invoice_id
from ledger.subscriptions import SubscriptionStatus
from projections.collections import CREDIT_NOTES
from tests.integration.conftest import Shop

SECRET = "whsec_test_secret"


class SlowBank:
    """A gateway named like Stripe that settles every charge later (a bank debit)."""

    name = "stripe"

    def __init__(self) -> None:
        self.charged: list[str] = []

    def charge(self, request: ChargeRequest) -> Outcome:
        self.charged.append(request.idempotency_key)
        return Pending(f"pi_{len(self.charged)}", request.amount)

    def refund(self, request: RefundRequest) -> Outcome:
        return Succeeded(f"re_{request.idempotency_key}", request.amount)

    def find_charge(self, request: ChargeRequest) -> None:
        return None

    def find_refund(self, request: RefundRequest) -> None:
        return None


class Provider:
    """Signs Stripe events as Stripe does, and posts them to the app."""

    def __init__(self, client: TestClient, shop: Shop) -> None:
        self.client = client
        self.shop = shop
        self.sent = 0

    def event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.sent += 1
        return {"id": f"evt_{self.sent}", "type": event_type, "data": {"object": obj}}

    def post(
        self,
        event: dict[str, Any],
        secret: str = SECRET,
        signed_at: datetime | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(event).encode()
        t = int((signed_at or self.shop.clock.now()).timestamp())
        digest = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
        response = self.client.post(
            "/webhooks/stripe",
            content=body if body is not None else raw,
            headers={"Stripe-Signature": f"t={t},v1={digest}"},
        )
        return response.status_code, response.json()


@pytest.fixture
def provider(shop: Shop) -> Iterator[Provider]:
    shop.gateways.append(SlowBank())
    shop.projector.setup()  # as `subledger http` does
    verifiers = {"stripe": StripeWebhooks(StripeConfig(api_key="sk_test", webhook_secret=SECRET))}
    receiver = GatewayWebhooks(
        shop.ledger, shop.clock, verifiers, shop.projector.database, shop.projector.catch_up
    )
    with TestClient(http_app(receiver)) as client:
        yield Provider(client, shop)


def signed_up(shop: Shop) -> tuple[UUID, UUID]:
    """A customer on Basic (10 EUR) paying by a Stripe debit; the first invoice's charge
    is processing at the gateway."""
    customer_id = shop.customer(with_card=False)
    shop.card(customer_id, token="pm_debit", gateway="stripe", customer_reference="cus_1")
    sub_id = shop.subscribe(customer_id)
    report = shop.pay()
    assert report.processing == 1
    return sub_id, period_invoice_id(sub_id, 0)


def intent(invoice_id: UUID, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 1000,
        "amount_received": 1000 if status == "succeeded" else 0,
        "currency": "eur",
        "status": status,
        "metadata": {"idempotency_key": payment_key(invoice_id, 1)},
        **fields,
    }


def test_a_processing_charge_is_settled_by_the_gateways_webhook_once(
    shop: Shop, provider: Provider
) -> None:
    _, invoice_id = signed_up(shop)
    before = shop.ledger.invoice(invoice_id)
    assert before.status is InvoiceStatus.OPEN
    assert before.processing_reference == "pi_1"
    assert shop.pay().skipped == 0  # a processing charge is not sent again

    event = provider.event("payment_intent.succeeded", intent(invoice_id, "succeeded"))
    status, answer = provider.post(event)

    assert status == 200
    assert answer["status"] == "accepted"
    assert answer["command"] == "invoice.settle_payment"
    paid = shop.ledger.invoice(invoice_id)
    assert paid.status is InvoiceStatus.PAID
    assert paid.payment_reference == "pi_1"
    # The provider sends it again (it did not hear our 200): the same answer, no event.
    assert provider.post(event) == (status, answer)
    assert shop.ledger.invoice(invoice_id).version == paid.version


def test_a_failed_debit_puts_the_subscription_past_due(shop: Shop, provider: Provider) -> None:
    sub_id, invoice_id = signed_up(shop)
    failure = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "no"}
    event = provider.event(
        "payment_intent.payment_failed",
        intent(invoice_id, "requires_payment_method", last_payment_error=failure),
    )

    status, answer = provider.post(event)

    assert (status, answer["status"]) == (200, "accepted")
    invoice = shop.ledger.invoice(invoice_id)
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.failures == 1
    assert invoice.next_retry_at is not None
    assert shop.ledger.subscription(sub_id).status is SubscriptionStatus.PAST_DUE


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "altered body", "stale", "from the future", "no signature"],
)
def test_forged_altered_or_stale_deliveries_change_nothing(
    shop: Shop, provider: Provider, tamper: str
) -> None:
    _, invoice_id = signed_up(shop)
    event = provider.event("payment_intent.succeeded", intent(invoice_id, "succeeded"))
    version = shop.ledger.invoice(invoice_id).version
    now = shop.clock.now()

    if tamper == "wrong secret":
        status, answer = provider.post(event, secret="whsec_forged")
    elif tamper == "altered body":
        altered = json.dumps(event).replace('"amount": 1000', '"amount": 1').encode()
        status, answer = provider.post(event, body=altered)
    elif tamper == "stale":
        status, answer = provider.post(event, signed_at=now - timedelta(minutes=6))
    elif tamper == "from the future":
        status, answer = provider.post(event, signed_at=now + timedelta(minutes=6))
    else:
        response = provider.client.post("/webhooks/stripe", content=json.dumps(event))
        status, answer = response.status_code, response.json()

    assert status == 400
    assert "error" in answer
    assert shop.ledger.invoice(invoice_id).version == version


def paid_by_webhook(shop: Shop, provider: Provider) -> UUID:
    _, invoice_id = signed_up(shop)
    provider.post(provider.event("payment_intent.succeeded", intent(invoice_id, "succeeded")))
    shop.projector.catch_up()  # the collections know the charge's reference now
    return invoice_id


def test_a_refund_made_in_the_dashboard_is_found_by_its_charge_and_recorded(
    shop: Shop, provider: Provider
) -> None:
    invoice_id = paid_by_webhook(shop, provider)
    refund = {"id": "re_dash", "object": "refund", "amount": 400, "currency": "eur"}
    refund |= {"status": "succeeded", "payment_intent": "pi_1", "metadata": {}}
    event = provider.event("refund.created", refund)

    status, answer = provider.post(event)
    again = provider.event("refund.created", refund)  # a second event for the same refund
    assert provider.post(again)[1]["result"]["recorded"] is False

    assert (status, answer["command"]) == (200, "invoice.record_gateway_refund")
    invoice = shop.ledger.invoice(invoice_id)
    assert invoice.refunded.amount == 400
    assert invoice.refund_references == ["re_dash"]
    shop.projector.catch_up()
    with shop.projector.database.transaction() as tx:
        [note] = CREDIT_NOTES.load(tx, "invoice_id", [str(invoice_id)])
    assert (note.amount, note.status, note.reference) == (400, "refunded", "re_dash")
    assert note.reason == "refunded at the gateway"


def test_a_lost_dispute_takes_back_what_is_left_of_the_payment(
    shop: Shop, provider: Provider
) -> None:
    invoice_id = paid_by_webhook(shop, provider)
    dispute = {"id": "dp_1", "object": "dispute", "amount": 1000, "currency": "eur"}
    dispute |= {"payment_intent": "pi_1", "reason": "fraudulent", "status": "needs_response"}

    opened = provider.post(provider.event("charge.dispute.created", dispute))
    assert shop.ledger.invoice(invoice_id).disputes == {"dp_1": "open"}
    closed = provider.post(provider.event("charge.dispute.closed", dispute | {"status": "lost"}))

    assert (opened[0], closed[0]) == (200, 200)
    assert closed[1]["result"]["dispute"] == "lost"
    invoice = shop.ledger.invoice(invoice_id)
    assert invoice.refunded.amount == 1000
    assert invoice.status is InvoiceStatus.PAID  # paid, then charged back in full


def test_a_won_dispute_leaves_the_money(shop: Shop, provider: Provider) -> None:
    invoice_id = paid_by_webhook(shop, provider)
    dispute = {"id": "dp_2", "object": "dispute", "amount": 1000, "currency": "eur"}
    dispute |= {"payment_intent": "pi_1", "reason": "product_not_received", "status": "won"}

    status, answer = provider.post(provider.event("charge.dispute.closed", dispute))

    assert (status, answer["result"]["dispute"]) == (200, "won")
    assert shop.ledger.invoice(invoice_id).refunded.amount == 0


def test_events_about_charges_that_are_not_ours_are_ignored(shop: Shop, provider: Provider) -> None:
    foreign = {"id": "pi_elsewhere", "amount": 500, "amount_received": 500, "currency": "eur"}
    status, answer = provider.post(provider.event("payment_intent.succeeded", foreign))
    unused = provider.post(provider.event("customer.created", {"id": "cus_9"}))

    assert (status, answer["status"]) == (200, "ignored")
    assert unused == (200, {"status": "ignored", "reason": "an event the ledger does not use"})


def test_a_gateway_without_a_webhook_secret_is_not_found(provider: Provider) -> None:
    response = provider.client.post("/webhooks/paypal", content=b"{}")
    health = provider.client.get("/health")

    assert response.status_code == 404
    assert health.json() == {"status": "ok", "webhooks": ["stripe"]}


def test_an_oversized_body_is_refused(provider: Provider) -> None:
    response = provider.client.post("/webhooks/stripe", content=b"x" * 1_000_001)
    assert response.status_code == 413


def test_stripe_time_is_the_injected_clock(shop: Shop) -> None:
    # The shop's clock is in 2025: a delivery signed "now" by the wall clock is stale.
    assert shop.clock.now() < datetime.now(UTC) - timedelta(days=30)
