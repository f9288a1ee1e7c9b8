"""The payment processor crashes at each point of a charge, and a new one, started on the
same database and the same gateway, carries on: every invoice is paid exactly once, and
no charge is forgotten. On SQLite and on PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from commands import schemas as s
from commands.payments import ProcessorReport
from gateways.port import (
    ChargeRequest,
    GatewayUnavailable,
    Outcome,
    Recorded,
    RefundRequest,
    RetryableError,
)
from gateways.sandbox import SandboxGateway
from ledger.invoices import Invoice, InvoiceStatus, payment_key, period_invoice_id
from tests.integration.conftest import Shop

CrashPoint = Literal["before_charge", "after_charge"]


class Crash(Exception):
    """The process died here."""


@dataclass
class Recording:
    """The sandbox, with a log of the calls made to it, and a crash at ``crash`` on the
    first charge."""

    sandbox: SandboxGateway
    crash: CrashPoint | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    name: str = "sandbox"

    def charge(self, request: ChargeRequest) -> Outcome:
        self.calls.append(("charge", request.idempotency_key))
        if self.crash == "before_charge":
            raise Crash
        outcome = self.sandbox.charge(request)
        if self.crash == "after_charge":
            raise Crash
        return outcome

    def refund(self, request: RefundRequest) -> Outcome:
        self.calls.append(("refund", request.idempotency_key))
        return self.sandbox.refund(request)

    def find_charge(self, request: ChargeRequest) -> Recorded | None:
        self.calls.append(("find_charge", request.idempotency_key))
        return self.sandbox.find_charge(request)

    def find_refund(self, request: RefundRequest) -> Recorded | None:
        self.calls.append(("find_refund", request.idempotency_key))
        return self.sandbox.find_refund(request)


def two_signups(shop: Shop) -> list[Invoice]:
    """Two customers sign up to Basic (10 EUR): two invoices, each awaiting its charge."""
    subs = [shop.subscribe(shop.customer()) for _ in range(2)]
    return [shop.ledger.invoice(period_invoice_id(sub_id, 0)) for sub_id in subs]


def assert_paid_once(shop: Shop, invoices: list[Invoice]) -> None:
    for invoice in invoices:
        after = shop.ledger.invoice(invoice.id)
        assert (after.status, after.attempts) == (InvoiceStatus.PAID, 1)
    assert [(c.key, c.amount.amount, c.outcome) for c in shop.sandbox.charges()] == [
        (payment_key(i.id, 1), 1000, "succeeded") for i in invoices
    ]
    assert shop.ledger.event_counts_by_type()["Invoice.PaymentSucceeded"] == len(invoices)


@pytest.mark.parametrize("crash", ["before_charge", "after_charge"])
def test_a_crash_around_the_gateway_call_charges_once_after_the_restart(
    shop: Shop, crash: CrashPoint
) -> None:
    first, second = invoices = two_signups(shop)
    key1, key2 = payment_key(first.id, 1), payment_key(second.id, 1)
    with shop.processor(Recording(shop.sandbox, crash)) as crashing, pytest.raises(Crash):
        crashing.run()
    restarted = Recording(shop.sandbox)
    with shop.processor(restarted) as again:
        report = again.run()
    assert report.charged == 2
    assert_paid_once(shop, invoices)
    # Before any charge after a restart, the gateway is asked what became of its key:
    # a charge that went through before the crash is recorded, not made again.
    resend = [] if crash == "after_charge" else [("charge", key1)]
    assert restarted.calls == [
        ("find_charge", key1),
        *resend,
        ("find_charge", key2),
        ("charge", key2),
    ]


def test_a_crash_after_recording_does_not_call_the_gateway_again(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoices = two_signups(shop)

    def crash(expected: int, position: int) -> None:
        raise Crash

    with shop.processor() as crashing:
        # Both answers are recorded; the process dies before its position moves.
        monkeypatch.setattr(crashing, "_move", crash)
        with pytest.raises(Crash):
            crashing.run()
    restarted = Recording(shop.sandbox)
    with shop.processor(restarted) as again:
        report = again.run()
    assert (report.charged, report.skipped) == (0, 2)
    assert restarted.calls == []
    assert_paid_once(shop, invoices)


def test_a_timeout_after_the_charge_is_recorded_as_paid(shop: Shop) -> None:
    customer_id = shop.customer(with_card=False)
    shop.card(customer_id, token="tok_timeoutAfterCharge")
    sub_id = shop.subscribe(customer_id)
    # The gateway charged, but its answer was lost: sent again with the same key, the
    # charge it recorded is the answer.
    assert shop.pay().charged == 1
    paid = shop.ledger.invoice(period_invoice_id(sub_id, 0))
    assert (paid.status, paid.attempts) == (InvoiceStatus.PAID, 1)
    assert [(c.key, c.amount.amount, c.outcome) for c in shop.sandbox.charges()] == [
        (payment_key(paid.id, 1), 1000, "succeeded")
    ]


@dataclass
class Unreachable:
    """A gateway that stopped answering: charges time out, look-ups cannot be made."""

    sandbox: SandboxGateway
    down: bool = True
    calls: list[str] = field(default_factory=list)
    name: str = "sandbox"

    def charge(self, request: ChargeRequest) -> Outcome:
        self.calls.append("charge")
        if self.down:
            return RetryableError("timeout", "no answer in time")
        return self.sandbox.charge(request)

    def refund(self, request: RefundRequest) -> Outcome:
        return self.sandbox.refund(request)

    def find_charge(self, request: ChargeRequest) -> Recorded | None:
        self.calls.append("find_charge")
        if self.down:
            raise GatewayUnavailable("no answer in time")
        return self.sandbox.find_charge(request)

    def find_refund(self, request: RefundRequest) -> Recorded | None:
        return self.sandbox.find_refund(request)


def test_a_charge_whose_fate_the_gateway_cannot_tell_waits_for_it_under_its_own_key(
    shop: Shop,
) -> None:
    gateway = Unreachable(shop.sandbox, down=False)
    with shop.processor(gateway) as processor:
        assert processor.run() == ProcessorReport()  # nothing to do: recovered
        first, second = invoices = two_signups(shop)
        gateway.down = True

        report = processor.run()
        # Three tries each, then the look-up fails: nothing recorded, both set aside, and
        # the position moves on (other gateways' requests are not held back).
        assert (report.unresolved, report.charged, report.declined) == (2, 0, 0)
        assert gateway.calls == (["charge"] * 3 + ["find_charge"]) * 2
        for invoice in invoices:
            after = shop.ledger.invoice(invoice.id)
            assert (after.pending is not None, after.failures) == (True, 0)
        # Still down: the next run only asks, and charges nothing.
        assert processor.run().unresolved == 2
        assert gateway.calls[8:] == ["find_charge"] * 2

        gateway.down = False
        report = processor.run()
        assert (report.charged, report.unresolved) == (2, 0)
        assert gateway.calls[10:] == ["find_charge", "charge"] * 2
    assert_paid_once(shop, invoices)
    assert shop.ledger.invoice(second.id).attempts == 1
    assert first.id != second.id


def test_a_deferred_charge_answered_by_webhook_meanwhile_is_not_sent(shop: Shop) -> None:
    customer_id = shop.customer()
    invoice_id = period_invoice_id(shop.subscribe(customer_id), 0)
    gateway = Unreachable(shop.sandbox)
    with shop.processor(gateway) as processor:
        assert processor.run().unresolved == 1
        # The gateway's webhook told the outcome while we could not ask.
        shop.send(
            s.SettlePayment,
            invoice_id=invoice_id,
            attempt=1,
            outcome="succeeded",
            reference="ch_by_webhook",
        )
        gateway.down = False
        calls = len(gateway.calls)
        assert processor.run() == ProcessorReport()
        assert gateway.calls[calls:] == []
    assert shop.ledger.invoice(invoice_id).payment_reference == "ch_by_webhook"
