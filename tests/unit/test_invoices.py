"""Invoices: figures fixed when issued, then payment attempts, dunning, voids and refunds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from ledger.dunning import DunningPolicy
from ledger.errors import (
    InvalidRefund,
    InvoiceNotOpen,
    NoRetryDue,
    PaymentInFlight,
    RefundExceedsPaid,
)
from ledger.invoices import Invoice, InvoiceLine, InvoiceStatus, LineKind, PaymentRequest
from ledger.money import Money
from ledger.tax import TaxRate
from tests.unit.test_customers import method

ISSUED = datetime(2025, 3, 1, 9, tzinfo=UTC)
POLICY = DunningPolicy()  # retries after 1, 3, 5 and 7 days, then gives up
VAT = TaxRate("VAT", Decimal(20), inclusive=False)
CARD = method("pm_1")
OTHER_CARD = method("pm_2", token="tok_other")


def eur(cents: int) -> Money:
    return Money(cents, "EUR")


def later(days: float) -> datetime:
    return ISSUED + timedelta(days=days)


def period(cents: int) -> InvoiceLine:
    return InvoiceLine(LineKind.PERIOD, "pro (month)", eur(cents), ISSUED, later(31))


def discount(cents: int) -> InvoiceLine:
    return InvoiceLine(LineKind.DISCOUNT, "coupon SPRING", eur(-cents))


def issue(*charges: InvoiceLine, tax_rate: TaxRate | None = None, credit: int = 0) -> Invoice:
    invoice = Invoice.issue(
        uuid4(), uuid4(), uuid4(), 0, "renewal", list(charges), tax_rate, eur(credit), ISSUED
    )
    invoice.collect_events()
    return invoice


def awaiting(cents: int = 1000) -> Invoice:
    """An open invoice whose first attempt, with CARD, awaits the gateway's answer."""
    invoice = issue(period(cents))
    invoice.request_payment(CARD, ISSUED, POLICY)
    invoice.collect_events()
    return invoice


def declined(code: str = "card_declined") -> Invoice:
    """An invoice whose first attempt, with CARD, was declined on the day it was issued."""
    invoice = awaiting()
    assert invoice.record_failure(1, code, "declined", ISSUED, POLICY)
    return invoice


def paid(cents: int = 1000) -> Invoice:
    invoice = awaiting(cents)
    assert invoice.record_success(1, "ch_1", later(0.1))
    return invoice


def figures(invoice: Invoice) -> tuple[int, ...]:
    return tuple(
        m.amount
        for m in (
            invoice.subtotal,
            invoice.discount,
            invoice.tax,
            invoice.total,
            invoice.credit_applied,
            invoice.amount_due,
        )
    )


# Issuing


def test_an_invoice_adds_its_lines_less_the_discount_and_adds_exclusive_tax() -> None:
    invoice = issue(period(1000), discount(200), tax_rate=VAT)
    # subtotal, discount, tax (20% of 800), total, credit applied, amount due
    assert figures(invoice) == (1000, 200, 160, 960, 0, 960)
    assert invoice.lines[-1] == InvoiceLine(LineKind.TAX, "VAT 20% (added)", eur(160))
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.number == f"INV-{invoice.id.hex[:12].upper()}"


def test_inclusive_tax_is_the_part_of_the_total_that_is_tax() -> None:
    inclusive = TaxRate("VAT", Decimal(20), inclusive=True)
    invoice = issue(period(1000), discount(200), tax_rate=inclusive)
    assert figures(invoice) == (1000, 200, 133, 800, 0, 800)  # 800 / 6 = 133.33


def test_proration_lines_add_up_to_the_subtotal() -> None:
    credit = InvoiceLine(LineKind.PRORATION_CREDIT, "unused basic", eur(-500))
    debit = InvoiceLine(LineKind.PRORATION_DEBIT, "remaining pro", eur(1000))
    invoice = issue(credit, debit)
    assert figures(invoice) == (500, 0, 0, 500, 0, 500)
    assert [line.kind for line in invoice.lines] == [
        LineKind.PRORATION_CREDIT,
        LineKind.PRORATION_DEBIT,
    ]


def test_without_a_tax_rate_or_anything_to_tax_there_is_no_tax_line() -> None:
    untaxed = issue(period(1000))
    assert (untaxed.tax, len(untaxed.lines)) == (eur(0), 1)
    free = issue(period(1000), discount(1000), tax_rate=VAT)
    assert figures(free) == (1000, 1000, 0, 0, 0, 0)
    assert [line.kind for line in free.lines] == [LineKind.PERIOD, LineKind.DISCOUNT]


def test_account_credit_is_applied_to_the_total() -> None:
    assert figures(issue(period(1000), tax_rate=VAT, credit=300)) == (1000, 0, 200, 1200, 300, 900)


