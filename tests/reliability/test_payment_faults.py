"""Payment faults: the sandbox gateway times out 30% of the charges it would make, half
of them after charging (the answer is lost, the money moved); 30% of the look-ups by
idempotency key cannot reach it; 30% of refunds time out, half after refunding.

Customers sign up (a fifth of them on a plan of 19.99 EUR, a third with 19% VAT on top)
and are collected; some get part of their first invoice back; a month on, every
subscription renews, a twentieth of them on a card the bank refuses for good. Each day
the billing clock ticks and a payment processor, started afresh as after a restart, runs
until nothing is left to ask the gateway about.

Afterwards: every invoice is paid, or (the refused cards) uncollectible with its
subscription canceled by dunning; no payment awaits an answer; no invoice was charged
twice; and the gateway's own records of charges and refunds equal the ledger's, each
invoice and in total, to the cent. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Literal
from uuid import UUID

import pytest

from commands import schemas as s
from commands.accounts import derived_id
from commands.dispatch import handle_batch
from commands.payments import UNRESOLVED
from gateways.port import (
    ChargeRequest,
    GatewayUnavailable,
    Outcome,
    Recorded,
    RefundRequest,
    RetryableError,
)
from gateways.sandbox import SandboxGateway
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.invoices import Invoice, InvoiceStatus, period_invoice_id
from ledger.subscriptions import SubscriptionStatus
from tests.integration.conftest import Shop

SUBSCRIBERS = 2_000  # times --scale
FAULT_RATE = 0.3
SEED = 9
# Dunning retries up to 7 days after the first failure, and gives up the day after.
DAYS_COLLECTED = 9
RENEWAL_AFTER = timedelta(days=28)  # 31 Jan -> 28 Feb: the first renewal
REFUNDED = 250  # minor units, given back on every tenth signup invoice
# What each kind of customer pays a period: (plan, VAT) -> total in cents (19% of
# 19.99 is 3.7981, rounded to 3.80).
TOTALS = {
    ("basic", False): 1000,
    ("basic", True): 1190,
    ("plus", False): 1999,
    ("plus", True): 2379,
}
BATCH = 100
TIMEOUT = RetryableError("timeout", "The gateway did not answer in time.")
Fault = Literal["before", "after"]


@dataclass(frozen=True)
class Subscriber:
    """One subscriber of the story, by number."""

    number: int

    @property
    def plan(self) -> str:
        return "plus" if self.number % 5 == 0 else "basic"

    @property
    def taxed(self) -> bool:
        return self.number % 3 == 0

    @property
    def refunded(self) -> bool:
        return self.number % 10 == 1

    @property
    def refused_at_renewal(self) -> bool:
        return self.number % 20 == 7

    @property
    def id(self) -> UUID:
        return derived_id("customer", f"customer-{self.number}")

    @property
    def subscription_id(self) -> UUID:
        return derived_id("subscription", f"signup-{self.number}")

    @property
    def total(self) -> int:
        return TOTALS[self.plan, self.taxed]

    def signup(self) -> list[s.Command]:
        commands: list[s.Command] = [
            s.RegisterCustomer(
                command_id=f"customer-{self.number}",
                email=f"c{self.number}@example.com",
                name=f"Customer {self.number}",
                currency="EUR",
            ),
            card(self, "pm_1", f"tok_ok_{self.number}"),
        ]
        if self.taxed:
            commands.append(
                s.SetTaxRate(
                    command_id=f"vat-{self.number}", customer_id=self.id, percent=Decimal(19)
                )
            )
        commands.append(
            s.StartSubscription(
                command_id=f"signup-{self.number}", customer_id=self.id, plan_code=self.plan
            )
        )
        return commands


def card(subscriber: Subscriber, method_id: str, token: str) -> s.AddPaymentMethod:
    """A card made the default: ``token`` says how the sandbox answers its charges."""
    return s.AddPaymentMethod(
        command_id=f"card-{subscriber.number}-{method_id}",
        customer_id=subscriber.id,
        payment_method_id=method_id,
        token=token,
        last4="4242",
        exp_month=12,
        exp_year=2030,
        make_default=True,
    )


@dataclass
class Flaky:
    """The sandbox with faults: its own timeouts of charges (``timeout_rate``), plus
    look-ups that cannot reach it and refunds answered by a timeout, at the same rate.
    Counts what it did, to show the faults happened."""

    sandbox: SandboxGateway
    random: random.Random
    rate: float = FAULT_RATE
    name: str = "sandbox"
    counts: Counter[str] = field(default_factory=Counter)

    def charge(self, request: ChargeRequest) -> Outcome:
        outcome = self.sandbox.charge(request)
        self.counts["charge"] += 1
        if isinstance(outcome, RetryableError):
            charged = self.sandbox.find_charge(request) is not None
            self.counts["charge timeout " + ("after" if charged else "before")] += 1
        return outcome

    def refund(self, request: RefundRequest) -> Outcome:
        self.counts["refund"] += 1
        fault = self._fault()
        if fault == "before":
            return TIMEOUT
        outcome = self.sandbox.refund(request)
        return TIMEOUT if fault == "after" else outcome

    def find_charge(self, request: ChargeRequest) -> Recorded | None:
        self._reach()
        return self.sandbox.find_charge(request)

    def find_refund(self, request: RefundRequest) -> Recorded | None:
        self._reach()
        return self.sandbox.find_refund(request)

    def _reach(self) -> None:
        self.counts["look-up"] += 1
        if self.random.random() < self.rate:
            self.counts["look-up unavailable"] += 1
            raise GatewayUnavailable("the gateway did not answer in time")

    def _fault(self) -> Fault | None:
        if self.random.random() >= self.rate:
            return None
        fault: Fault = "after" if self.random.random() < 0.5 else "before"
        self.counts[f"refund timeout {fault}"] += 1
        return fault


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    with SandboxGateway(timeout_rate=FAULT_RATE, seed=SEED) as sandbox:
        yield Flaky(sandbox, random.Random(SEED))


@pytest.fixture
def shop(ledger: Ledger, clock: SimulatedClock, database_url: str) -> Iterator[Shop]:
    """Basic at 10 EUR a month (the shared catalog) and Plus at 19.99 EUR."""
    shop = Shop(ledger, clock, database_url)
    shop.open_catalog()
    shop.send(s.RegisterPlan, code="plus", name="Plus")
    shop.send(s.AddPrice, plan_code="plus", currency="EUR", amount=1999)
    yield shop
    shop.close()


def apply(shop: Shop, commands: list[s.Command]) -> None:
    """Applies ``commands`` the way the bus worker does, a batch per transaction; each
    must be accepted."""
    for start in range(0, len(commands), BATCH):
        answers = handle_batch(commands[start : start + BATCH], shop.ledger, shop.clock)
        refused = [answer for answer in answers if isinstance(answer, Exception)]
        assert not refused, refused[:3]


def collect(shop: Shop, gateway: Flaky, days: int) -> None:
    """Each day for ``days`` days from now: the billing clock ticks, and a processor,
    started afresh, runs until no request's fate is left unknown (bounded)."""
    start = shop.clock.now()
    for day in range(days + 1):
        shop.clock.advance_to(start + timedelta(days=day))
        shop.tick()
        with shop.processor(gateway) as processor:
            for _ in range(20):
                if processor.run().unresolved == 0:
                    break


