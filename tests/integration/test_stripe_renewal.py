"""A subscription paid through Stripe (a local fake of its API), renewed by the billing
clock and collected by the payment processor, on SQLite and on PostgreSQL.

The shop's catalog: Basic 10 EUR a month. The clock starts on Fri 31 Jan 2025 at 09:00 UTC,
so the first renewal falls on 28 Feb at 09:00.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
from pytest_httpserver import HTTPServer

from gateways.stripe import StripeConfig, StripeGateway
from ledger.invoices import Invoice, InvoiceStatus, payment_key, period_invoice_id
from tests.fakes import threaded_server
from tests.fakes.stripe import API_KEY, FakeStripe
from tests.integration.conftest import Shop

CUSTOMER = "cus_Ann"
RENEWAL = datetime(2025, 2, 28, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    with threaded_server() as running:
        yield running


@pytest.fixture
def stripe(shop: Shop, server: HTTPServer) -> Iterator[FakeStripe]:
    fake = FakeStripe(server)
    gateway = StripeGateway(StripeConfig(API_KEY, api_base=fake.url, timeout=5.0))
    shop.gateways.append(gateway)
    yield fake
    gateway.close()


def subscriber(shop: Shop) -> tuple[UUID, UUID]:
    """Ann, on Basic, paying with a card saved at her Stripe customer; the signup paid."""
    customer_id = shop.customer(with_card=False)
    shop.card(customer_id, gateway="stripe", token="pm_card_visa", customer_reference=CUSTOMER)
    sub_id = shop.subscribe(customer_id)
    shop.pay()
    return customer_id, sub_id


def invoice(shop: Shop, sub_id: UUID, period_index: int) -> Invoice:
    return shop.ledger.invoice(period_invoice_id(sub_id, period_index))


def test_a_renewal_is_charged_once_through_stripe(shop: Shop, stripe: FakeStripe) -> None:
    _, sub_id = subscriber(shop)

    shop.run_until(RENEWAL)

    signup, renewal = invoice(shop, sub_id, 0), invoice(shop, sub_id, 1)
    intents = list(stripe.intents.values())
    assert [
        (i["metadata"]["idempotency_key"], i["amount"], i["currency"], i["customer"], i["status"])
        for i in intents
    ] == [
        (payment_key(signup.id, 1), 1000, "eur", CUSTOMER, "succeeded"),
        (payment_key(renewal.id, 1), 1000, "eur", CUSTOMER, "succeeded"),
    ]
    assert (renewal.reason, renewal.status, renewal.payment_reference) == (
        "renewal",
        InvoiceStatus.PAID,
        intents[1]["id"],
    )
    assert shop.sandbox.charges() == []
    shop.run_until(datetime(2025, 2, 28, 10, tzinfo=UTC))  # nothing is due: nothing charged
    assert len(stripe.intents) == 2


def test_a_declined_renewal_fails_the_invoice_with_the_decline_code(
    shop: Shop, stripe: FakeStripe
) -> None:
    customer_id, sub_id = subscriber(shop)
    shop.card(
        customer_id,
        method_id="pm_2",
        gateway="stripe",
        token="pm_card_visa_chargeDeclinedExpiredCard",
        customer_reference=CUSTOMER,
        make_default=True,
    )

    shop.run_until(RENEWAL)

    renewal = invoice(shop, sub_id, 1)
    failures = [
        event
        for event in shop.ledger.repository.event_store.get(renewal.id)
        if isinstance(event, Invoice.PaymentFailed)
    ]
    assert [(f.attempt, f.code, f.next_retry_at) for f in failures] == [
        (1, "expired_card", None)  # a hard decline: no retry on the same card
    ]
    assert (renewal.status, renewal.failures) == (InvoiceStatus.OPEN, 1)
    declined = list(stripe.intents.values())[-1]
    assert (declined["metadata"]["idempotency_key"], declined["status"]) == (
        payment_key(renewal.id, 1),
        "requires_payment_method",
    )
    assert len(stripe.intents) == 2
