"""A subscription paid through Razorpay: Ann's card is a Razorpay token saved under her
Razorpay customer; the billing clock renews her plan and the payment processor charges
the token through a local fake of Razorpay's API, once per invoice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
from pytest_httpserver import HTTPServer

from gateways.razorpay import NOTE_KEY, RazorpayGateway, receipt_for
from ledger.invoices import Invoice, InvoiceStatus, payment_key, period_invoice_id
from tests.fakes import threaded_server
from tests.fakes.razorpay import FakeRazorpay
from tests.integration.conftest import Shop

TOKEN = "token_AnnVisa4242"
CUSTOMER = "cust_Ann0000001"
PHONE = "+919876543210"


def on(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    with threaded_server() as server:
        yield server


@pytest.fixture
def razorpay(server: HTTPServer, shop: Shop) -> Iterator[FakeRazorpay]:
    """The fake, and the shop's gateway pointed at it."""
    fake = FakeRazorpay(server)
    gateway = RazorpayGateway(fake.config(timeout=5.0))
    shop.gateways.append(gateway)
    yield fake
    gateway.close()


def ann_on_basic(shop: Shop) -> UUID:
    customer_id = shop.customer(with_card=False, phone=PHONE)
    shop.card(customer_id, gateway="razorpay", token=TOKEN, customer_reference=CUSTOMER)
    return shop.subscribe(customer_id)


def test_a_renewal_is_charged_once_on_the_razorpay_token(
    shop: Shop, razorpay: FakeRazorpay
) -> None:
    sub_id = ann_on_basic(shop)
    shop.pay()  # the signup invoice, 31 Jan
    shop.run_until(on(2, 28))  # the first renewal

    invoices = [shop.ledger.invoice(period_invoice_id(sub_id, n)) for n in range(2)]
    orders = {order["receipt"]: order for order in razorpay.orders.values()}
    payments = {payment["order_id"]: payment for payment in razorpay.payments.values()}
    assert len(orders) == len(payments) == 2
    for invoice in invoices:
        key = payment_key(invoice.id, 1)
        order = orders[receipt_for(key)]
        payment = payments[order["id"]]
        assert invoice.status is InvoiceStatus.PAID
        assert invoice.payment_reference == payment["id"]
        assert (payment["amount"], payment["currency"], payment["status"]) == (
            1000,
            "EUR",
            "captured",
        )
        assert (payment["token_id"], payment["customer_id"], payment["email"]) == (
            TOKEN,
            CUSTOMER,
            "ann@example.com",
        )
        assert payment["contact"] == PHONE
        assert payment["notes"] == {NOTE_KEY: key}
    assert razorpay.calls("POST", "/v1/payments/create/recurring") == 2


def test_a_declined_renewal_fails_the_invoice_with_razorpay_s_reason(
    shop: Shop, razorpay: FakeRazorpay
) -> None:
    sub_id = ann_on_basic(shop)
    shop.pay()
    razorpay.tokens[TOKEN] = ("failed", "insufficient_funds")  # the card ran dry in February
    shop.run_until(on(2, 28))

    renewal = shop.ledger.invoice(period_invoice_id(sub_id, 1))
    failures = [
        e for e in shop.ledger.events.get(renewal.id) if isinstance(e, Invoice.PaymentFailed)
    ]
    assert [(f.attempt, f.code) for f in failures] == [(1, "insufficient_funds")]
    assert (renewal.status, renewal.failures, renewal.payment_reference) == (
        InvoiceStatus.OPEN,
        1,
        None,
    )
    statuses = sorted(payment["status"] for payment in razorpay.payments.values())
    assert statuses == ["captured", "failed"]
