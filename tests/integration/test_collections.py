"""Collections as the projections show them: invoices with their payment attempts and
credit notes, what the billing clock must do for invoices in dunning (``due_collections``),
and the same story in the customer's transaction history.

Stories on SQLite and PostgreSQL. The payment processor answers through the sandbox
gateway, whose card tokens decide each charge (``tok_chargeDeclined`` declines,
``tok_chargeDeclinedExpiredCard`` is a hard decline, others succeed). Figures are worked
out by hand: Basic is 10.00 EUR a month, the clock starts on 2025-01-31 at 09:00 UTC, so
the first renewal falls on 2025-02-28 at 09:00; dunning retries 1, 3, 5 and 7 days after
the first failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from commands import schemas as s
from commands.bootstrap import projection_database
from commands.lifecycle import advance_subscription, end_dunning, retry_payment
from commands.payments import PaymentProcessor, ProcessorReport
from commands.settings import persistence_env
from gateways.port import Gateways, RefundRequest
from gateways.sandbox import SandboxGateway
from ledger.invoices import refund_key
from ledger.money import Money
from projections.collections import (
    AttemptRow,
    Collections,
    CreditNoteRow,
    InvoiceRow,
    attempts_of,
    credit_notes_of,
    invoices_of,
)
from projections.database import Database
from projections.history import TransactionHistory, customer_history
from projections.runner import Projector
from projections.values import read_instant, read_uuid
from tests.integration.conftest import Shop

START = datetime(2025, 1, 31, 9, tzinfo=UTC)


def at(month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


class Collecting:
    """The shop, and what runs beside it on its own: the payment processor and the two
    projections (in batches of 4 events, so that stories cross batches)."""

    def __init__(self, shop: Shop, database_url: str) -> None:
        env = persistence_env(database_url)
        self.shop = shop
        self.ledger = shop.ledger
        self.clock = shop.clock
        self.gateway = SandboxGateway()
        self.processor = PaymentProcessor(
            self.ledger,
            Gateways([self.gateway]),
            projection_database(env),
            self.clock,
            wait=lambda *_: None,
        )
        self.projector = Projector(
            self.ledger, projection_database(env), [Collections(), TransactionHistory()], 4
        )

    def close(self) -> None:
        self.processor.database.close()
        self.projector.close()

    def go(self, instant: datetime) -> None:
        self.clock.advance_to(instant)

    def pay(self) -> ProcessorReport:
        """The payment processor carries out every request so far, answering now."""
        return self.processor.run()

    def tables(self) -> Database:
        """The projections' tables, caught up."""
        self.projector.catch_up()
        return self.projector.database

    def invoice(self, invoice_id: UUID) -> InvoiceRow:
        customer_id = self.ledger.invoice(invoice_id).customer_id
        (row,) = [
            row for row in invoices_of(self.tables(), customer_id) if row.invoice_id == invoice_id
        ]
        return row

    def due(self) -> list[tuple[UUID, str, datetime]]:
        """``due_collections`` as the billing clock reads it, every row."""
        rows = self.tables().query(
            "SELECT invoice_id, kind, due_at FROM due_collections ORDER BY due_at"
        )
        return [(read_uuid(i), kind, read_instant(due_at)) for i, kind, due_at in rows]

    def number(self, invoice_id: UUID) -> str:
        """The number the ledger gives the invoice."""
        return self.ledger.invoice(invoice_id).number

    def charge_reference(self, invoice_id: UUID) -> str:
        reference = self.ledger.invoice(invoice_id).payment_reference
        assert reference is not None
        return reference


@pytest.fixture
def collecting(shop: Shop, database_url: str) -> Iterator[Collecting]:
    harness = Collecting(shop, database_url)
    yield harness
    harness.close()


def invoice_row(
    c: Collecting, invoice_id: UUID, customer_id: UUID, subscription_id: UUID, **fields: Any
) -> InvoiceRow:
    """An invoice of Basic for period 0, issued at the start, open and never tried, with
    ``fields`` changed."""
    row = InvoiceRow(
        invoice_id=invoice_id,
        number=c.number(invoice_id),
        customer_id=customer_id,
        subscription_id=subscription_id,
        period_index=0,
        reason="signup",
        currency="EUR",
        subtotal=1000,
        discount=0,
        tax=0,
        total=1000,
        credit_applied=0,
        amount_due=1000,
        status="open",
        issued_at=START,
        paid_at=None,
        attempts=0,
        failures=0,
        last_decline_code=None,
        last_failed_method_id=None,
        pending_method_id=None,
        next_retry_at=None,
        dunning_ends_at=None,
        new_method_at=None,
        refunded=0,
        updated_at=START,
    )
    return replace(row, **fields)