def test_an_invoice_the_credit_covers_is_paid_at_once() -> None:
    invoice = issue(period(1000), tax_rate=VAT, credit=5000)
    assert figures(invoice) == (1000, 0, 200, 1200, 1200, 0)
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.amount_paid == eur(0)  # nothing went through a gateway


def test_an_invoice_never_totals_less_than_zero() -> None:
    credit = InvoiceLine(LineKind.PRORATION_CREDIT, "unused pro", eur(-1000))
    debit = InvoiceLine(LineKind.PRORATION_DEBIT, "remaining basic", eur(500))
    with pytest.raises(ValueError, match="credit the balance instead"):
        issue(credit, debit)


# Payment attempts


def test_a_payment_is_requested_with_a_key_of_the_invoice_and_attempt() -> None:
    invoice = issue(period(1000), tax_rate=VAT, credit=200)
    invoice.request_payment(CARD, ISSUED, POLICY)
    [requested] = invoice.collect_events()
    assert isinstance(requested, Invoice.PaymentRequested)
    assert requested.request == PaymentRequest(
        attempt=1,
        payment_method_id="pm_1",
        gateway="sandbox",
        amount=eur(1000),
        idempotency_key=f"{invoice.id}:payment:1",
    )
    with pytest.raises(PaymentInFlight, match="attempt 1"):
        invoice.request_payment(CARD, ISSUED, POLICY)


def test_a_success_is_recorded_once() -> None:
    invoice = awaiting()
    assert invoice.record_success(1, "ch_1", later(0.1))
    assert (invoice.status, invoice.payment_reference, invoice.amount_paid) == (
        InvoiceStatus.PAID,
        "ch_1",
        eur(1000),
    )
    assert not invoice.record_success(1, "ch_1", later(0.2))
    assert not invoice.record_failure(1, "card_declined", "late", later(0.2), POLICY)
    assert len(invoice.collect_events()) == 1
    with pytest.raises(InvoiceNotOpen, match="is paid"):
        invoice.request_payment(CARD, later(1), POLICY)


def test_a_failure_is_recorded_once_with_its_retry_day() -> None:
    invoice = declined()
    assert (invoice.failures, invoice.next_retry_at, invoice.dunning_ends_at) == (
        1,
        later(1),
        later(7),
    )
    assert invoice.awaits_retry
    assert not invoice.record_failure(1, "card_declined", "again", ISSUED, POLICY)
    assert not invoice.record_success(1, "ch_late", ISSUED)
    assert not invoice.record_success(2, "ch_unknown", ISSUED)  # never requested
    assert invoice.failures == 1


def test_an_attempt_without_a_payment_method_fails_at_once_and_waits_for_one() -> None:
    invoice = issue(period(1000))
    invoice.request_payment(None, ISSUED, POLICY)
    [failed] = invoice.collect_events()
    assert isinstance(failed, Invoice.PaymentFailed)
    assert (failed.attempt, failed.payment_method_id, failed.code) == (1, None, "no_payment_method")
    assert (failed.next_retry_at, failed.dunning_ends_at) == (None, later(7))
    assert invoice.pending is None
    with pytest.raises(NoRetryDue):
        invoice.retry(None, later(3), POLICY)
    invoice.retry(CARD, later(3), POLICY)  # a method at last: retried at once
    assert invoice.pending is not None
    assert invoice.pending.attempt == 2


# Dunning retries


def test_an_invoice_that_never_failed_has_nothing_to_retry() -> None:
    with pytest.raises(NoRetryDue, match="has not failed"):
        issue(period(1000)).retry(CARD, later(1), POLICY)


def test_a_retry_waits_for_its_day_unless_another_method_is_used() -> None:
    invoice = declined()
    with pytest.raises(NoRetryDue, match="no retry"):
        invoice.retry(CARD, later(0.5), POLICY)
    invoice.retry(OTHER_CARD, later(0.5), POLICY)
    assert invoice.pending is not None
    assert (invoice.pending.attempt, invoice.pending.payment_method_id) == (2, "pm_2")


def test_a_retry_on_its_day_uses_the_same_method() -> None:
    invoice = declined()
    invoice.retry(CARD, later(1), POLICY)
    assert invoice.pending is not None
    assert invoice.pending.attempt == 2
    assert invoice.pending.idempotency_key == f"{invoice.id}:payment:2"
    with pytest.raises(PaymentInFlight):
        invoice.retry(CARD, later(1), POLICY)


def test_a_hard_decline_is_retried_only_with_another_method() -> None:
    invoice = declined("expired_card")
    assert invoice.next_retry_at is None
    assert not invoice.dunning_ran_out(later(6))
    with pytest.raises(NoRetryDue):
        invoice.retry(CARD, later(3), POLICY)
    invoice.retry(OTHER_CARD, later(3), POLICY)
    assert invoice.pending is not None


