"""Audit of issue 6 outside the provider adapters: the payment processor, the invoice's
gateway bookkeeping, the inbound receiver and the outbound webhooks. Each test here
shows one defect found in the audit: it fails until that defect is fixed."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from commands import schemas as s
from commands.gateway_webhooks import GatewayWebhooks
from commands.http_app import http_app
from gateways.authorizenet import AuthorizeNetConfig, AuthorizeNetWebhooks
from gateways.port import (
    ChargeRequest,
    GatewayUnavailable,
    Outcome,
    Pending,
    Recorded,
    RefundRequest,
    RetryableError,
    Succeeded,
)
from ledger.errors import DomainError
from ledger.invoices import InvoiceStatus, period_invoice_id
from ledger.webhook_endpoints import check_url
from tests.integration.conftest import Shop

SIGNATURE_KEY = "anet-signature-key-for-tests"


class AnetLike:
    """A gateway named ``authorizenet`` that answers as that adapter does: charges are
    transactions ``T<n>`` (``held`` ones Pending, as a fraud review), refunds ``R<n>``.
    ``refund_lost`` makes the first refund's answer get lost (timeouts, then a look-up
    that gets no answer either), while Authorize.net did the refund."""

    name = "authorizenet"

    def __init__(self, held: bool = False, refund_lost: bool = False) -> None:
        self.held = held
        self.refund_lost = refund_lost
        self.charges: dict[str, str] = {}
        self.refunds: dict[str, str] = {}

    def charge(self, request: ChargeRequest) -> Outcome:
        reference = self.charges.setdefault(request.idempotency_key, f"T{len(self.charges) + 1}")
        if self.held:
            return Pending(reference, request.amount)
        return Succeeded(reference, request.amount)

    def refund(self, request: RefundRequest) -> Outcome:
        self.refunds.setdefault(request.idempotency_key, f"R{len(self.refunds) + 1}")
        if self.refund_lost:
            return RetryableError("timeout", "no answer in time")
        return Succeeded(self.refunds[request.idempotency_key], request.amount)

    def find_charge(self, request: ChargeRequest) -> Recorded | None:
        found = self.charges.get(request.idempotency_key)
        if found is None:
            return None
        return Pending(found, request.amount) if self.held else Succeeded(found, request.amount)

    def find_refund(self, request: RefundRequest) -> Recorded | None:
        if self.refund_lost:
            raise GatewayUnavailable("the transaction list did not answer")
        found = self.refunds.get(request.idempotency_key)
        return None if found is None else Succeeded(found, request.amount)


class Anet:
    """Posts Authorize.net notifications, signed as Authorize.net signs them."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.sent = 0

    def post(self, event_type: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.sent += 1
        body = json.dumps(
            {
                "notificationId": f"n-{self.sent}",
                "eventType": f"net.authorize.payment.{event_type}",
                "eventDate": "2025-01-31T09:00:00Z",
                "webhookId": "wh-1",
                "payload": {"entityName": "transaction", **payload},
            }
        ).encode()
        digest = hmac.new(SIGNATURE_KEY.encode(), body, hashlib.sha512).hexdigest().upper()
        response = self.client.post(
            "/webhooks/authorizenet", content=body, headers={"X-ANET-Signature": f"sha512={digest}"}
        )
        return response.status_code, response.json()


@pytest.fixture
def anet(shop: Shop) -> Iterator[Anet]:
    shop.projector.setup()  # as `subledger http` does
    config = AuthorizeNetConfig("login", "txkey", signature_key=SIGNATURE_KEY, currency="EUR")
    verifiers = {"authorizenet": AuthorizeNetWebhooks(config)}
    receiver = GatewayWebhooks(
        shop.ledger, shop.clock, verifiers, shop.projector.database, shop.projector.catch_up
    )
    with TestClient(http_app(receiver)) as client:
        yield Anet(client)


def subscribed(shop: Shop, gateway: AnetLike) -> UUID:
    """A customer on Basic (10 EUR a month) paying through ``gateway``; the first
    invoice's id, its charge sent."""
    shop.gateways.append(gateway)
    customer_id = shop.customer(with_card=False)
    shop.card(customer_id, token="pp_1", gateway="authorizenet", customer_reference="cp_1")
    sub_id = shop.subscribe(customer_id)
    shop.pay()
    return period_invoice_id(sub_id, 0)


def test_our_refund_reported_by_a_webhook_without_our_key_is_not_counted_twice(
    shop: Shop, anet: Anet
) -> None:
    """Authorize.net's refund notification carries no key of ours. When it arrives while
    our refund's answer is still unknown to the ledger (lost, set aside as unresolved),
    the receiver records it as a refund made in the dashboard (a second credit note);
    the processor then records our refund too: 10 EUR refunded twice on a 10 EUR
    invoice, and two invoice.refunded events."""
    gateway = AnetLike(refund_lost=True)
    invoice_id = subscribed(shop, gateway)
    assert shop.ledger.invoice(invoice_id).payment_reference == "T1"
    shop.projector.catch_up()  # payment_attempts knows T1
    shop.send(s.RefundInvoice, invoice_id=invoice_id, reason="asked")
    report = shop.pay()
    assert report.unresolved == 1  # Authorize.net refunded it; we do not know yet

    # Authorize.net tells of its refund R1 of T1.
    status, answer = anet.post("refund.created", {"id": "R1", "refTransId": "T1", "authAmount": 10})
    assert (status, answer["status"]) == (200, "accepted")
    gateway.refund_lost = False  # the transaction list answers again
    shop.pay()

    invoice = shop.ledger.invoice(invoice_id)
    assert invoice.refunded.amount == 1000, invoice.refund_references
    assert invoice.refunded <= invoice.amount_paid


def test_a_settlement_webhook_arriving_before_the_projection_is_not_lost(
    shop: Shop, anet: Anet
) -> None:
    """A charge held for review is recorded as processing; its ``fraud.approved``
    notification (no key of ours: found through ``payment_attempts``) arrives before the
    collections projection has read the PaymentProcessing event. It is answered 200
    ``ignored``, so Authorize.net never sends it again, and nothing else ever asks about
    a processing charge: the invoice stays open for good, the customer's money taken."""
    gateway = AnetLike(held=True)
    invoice_id = subscribed(shop, gateway)
    assert shop.ledger.invoice(invoice_id).processing_reference == "T1"

    status, answer = anet.post("fraud.approved", {"id": "T1", "authAmount": 10})

    # Later: the node ticks (projections, processor), days go by.
    shop.projector.catch_up()
    shop.pay()
    resent = status >= 300  # the provider would deliver it again
    if resent:
        status, answer = anet.post("fraud.approved", {"id": "T1", "authAmount": 10})
    assert shop.ledger.invoice(invoice_id).status is InvoiceStatus.PAID, answer


def test_a_processing_charge_is_asked_about_again_when_no_webhook_settles_it(
    shop: Shop,
) -> None:
    """The settings say webhook secrets are only needed to receive webhooks, yet a
    charge the gateway settles later (Pending) is only ever settled by one: the
    processor skips a processing attempt for good (``_awaits``), dunning cannot retry it
    (PaymentInFlight) and nothing asks the gateway. A week after Authorize.net approved
    the held charge, the invoice is still open."""
    gateway = AnetLike(held=True)
    invoice_id = subscribed(shop, gateway)
    assert shop.ledger.invoice(invoice_id).processing_reference == "T1"
    gateway.held = False  # the review approved it: find_charge now answers Succeeded

    shop.run_until(shop.clock.now() + timedelta(days=7))

    assert shop.ledger.invoice(invoice_id).status is InvoiceStatus.PAID


def test_an_endpoint_at_the_cloud_metadata_address_is_refused() -> None:
    """Only the scheme, host and credentials of a URL are checked. The node POSTs to it
    and keeps 200 characters of a non-2xx answer, shown by `subledger webhooks status`:
    a link-local URL (the cloud's instance metadata, which no receiver lives on) makes
    the node read its own instance's metadata for whoever may send commands."""
    with pytest.raises(DomainError):
        check_url("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