# The stories


@dataclass
class Account:
    customer_id: UUID
    subscription_id: UUID
    invoice_id: UUID  # the latest invoice


def signs_up_with_a_coupon_and_tax(c: Collecting) -> Account:
    """Ann (card pm_1, VAT 20% added) takes Basic with WELCOME10 (10% off the first
    period): 10.00 - 1.00 discount + 1.80 VAT = 10.80 EUR, paid five minutes later."""
    c.shop.send(s.RegisterCoupon, code="WELCOME10", percent_off=Decimal(10))
    customer_id = c.shop.customer()
    c.shop.send(s.SetTaxRate, customer_id=customer_id, name="VAT", percent=Decimal(20))
    started = c.shop.send(
        s.StartSubscription, customer_id=customer_id, plan_code="basic", coupon="WELCOME10"
    )
    account = Account(
        customer_id, UUID(started["subscription_id"]), UUID(started["invoices"][0]["invoice_id"])
    )
    figures = {"discount": 100, "tax": 180, "total": 1080, "amount_due": 1080}
    assert c.invoice(account.invoice_id) == invoice_row(
        c,
        account.invoice_id,
        customer_id,
        account.subscription_id,
        attempts=1,
        pending_method_id="pm_1",
        **figures,
    )
    assert c.due() == []

    c.go(at(1, 31, 9, 5))
    assert c.pay().charged == 1
    assert c.invoice(account.invoice_id) == invoice_row(
        c,
        account.invoice_id,
        customer_id,
        account.subscription_id,
        status="paid",
        paid_at=at(1, 31, 9, 5),
        attempts=1,
        updated_at=at(1, 31, 9, 5),
        **figures,
    )
    assert attempts_of(c.tables(), account.invoice_id) == [
        AttemptRow(
            account.invoice_id,
            1,
            "pm_1",
            "sandbox",
            1080,
            "EUR",
            START,
            "succeeded",
            None,
            c.charge_reference(account.invoice_id),
            at(1, 31, 9, 5),
        )
    ]
    assert c.due() == []
    return account


def renewal_is_declined(c: Collecting, account: Account) -> None:
    """Ann makes a declining card her default; the renewal on 02-28 (12.00 EUR: no more
    discount, 2.00 VAT) is declined: retry a day after that first failure."""
    c.shop.card(account.customer_id, "chargeDeclined")
    c.shop.send(
        s.SwitchDefaultPaymentMethod,
        customer_id=account.customer_id,
        payment_method_id="chargeDeclined",
    )
    c.go(at(2, 28))
    advance_subscription(c.ledger, account.subscription_id, c.clock.now())
    (_, renewal) = invoices_of(c.tables(), account.customer_id)
    account.invoice_id = renewal.invoice_id
    assert c.due() == []  # the first attempt awaits its answer

    assert c.pay().declined == 1
    assert c.invoice(account.invoice_id) == invoice_row(
        c,
        account.invoice_id,
        account.customer_id,
        account.subscription_id,
        period_index=1,
        reason="renewal",
        tax=200,
        total=1200,
        amount_due=1200,
        issued_at=at(2, 28),
        attempts=1,
        failures=1,
        last_decline_code="card_declined",
        last_failed_method_id="chargeDeclined",
        next_retry_at=at(3, 1),
        dunning_ends_at=at(3, 7),
        updated_at=at(2, 28),
    )
    assert c.due() == [(account.invoice_id, "payment_retry", at(3, 1))]


