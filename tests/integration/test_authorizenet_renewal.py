"""A subscription paid through Authorize.net (a local fake of its JSON API), renewed by the
billing clock and collected by the payment processor, on SQLite and on PostgreSQL.

The shop's catalog: Basic 10 EUR a month. The clock starts on Fri 31 Jan 2025 at 09:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest
from pytest_httpserver import HTTPServer

from gateways.authorizenet import AuthorizeNetConfig, AuthorizeNetGateway, short_id
from ledger.invoices import Invoice, InvoiceStatus, payment_key, period_invoice_id
from tests.fakes.authorizenet import LOGIN, TRANSACTION_KEY, FakeAuthorizeNet
from tests.integration.conftest import Shop

CUSTOMER_PROFILE, PAYMENT_PROFILE = "500100", "500200"


@pytest.fixture
def authorizenet(shop: Shop, httpserver: HTTPServer) -> Iterator[FakeAuthorizeNet]:
    fake = FakeAuthorizeNet()
    fake.add_profile(CUSTOMER_PROFILE, PAYMENT_PROFILE)
    config = AuthorizeNetConfig(LOGIN, TRANSACTION_KEY, fake.install(httpserver), currency="EUR")
    gateway = AuthorizeNetGateway(config)
    shop.gateways.append(gateway)
    yield fake
    gateway.close()


def subscriber(shop: Shop) -> UUID:
    """Ann, on Basic, paying with a card saved in her Authorize.net customer profile."""
    customer_id = shop.customer(with_card=False)
    shop.card(
        customer_id,
        gateway="authorizenet",
        token=PAYMENT_PROFILE,
        customer_reference=CUSTOMER_PROFILE,
    )
    sub_id = shop.subscribe(customer_id)
    shop.pay()  # the signup invoice
    return sub_id


def invoice(shop: Shop, sub_id: UUID, period_index: int) -> Invoice:
    return shop.ledger.invoice(period_invoice_id(sub_id, period_index))


def test_a_renewal_is_charged_once_through_authorize_net(
    shop: Shop, authorizenet: FakeAuthorizeNet
) -> None:
    sub_id = subscriber(shop)
    shop.run_until(datetime(2025, 2, 28, 9, tzinfo=UTC))
    signup, renewal = invoice(shop, sub_id, 0), invoice(shop, sub_id, 1)
    charges = authorizenet.charges()
    assert [(c.invoice_number, c.amount, c.customer_profile_id) for c in charges] == [
        (short_id(payment_key(signup.id, 1)), Decimal("10.00"), CUSTOMER_PROFILE),
        (short_id(payment_key(renewal.id, 1)), Decimal("10.00"), CUSTOMER_PROFILE),
    ]
    assert (renewal.reason, renewal.status, renewal.payment_reference) == (
        "renewal",
        InvoiceStatus.PAID,
        charges[1].trans_id,
    )
    assert shop.sandbox.charges() == []
    shop.run_until(datetime(2025, 2, 28, 10, tzinfo=UTC))  # nothing is due: nothing charged
    assert len(authorizenet.charges()) == 2


def test_a_declined_renewal_fails_the_invoice_with_the_decline_code(
    shop: Shop, authorizenet: FakeAuthorizeNet
) -> None:
    sub_id = subscriber(shop)
    authorizenet.add_profile(CUSTOMER_PROFILE, PAYMENT_PROFILE, "decline")
    shop.run_until(datetime(2025, 2, 28, 9, tzinfo=UTC))
    renewal = invoice(shop, sub_id, 1)
    failures = [
        event
        for event in shop.ledger.repository.event_store.get(renewal.id)
        if isinstance(event, Invoice.PaymentFailed)
    ]
    assert [(f.attempt, f.code) for f in failures] == [(1, "card_declined")]
    assert (renewal.status, renewal.failures) == (InvoiceStatus.OPEN, 1)
    (declined,) = [t for t in authorizenet.transactions if t.status == "declined"]
    assert declined.invoice_number == short_id(payment_key(renewal.id, 1))