def test_dunning_runs_out_after_the_last_retry_fails() -> None:
    invoice = declined()
    for attempt, day in enumerate((1, 3, 5, 7), start=2):
        assert not invoice.dunning_ran_out(later(day))
        with pytest.raises(NoRetryDue):
            invoice.give_up(later(day))
        invoice.retry(CARD, later(day), POLICY)
        assert invoice.record_failure(attempt, "card_declined", "no", later(day), POLICY)
    # Retries counted from the first failure, never pushed back by the later ones.
    assert invoice.failures == 5
    assert (invoice.next_retry_at, invoice.dunning_ends_at) == (None, later(7))
    assert invoice.dunning_ran_out(later(7))
    invoice.give_up(later(7))
    assert invoice.status is InvoiceStatus.UNCOLLECTIBLE
    assert not invoice.awaits_retry


def test_an_invoice_waiting_for_a_new_method_runs_out_when_dunning_ends() -> None:
    invoice = declined("lost_card")
    assert not invoice.dunning_ran_out(later(7) - timedelta(seconds=1))
    assert invoice.dunning_ran_out(later(7))


def test_a_recovered_invoice_is_paid_by_the_later_attempt() -> None:
    invoice = declined()
    invoice.retry(CARD, later(1), POLICY)
    assert invoice.record_success(2, "ch_2", later(1))
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.paid_by is not None
    assert (invoice.paid_by.attempt, invoice.next_retry_at) == (2, None)
    assert not invoice.dunning_ran_out(later(30))


# Voiding


def test_an_open_invoice_can_be_voided_but_not_one_paid_or_awaiting_an_answer() -> None:
    invoice = declined()
    invoice.void(later(2))
    assert (invoice.status, invoice.next_retry_at) == (InvoiceStatus.VOID, None)
    with pytest.raises(InvoiceNotOpen, match="is void"):
        invoice.retry(OTHER_CARD, later(3), POLICY)
    with pytest.raises(InvoiceNotOpen, match="is paid"):
        paid().void(later(1))
    with pytest.raises(PaymentInFlight):
        awaiting().void(later(1))


# Refunds


def test_only_a_payment_through_a_gateway_is_refunded() -> None:
    with pytest.raises(InvalidRefund, match="not paid through a gateway"):
        issue(period(1000), credit=1000).request_refund(eur(100), "goodwill", later(1))
    with pytest.raises(InvalidRefund, match="not paid through a gateway"):
        declined().request_refund(eur(100), "goodwill", later(1))


def test_a_refund_is_a_credit_note_through_the_gateway_that_took_the_payment() -> None:
    invoice = paid()
    invoice.collect_events()
    request = invoice.request_refund(eur(300), "goodwill", later(2))
    assert (request.number, request.amount, request.gateway, request.charge_reference) == (
        1,
        eur(300),
        "sandbox",
        "ch_1",
    )
    assert request.idempotency_key == f"{invoice.id}:refund:1"
    [requested] = invoice.collect_events()
    assert isinstance(requested, Invoice.RefundRequested)
    assert requested.reason == "goodwill"


def test_refunds_never_exceed_what_was_paid_counting_those_pending() -> None:
    invoice = paid()
    invoice.request_refund(eur(300), "goodwill", later(2))
    assert (invoice.refundable, invoice.refunded) == (eur(700), eur(0))
    with pytest.raises(RefundExceedsPaid, match=r"7\.00 EUR left to refund"):
        invoice.request_refund(eur(701), "too much", later(2))
    assert invoice.record_refund(1, "re_1", later(3))
    assert not invoice.record_refund(1, "re_1", later(3))
    assert (invoice.refundable, invoice.refunded) == (eur(700), eur(300))
    invoice.request_refund(eur(700), "the rest", later(4))
    assert invoice.refundable == eur(0)
    with pytest.raises(RefundExceedsPaid):
        invoice.request_refund(eur(1), "one more cent", later(4))


def test_a_failed_refund_releases_its_amount() -> None:
    invoice = paid()
    invoice.request_refund(eur(1000), "canceled", later(2))
    assert invoice.record_refund_failure(1, "charge_disputed", "disputed", later(3))
    assert not invoice.record_refund_failure(1, "charge_disputed", "disputed", later(3))
    assert (invoice.refundable, invoice.refunded) == (eur(1000), eur(0))
    assert invoice.request_refund(eur(1000), "again", later(4)).number == 2


def test_account_credit_applied_is_not_refunded_through_the_gateway() -> None:
    invoice = issue(period(1000), credit=400)
    invoice.request_payment(CARD, ISSUED, POLICY)
    invoice.record_success(1, "ch_1", ISSUED)
    assert invoice.refundable == eur(600)


@pytest.mark.parametrize(
    "amount", [Money(0, "EUR"), Money(-100, "EUR"), Money(100, "USD")], ids=str
)
def test_a_refund_is_a_positive_amount_in_the_invoice_currency(amount: Money) -> None:
    with pytest.raises(InvalidRefund):
        paid().request_refund(amount, "bad", later(1))