def invoices(shop: Shop, subscribers: list[Subscriber]) -> list[Invoice]:
    """Every invoice of the story: each subscription's signup and first renewal."""
    return [
        shop.ledger.invoice(period_invoice_id(subscriber.subscription_id, period))
        for subscriber in subscribers
        for period in (0, 1)
    ]


def test_faulty_gateway_charges_every_invoice_once_and_agrees_with_the_ledger_to_the_cent(
    shop: Shop, flaky: Flaky, scale: int
) -> None:
    subscribers = [Subscriber(n) for n in range(SUBSCRIBERS * scale)]
    apply(shop, [command for subscriber in subscribers for command in subscriber.signup()])
    collect(shop, flaky, DAYS_COLLECTED)
    apply(
        shop,
        [
            s.RefundInvoice(
                command_id=f"refund-{c.number}",
                invoice_id=period_invoice_id(c.subscription_id, 0),
                amount=REFUNDED,
            )
            for c in subscribers
            if c.refunded
        ],
    )
    refused = [c for c in subscribers if c.refused_at_renewal]
    apply(shop, [card(c, "pm_2", "tok_chargeDeclined") for c in refused])
    shop.clock.advance(RENEWAL_AFTER - timedelta(days=DAYS_COLLECTED))
    collect(shop, flaky, DAYS_COLLECTED)

    assert_collected(shop, subscribers)
    assert_gateway_agrees(shop, flaky.sandbox, invoices(shop, subscribers))
    assert_refunds_agree(shop, flaky.sandbox, subscribers)
    assert_faults_happened(flaky.counts)


