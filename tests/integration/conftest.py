"""A small driver that sends commands the way a service would, with fresh command ids."""

from __future__ import annotations

from itertools import count
from typing import Any
from uuid import UUID

import pytest

from commands import schemas as s
from commands.dispatch import handle
from ledger.application import Ledger
from ledger.clock import SimulatedClock


class Shop:
    def __init__(self, ledger: Ledger, clock: SimulatedClock) -> None:
        self.ledger = ledger
        self.clock = clock
        self._ids = count(1)

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

    def customer(self, with_card: bool = True) -> UUID:
        result = self.send(s.RegisterCustomer, email="ann@example.com", name="Ann", currency="EUR")
        customer_id = UUID(result["customer_id"])
        if with_card:
            self.card(customer_id)
        return customer_id

    def card(self, customer_id: UUID, method_id: str = "pm_1") -> None:
        self.send(
            s.AddPaymentMethod,
            customer_id=customer_id,
            payment_method_id=method_id,
            token=f"tok_{method_id}",
            last4="4242",
            exp_month=12,
            exp_year=2030,
        )


@pytest.fixture
def shop(ledger: Ledger, clock: SimulatedClock) -> Shop:
    shop = Shop(ledger, clock)
    shop.open_catalog()
    return shop