def switches_to_a_good_card(c: Collecting, account: Account) -> None:
    """Ann switches back to pm_1 at 15:00: a retry is due at once; switching to the
    declining card again at 16:00 takes that back; pm_1 again at 17:00, and the retry
    then made pays the invoice."""
    switch = s.SwitchDefaultPaymentMethod
    c.go(at(2, 28, 15))
    c.shop.send(switch, customer_id=account.customer_id, payment_method_id="pm_1")
    assert c.due() == [(account.invoice_id, "payment_retry", at(2, 28, 15))]
    c.go(at(2, 28, 16))
    c.shop.send(switch, customer_id=account.customer_id, payment_method_id="chargeDeclined")
    assert c.due() == [(account.invoice_id, "payment_retry", at(3, 1))]
    c.go(at(2, 28, 17))
    c.shop.send(switch, customer_id=account.customer_id, payment_method_id="pm_1")
    assert c.due() == [(account.invoice_id, "payment_retry", at(2, 28, 17))]

    assert retry_payment(c.ledger, account.invoice_id, c.clock.now())
    assert c.due() == []  # attempt 2 awaits its answer
    assert c.pay().charged == 1
    row = c.invoice(account.invoice_id)
    assert (row.status, row.paid_at, row.attempts, row.failures) == ("paid", at(2, 28, 17), 2, 1)
    assert (row.next_retry_at, row.new_method_at, row.pending_method_id) == (None, None, None)
    assert [
        (a.attempt, a.payment_method_id, a.outcome, a.code)
        for a in attempts_of(c.tables(), account.invoice_id)
    ] == [(1, "chargeDeclined", "failed", "card_declined"), (2, "pm_1", "succeeded", None)]
    assert c.due() == []


def refunds(c: Collecting, invoice_id: UUID, amount: int, reason: str) -> None:
    """A refund is a credit note, requested now and refunded once the processor has run
    (a minute later)."""
    requested_at = c.clock.now()
    c.shop.send(s.RefundInvoice, invoice_id=invoice_id, amount=amount, reason=reason)
    note = CreditNoteRow(
        invoice_id, 1, amount, "EUR", reason, requested_at, "requested", None, None, None
    )
    assert credit_notes_of(c.tables(), invoice_id) == [note]
    assert c.invoice(invoice_id).refunded == 0

    c.go(requested_at + timedelta(minutes=1))
    assert c.pay().refunded == 1
    found = c.gateway.find_refund(
        RefundRequest(refund_key(invoice_id, 1), "", Money(amount, "EUR"))
    )
    assert found is not None
    note.status, note.reference = "refunded", found.reference
    note.answered_at = requested_at + timedelta(minutes=1)
    assert credit_notes_of(c.tables(), invoice_id) == [note]
    assert c.invoice(invoice_id).refunded == amount
    assert c.due() == []


def hard_decline_runs_out(c: Collecting) -> Account:
    """Bob's only card has expired at the bank: a hard decline, never retried on the same
    card; dunning ends 7 days after it, and the invoice is written off."""
    first = c.clock.now()
    customer_id = c.shop.customer(with_card=False)
    c.shop.card(customer_id, "chargeDeclinedExpiredCard")
    started = c.shop.send(s.StartSubscription, customer_id=customer_id, plan_code="basic")
    invoice_id = UUID(started["invoices"][0]["invoice_id"])
    assert c.pay().declined == 1
    row = c.invoice(invoice_id)
    assert (row.status, row.last_decline_code, row.next_retry_at, row.dunning_ends_at) == (
        "open",
        "expired_card",
        None,
        first + timedelta(days=7),
    )
    assert (invoice_id, "dunning_end", first + timedelta(days=7)) in c.due()

    c.go(first + timedelta(days=7))
    assert end_dunning(c.ledger, invoice_id, c.clock.now())
    assert c.invoice(invoice_id).status == "uncollectible"
    assert invoice_id not in [due[0] for due in c.due()]
    return Account(customer_id, UUID(started["subscription_id"]), invoice_id)


def card_added_while_in_flight(c: Collecting) -> Account:
    """Cleo's card declines; she adds a good one (as default) an hour after signing up,
    while the charge awaits its answer. Once the decline comes, the retry with the new
    card is due from the instant she added it, and the ledger agrees."""
    first = c.clock.now()
    customer_id = c.shop.customer(with_card=False)
    c.shop.card(customer_id, "chargeDeclined")
    started = c.shop.send(s.StartSubscription, customer_id=customer_id, plan_code="basic")
    invoice_id = UUID(started["invoices"][0]["invoice_id"])
    c.go(first + timedelta(hours=1))
    c.shop.send(
        s.AddPaymentMethod,
        customer_id=customer_id,
        payment_method_id="pm_new",
        token="tok_new",
        last4="4444",
        exp_month=1,
        exp_year=2031,
        make_default=True,
    )
    assert invoice_id not in [due[0] for due in c.due()]

    c.go(first + timedelta(hours=2))
    assert c.pay().declined == 1
    assert (invoice_id, "payment_retry", first + timedelta(hours=1)) in c.due()
    assert retry_payment(c.ledger, invoice_id, c.clock.now())
    assert c.pay().charged == 1
    assert c.invoice(invoice_id).status == "paid"
    return Account(customer_id, UUID(started["subscription_id"]), invoice_id)