def assert_faults_happened(counts: Counter[str]) -> None:
    """About 30% of what could fail did, both before and after the money moved."""
    timeouts = counts["charge timeout before"] + counts["charge timeout after"]
    assert 0.2 < timeouts / counts["charge"] < 0.35, counts
    assert 0.2 < counts["look-up unavailable"] / counts["look-up"] < 0.4, counts
    assert min(counts["charge timeout after"], counts["refund timeout after"]) > 0, counts
    assert min(counts["charge timeout before"], counts["refund timeout before"]) > 0, counts


def assert_collected(shop: Shop, subscribers: list[Subscriber]) -> None:
    """Every invoice is paid at its total, except the renewals on a refused card: dunning
    gave up on them and canceled their subscriptions. Nothing awaits the gateway."""
    for subscriber in subscribers:
        signup, renewal = (
            shop.ledger.invoice(period_invoice_id(subscriber.subscription_id, period))
            for period in (0, 1)
        )
        assert (signup.status, signup.total.amount) == (InvoiceStatus.PAID, subscriber.total)
        assert renewal.total.amount == subscriber.total
        subscription = shop.ledger.subscription(subscriber.subscription_id)
        if subscriber.refused_at_renewal:
            assert renewal.status is InvoiceStatus.UNCOLLECTIBLE
            assert renewal.attempts == renewal.failures >= 1
            assert subscription.status is SubscriptionStatus.CANCELED
        else:
            assert renewal.status is InvoiceStatus.PAID
            assert subscription.status is SubscriptionStatus.ACTIVE
        assert (signup.pending, renewal.pending) == (None, None)
    assert shop.projector.database.query(f"SELECT idempotency_key FROM {UNRESOLVED}") == []


def assert_gateway_agrees(shop: Shop, sandbox: SandboxGateway, all_invoices: list[Invoice]) -> None:
    """The gateway's succeeded charges are the ledger's payments: one per paid invoice,
    same key, reference and amount; none for any other invoice."""
    charged: dict[UUID, list[tuple[str, str, int]]] = defaultdict(list)
    for charge in sandbox.charges():
        if charge.outcome == "succeeded":
            invoice_id = UUID(charge.key.partition(":")[0])
            charged[invoice_id].append((charge.key, charge.reference, charge.amount.amount))
    charged_twice = {invoice_id: made for invoice_id, made in charged.items() if len(made) > 1}
    assert charged_twice == {}
    paid = {
        invoice.id: [
            (invoice.paid_by.idempotency_key, invoice.payment_reference, invoice.amount_paid.amount)
        ]
        for invoice in all_invoices
        if invoice.paid_by is not None
    }
    assert charged == paid
    collected = sum(invoice.amount_paid.amount for invoice in all_invoices)
    assert sum(c.amount.amount for c in sandbox.charges() if c.outcome == "succeeded") == collected
    expected = sum(i.total.amount for i in all_invoices if i.status is InvoiceStatus.PAID)
    assert collected == expected


def assert_refunds_agree(
    shop: Shop, sandbox: SandboxGateway, subscribers: list[Subscriber]
) -> None:
    """Each refund the gateway made is one the ledger recorded, per invoice and in total."""
    by_charge: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for refund in sandbox.refunds():
        if refund.outcome == "succeeded" and refund.reference is not None:
            by_charge[refund.charge_reference].append((refund.reference, refund.amount.amount))
    refunded = [
        shop.ledger.invoice(period_invoice_id(c.subscription_id, 0))
        for c in subscribers
        if c.refunded
    ]
    assert len(by_charge) == len(refunded)
    for invoice in refunded:
        assert invoice.payment_reference is not None
        made = by_charge[invoice.payment_reference]
        assert [amount for _, amount in made] == [REFUNDED]
        assert ([ref for ref, _ in made], invoice.refunded.amount) == (
            invoice.refund_references,
            REFUNDED,
        )
        assert invoice.pending_refunds == {}
    assert sum(r.amount.amount for r in sandbox.refunds() if r.outcome == "succeeded") == (
        REFUNDED * len(refunded)
    )
