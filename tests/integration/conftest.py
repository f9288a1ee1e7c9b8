"""A small driver that sends commands the way a service would, with fresh command ids,
and runs the billing clock and the payment processor (on a sandbox gateway of its own)
the way ``subledger serve`` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import count
from typing import Any
from uuid import UUID

import pytest

from commands import schemas as s
from commands.billing_clock import BillingClock, TickReport
from commands.bootstrap import projection_database, projector
from commands.dispatch import handle
from commands.payments import PaymentProcessor, ProcessorReport
from commands.settings import persistence_env
from gateways.port import Gateway, Gateways
from gateways.sandbox import SandboxGateway
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from projections.database import Database
from projections.runner import Projector


class Shop:
    def __init__(
        self, ledger: Ledger, clock: SimulatedClock, database_url: str | None = None
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        # Where the projections live (the ledger's own database): needed by tick and pay.
        self.database_url = database_url
        self.sandbox = SandboxGateway()
        self.gateways: list[Gateway] = [self.sandbox]  # add a real provider's adapter here
        self._ids = count(1)
        self._projector: Projector | None = None
        self._processor: PaymentProcessor | None = None

    def send(self, command_type: type[s.Command], **fields: Any) -> dict[str, Any]:
        fields.setdefault("command_id", f"cmd-{next(self._ids)}")
        return handle(command_type(**fields), self.ledger, self.clock)

    def open_catalog(self) -> None:
        """Basic 10 EUR and Pro 20 EUR a month (200 a year), Pro with a 14-day trial."""
        self.send(s.RegisterPlan, code="basic", name="Basic")
        self.send(s.AddPrice, plan_code="basic", currency="EUR", amount=1000)
        self.send(s.RegisterPlan, code="pro", name="Pro", features=["API"])
        self.send(s.AddPrice, plan_code="pro", currency="EUR", amount=2000, trial_days=14)
        self.send(s.AddPrice, plan_code="pro", currency="EUR", amount=20000, interval="year")

    def customer(self, with_card: bool = True, phone: str | None = None) -> UUID:
        result = self.send(
            s.RegisterCustomer, email="ann@example.com", name="Ann", currency="EUR", phone=phone
        )
        customer_id = UUID(result["customer_id"])
        if with_card:
            self.card(customer_id)
        return customer_id

    def card(
        self,
        customer_id: UUID,
        method_id: str = "pm_1",
        token: str | None = None,
        make_default: bool = False,
        gateway: str = "sandbox",
        customer_reference: str | None = None,
    ) -> None:
        """A card whose sandbox ``token`` (one that succeeds, by default) decides how its
        charges go; or a card saved at another of ``self.gateways``."""
        self.send(
            s.AddPaymentMethod,
            customer_id=customer_id,
            payment_method_id=method_id,
            gateway=gateway,
            customer_reference=customer_reference,
            token=token or f"tok_{method_id}",
            last4="4242",
            exp_month=12,
            exp_year=2030,
            make_default=make_default,
        )

    def subscribe(self, customer_id: UUID, plan: str = "basic", **fields: Any) -> UUID:
        result = self.send(s.StartSubscription, customer_id=customer_id, plan_code=plan, **fields)
        return UUID(result["subscription_id"])

    def _url(self) -> str:
        if self.database_url is None:
            raise ValueError("this shop was opened without a database URL")
        return self.database_url

    @property
    def projector(self) -> Projector:
        if self._projector is None:
            self._projector = projector(self.ledger, self._url())
        return self._projector

    def tick(self) -> TickReport:
        """One tick of the billing clock at the shop's current time."""
        return BillingClock(self.ledger, self.projector, self.clock).tick()

    def pay(self) -> ProcessorReport:
        """Carries out the payment and refund requests recorded so far on the sandbox,
        with one long-lived processor, as ``subledger serve`` runs it."""
        if self._processor is None:
            self._processor = self._processor_on(self.projector.database)
        return self._processor.run()

    @contextmanager
    def processor(
        self, gateway: Gateway | None = None, ledger: Ledger | None = None
    ) -> Iterator[PaymentProcessor]:
        """A payment processor as a new process starts it, on a connection of its own, over
        ``gateway`` (the shop's gateways by default) and ``ledger`` (the shop's)."""
        database = projection_database(persistence_env(self._url()))
        try:
            yield self._processor_on(database, gateway, ledger)
        finally:
            database.close()

    def _processor_on(
        self, database: Database, gateway: Gateway | None = None, ledger: Ledger | None = None
    ) -> PaymentProcessor:
        return PaymentProcessor(
            ledger or self.ledger,
            Gateways([gateway] if gateway else self.gateways),
            database,
            self.clock,
            wait=lambda *_: None,  # the sandbox answers at once: no backoff
        )

    def run_until(self, instant: datetime) -> TickReport:
        """Moves the clock to ``instant``, ticks the billing clock, and carries out the
        payments it requested; returns what the tick did."""
        self.clock.advance_to(instant)
        report = self.tick()
        self.pay()
        return report

    def close(self) -> None:
        if self._projector is not None:
            self._projector.close()
        self.sandbox.close()


@pytest.fixture
def shop(ledger: Ledger, clock: SimulatedClock, database_url: str) -> Iterator[Shop]:
    shop = Shop(ledger, clock, database_url)
    shop.open_catalog()
    yield shop
    shop.close()