def gets_a_free_month(c: Collecting) -> None:
    """Dan's coupon takes 100% off his first month: nothing is due, so the invoice is paid
    when issued, without any payment attempt."""
    c.shop.send(s.RegisterCoupon, code="FREE100", percent_off=Decimal(100))
    customer_id = c.shop.customer()
    started = c.shop.send(
        s.StartSubscription, customer_id=customer_id, plan_code="basic", coupon="FREE100"
    )
    invoice_id = UUID(started["invoices"][0]["invoice_id"])
    now = c.clock.now()
    assert c.invoice(invoice_id) == invoice_row(
        c,
        invoice_id,
        customer_id,
        UUID(started["subscription_id"]),
        discount=1000,
        total=0,
        amount_due=0,
        status="paid",
        issued_at=now,
        paid_at=now,
        updated_at=now,
    )
    assert attempts_of(c.tables(), invoice_id) == []
    assert invoice_id not in [due[0] for due in c.due()]


# The tests


def test_a_paid_signup_invoice_has_its_attempt_and_nothing_is_due(collecting: Collecting) -> None:
    signs_up_with_a_coupon_and_tax(collecting)


def test_an_invoice_with_nothing_due_is_paid_when_issued(collecting: Collecting) -> None:
    gets_a_free_month(collecting)


def test_a_declined_renewal_is_retried_on_the_schedule_of_its_first_failure(
    collecting: Collecting,
) -> None:
    account = signs_up_with_a_coupon_and_tax(collecting)
    renewal_is_declined(collecting, account)
    # The retry on 03-01 is declined too: the next is 3 days after the first failure.
    collecting.go(at(3, 1))
    assert retry_payment(collecting.ledger, account.invoice_id, collecting.clock.now())
    assert collecting.pay().declined == 1
    row = collecting.invoice(account.invoice_id)
    assert (row.attempts, row.failures, row.next_retry_at) == (2, 2, at(3, 3))
    assert collecting.due() == [(account.invoice_id, "payment_retry", at(3, 3))]


def test_a_new_default_card_makes_the_retry_due_at_once(collecting: Collecting) -> None:
    account = signs_up_with_a_coupon_and_tax(collecting)
    renewal_is_declined(collecting, account)
    switches_to_a_good_card(collecting, account)


def test_a_hard_decline_waits_for_the_end_of_dunning(collecting: Collecting) -> None:
    account = hard_decline_runs_out(collecting)
    number = collecting.number(account.invoice_id)
    lines = customer_history(collecting.tables(), account.customer_id)
    # At one instant, lines follow the event sequence: the ledger records a payment's
    # outcome on the invoice before what it does to the subscription.
    assert [(line.kind, line.description) for line in lines[3:]] == [
        ("invoice.issued", f"Invoice {number} (signup): 10.00 EUR, 10.00 EUR due"),
        (
            "invoice.payment_failed",
            f"Payment of 10.00 EUR for {number} failed (attempt 1, expired_card): no retry",
        ),
        ("subscription.past_due", f"Past due: the payment of {number} failed"),
        ("invoice.uncollectible", f"{number} marked uncollectible: 10.00 EUR written off"),
        ("subscription.dunning_exhausted", f"Dunning of {number} ran out: canceled"),
    ]


def test_a_card_added_while_a_charge_is_in_flight_counts_once_it_is_declined(
    collecting: Collecting,
) -> None:
    card_added_while_in_flight(collecting)


def test_a_refund_is_a_credit_note_until_the_gateway_answers(collecting: Collecting) -> None:
    account = signs_up_with_a_coupon_and_tax(collecting)
    collecting.go(at(2, 1))
    refunds(collecting, account.invoice_id, 400, "goodwill")


