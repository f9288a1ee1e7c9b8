"""Renewals collected through the PayPal adapter, against the local fake PayPal, on SQLite
and PostgreSQL: a customer's saved PayPal wallet pays each period once, and a declined
renewal fails with PayPal's reason in our terms.

The shop's clock starts on Fri 31 Jan 2025 at 09:00 UTC; Basic is 10 EUR a month, so the
first renewal is on 28 Feb.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
from pytest_httpserver import HTTPServer

from gateways.paypal import PayPalGateway
from ledger.invoices import Invoice, InvoiceStatus, payment_key, period_invoice_id
from tests.fakes import threaded_server
from tests.fakes.paypal import FakePayPal
from tests.integration.conftest import Shop

RENEWAL = datetime(2025, 2, 28, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    with threaded_server() as server:
        yield server


@pytest.fixture
def fake(server: HTTPServer) -> FakePayPal:
    return FakePayPal(server)


@pytest.fixture
def paypal_shop(shop: Shop, fake: FakePayPal) -> Iterator[Shop]:
    gateway = PayPalGateway(fake.config())
    shop.gateways.append(gateway)
    yield shop
    gateway.close()


def paypal_customer(shop: Shop, token: str = "vault-ok") -> UUID:
    customer_id = shop.customer(with_card=False)
    shop.card(customer_id, gateway="paypal", token=token)
    return customer_id


def test_a_renewal_is_paid_once_from_the_saved_paypal_wallet(
    paypal_shop: Shop, fake: FakePayPal
) -> None:
    sub_id = paypal_shop.subscribe(paypal_customer(paypal_shop))
    paypal_shop.pay()

    paypal_shop.run_until(RENEWAL)
    paypal_shop.run_until(RENEWAL)  # a second tick and run change nothing

    first, renewal = (paypal_shop.ledger.invoice(period_invoice_id(sub_id, n)) for n in (0, 1))
    captures = fake.completed()
    assert [(c["invoice_id"], c["amount"]) for c in captures] == [
        (payment_key(first.id, 1), {"currency_code": "EUR", "value": "10.00"}),
        (payment_key(renewal.id, 1), {"currency_code": "EUR", "value": "10.00"}),
    ]
    assert (renewal.status, renewal.payment_reference) == (InvoiceStatus.PAID, captures[1]["id"])
    assert paypal_shop.sandbox.charges() == []


def test_a_declined_renewal_fails_with_paypal_s_reason(paypal_shop: Shop, fake: FakePayPal) -> None:
    customer_id = paypal_customer(paypal_shop)
    sub_id = paypal_shop.subscribe(customer_id)
    paypal_shop.pay()
    # The payer's wallet can no longer pay: PayPal declines the next capture.
    paypal_shop.card(
        customer_id, "pm_2", gateway="paypal", token="vault-declined", make_default=True
    )

    paypal_shop.run_until(RENEWAL)

    renewal = paypal_shop.ledger.invoice(period_invoice_id(sub_id, 1))
    failures = [
        event
        for event in paypal_shop.ledger.events.get(renewal.id)
        if isinstance(event, Invoice.PaymentFailed)
    ]
    assert [(f.attempt, f.payment_method_id, f.code) for f in failures] == [
        (1, "pm_2", "card_declined")
    ]
    assert renewal.status is InvoiceStatus.OPEN
    assert len(fake.completed()) == 1  # the first period only