def test_the_history_tells_the_collection_story_in_order(collecting: Collecting) -> None:
    account = signs_up_with_a_coupon_and_tax(collecting)
    signup = collecting.number(account.invoice_id)
    renewal_is_declined(collecting, account)
    switches_to_a_good_card(collecting, account)
    collecting.go(at(3, 2))
    refunds(collecting, account.invoice_id, 500, "goodwill")
    renewal = collecting.number(account.invoice_id)

    lines = customer_history(collecting.tables(), account.customer_id)
    assert [(line.occurred_at, line.kind, line.amount, line.description) for line in lines] == [
        (START, "customer.registered", None, "Registered, paying in EUR"),
        (
            START,
            "customer.payment_method_added",
            None,
            "Payment method visa ending 4242 added via sandbox (default)",
        ),
        (START, "customer.tax_rate_set", None, "Tax rate set to VAT 20% (added)"),
        (
            START,
            "subscription.started",
            1000,
            "Signed up to basic-month-eur-v1: 10.00 EUR per month",
        ),
        (
            START,
            "subscription.discount_applied",
            None,
            "Coupon WELCOME10 applied: 10% off for 1 period",
        ),
        (START, "invoice.issued", 1080, f"Invoice {signup} (signup): 10.80 EUR, 10.80 EUR due"),
        (
            at(1, 31, 9, 5),
            "invoice.payment_succeeded",
            1080,
            f"Payment of 10.80 EUR for {signup} succeeded (attempt 1)",
        ),
        (
            at(1, 31, 9, 5),
            "customer.payment_method_added",
            None,
            "Payment method visa ending 4242 added via sandbox",
        ),
        (
            at(1, 31, 9, 5),
            "customer.default_payment_method_switched",
            None,
            "Default payment method is now chargeDeclined",
        ),
        (at(2, 28), "subscription.discount_ended", None, "Coupon WELCOME10 ended"),
        (at(2, 28), "subscription.renewed", 1000, "Renewed basic-month-eur-v1: 10.00 EUR"),
        (
            at(2, 28),
            "invoice.issued",
            1200,
            f"Invoice {renewal} (renewal): 12.00 EUR, 12.00 EUR due",
        ),
        (
            at(2, 28),
            "invoice.payment_failed",
            1200,
            f"Payment of 12.00 EUR for {renewal} failed (attempt 1, card_declined): "
            "retry on 2025-03-01",
        ),
        (at(2, 28), "subscription.past_due", None, f"Past due: the payment of {renewal} failed"),
        *(
            (
                at(2, 28, hour),
                "customer.default_payment_method_switched",
                None,
                f"Default payment method is now {method}",
            )
            for hour, method in ((15, "pm_1"), (16, "chargeDeclined"), (17, "pm_1"))
        ),
        (
            at(2, 28, 17),
            "invoice.payment_succeeded",
            1200,
            f"Payment of 12.00 EUR for {renewal} succeeded (attempt 2)",
        ),
        (at(2, 28, 17), "subscription.recovered", None, f"Active again: {renewal} is settled"),
        (
            at(3, 2),
            "invoice.refund_requested",
            500,
            f"Refund 1 of 5.00 EUR on {renewal} requested: goodwill",
        ),
        (
            at(3, 2, 9, 1),
            "invoice.refund_succeeded",
            500,
            f"Refund 1 of 5.00 EUR on {renewal} succeeded",
        ),
    ]
    invoice_lines = [line for line in lines if line.kind.startswith("invoice.")]
    invoices = invoices_of(collecting.tables(), account.customer_id)
    assert {line.invoice_id for line in invoice_lines} == {row.invoice_id for row in invoices}
    assert {line.subscription_id for line in invoice_lines} == {account.subscription_id}


def dump(database: Database, projector: Projector) -> dict[str, list[tuple[Any, ...]]]:
    tables = [table for p in projector.projections.values() for table in p.tables]
    return {table: sorted(database.query(f"SELECT * FROM {table}"), key=repr) for table in tables}


def test_a_rebuild_writes_what_the_batches_wrote(collecting: Collecting) -> None:
    """Caught up step by step, 4 events a batch, then rebuilt in one batch and in batches
    of one event: the same rows."""
    account = signs_up_with_a_coupon_and_tax(collecting)
    renewal_is_declined(collecting, account)
    switches_to_a_good_card(collecting, account)
    collecting.go(at(3, 2))
    refunds(collecting, account.invoice_id, 500, "goodwill")
    hard_decline_runs_out(collecting)
    card_added_while_in_flight(collecting)
    gets_a_free_month(collecting)
    # And an invoice left in dunning.
    collecting.go(at(3, 31))
    collecting.shop.send(
        s.SwitchDefaultPaymentMethod,
        customer_id=account.customer_id,
        payment_method_id="chargeDeclined",
    )
    advance_subscription(collecting.ledger, account.subscription_id, collecting.clock.now())
    collecting.pay()

    projector = collecting.projector
    incremental = dump(collecting.tables(), projector)
    assert all(incremental.values())
    projector.rebuild()
    assert dump(projector.database, projector) == incremental
    projector.batch_size = 1
    projector.rebuild()
    assert dump(projector.database, projector) == incremental
