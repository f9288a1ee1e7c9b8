"""The catalog: plans and their prices.

A price is never edited: a new price for the same currency and interval is a new version
that new signups get, while existing subscribers keep the one they signed up to
(grandfathering) until migrated. Plans and prices can be archived: no new signups.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from functools import cache, lru_cache
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.calendar import Interval
from ledger.errors import (
    InvalidPlan,
    InvalidPrice,
    NoPriceInCurrency,
    PlanArchived,
    PriceArchived,
    UnknownPrice,
)
from ledger.ids import IDS_KEPT
from ledger.money import Money

MAX_TRIAL_DAYS = 730


@dataclass(frozen=True, slots=True)
class Price:
    """What a plan costs per interval in one currency; immutable once added."""

    id: str
    plan_code: str
    amount: Money
    interval: Interval
    trial_days: int = 0
    version: int = 1

    @property
    def currency(self) -> str:
        return self.amount.currency

    @property
    def monthly_amount(self) -> Fraction:
        """The price normalised to one month, in minor units (exact)."""
        return Fraction(self.amount.amount) / self.interval.months

    @property
    def mrr(self) -> Money:
        """What the price adds to monthly recurring revenue while billed: the monthly
        amount rounded once, half to even, so that MRR figures are sums of integers."""
        return normalised_to_month(self.amount, self.interval)


@cache  # a few prices, normalised for every event that carries one
def normalised_to_month(amount: Money, interval: Interval) -> Money:
    return amount.scaled(1 / interval.months)


def price_id(plan_code: str, interval: Interval, currency: str, version: int) -> str:
    """A readable, stable id: ``pro-month-eur-v1``, ``pro-3month-usd-v2``."""
    count = "" if interval.count == 1 else str(interval.count)
    return f"{plan_code}-{count}{interval.unit}-{currency.lower()}-v{version}"


@lru_cache(maxsize=IDS_KEPT)  # every command naming a plan derives its id anew
def plan_id(code: str) -> UUID:
    """Plan ids derive from their code, so a code is registered at most once."""
    return uuid5(NAMESPACE_URL, f"subledger:plan:{code}")


class Plan(Aggregate):
    # State set by the events' apply(); under TYPE_CHECKING because eventsourcing would
    # turn class annotations into constructor fields.
    if TYPE_CHECKING:
        code: str
        name: str
        description: str
        features: list[str]
        prices: dict[str, Price]
        archived_price_ids: list[str]
        archived: bool

    class Registered(Aggregate.Created):
        code: str
        name: str
        description: str
        features: list[str]

        def apply(self, plan: Plan) -> None:
            plan.code = self.code
            plan.name = self.name
            plan.description = self.description
            plan.features = list(self.features)
            plan.prices = {}
            plan.archived_price_ids = []
            plan.archived = False

    class PriceAdded(Aggregate.Event):
        price: Price
        superseded_price_id: str | None

        def apply(self, plan: Plan) -> None:
            plan.prices[self.price.id] = self.price
            if self.superseded_price_id is not None:
                plan.archived_price_ids.append(self.superseded_price_id)

    class PriceArchived(Aggregate.Event):
        price_id: str

        def apply(self, plan: Plan) -> None:
            plan.archived_price_ids.append(self.price_id)

    class Archived(Aggregate.Event):
        def apply(self, plan: Plan) -> None:
            plan.archived = True

    @classmethod
    def register(
        cls, code: str, name: str, description: str, features: list[str], at: datetime
    ) -> Plan:
        if not code or not code.replace("-", "").replace("_", "").isalnum():
            raise InvalidPlan(f"plan code {code!r} must be letters, digits, '-' or '_'")
        return cls._create(
            cls.Registered,
            id=plan_id(code),
            timestamp=at,
            code=code,
            name=name,
            description=description,
            features=list(features),
        )

    def add_price(self, amount: Money, interval: Interval, trial_days: int, at: datetime) -> Price:
        """Adds a price; an active price of the same currency and interval is superseded."""
        if self.archived:
            raise PlanArchived(f"plan {self.code!r} is archived")
        if amount.amount < 0:
            raise InvalidPrice(f"a price cannot be negative ({amount})")
        if not 0 <= trial_days <= MAX_TRIAL_DAYS:
            raise InvalidPrice(f"trial days must be between 0 and {MAX_TRIAL_DAYS}")
        current = self._active_price(amount.currency, interval)
        version = 1 + sum(
            1
            for p in self.prices.values()
            if (p.currency, p.interval) == (amount.currency, interval)
        )
        price = Price(
            id=price_id(self.code, interval, amount.currency, version),
            plan_code=self.code,
            amount=amount,
            interval=interval,
            trial_days=trial_days,
            version=version,
        )
        self.trigger_event(
            self.PriceAdded,
            timestamp=at,
            price=price,
            superseded_price_id=current.id if current else None,
        )
        return price

    def archive_price(self, price_id: str, at: datetime) -> None:
        self.price(price_id)
        if price_id in self.archived_price_ids:
            raise PriceArchived(f"price {price_id!r} is already archived")
        self.trigger_event(self.PriceArchived, timestamp=at, price_id=price_id)

    def archive(self, at: datetime) -> None:
        if self.archived:
            raise PlanArchived(f"plan {self.code!r} is already archived")
        self.trigger_event(self.Archived, timestamp=at)

    def price(self, price_id: str) -> Price:
        try:
            return self.prices[price_id]
        except KeyError:
            raise UnknownPrice(f"plan {self.code!r} has no price {price_id!r}") from None

    @property
    def active_prices(self) -> list[Price]:
        return [p for p in self.prices.values() if p.id not in self.archived_price_ids]

    def _active_price(self, currency: str, interval: Interval) -> Price | None:
        for price in self.active_prices:
            if (price.currency, price.interval) == (currency, interval):
                return price
        return None

    def price_for_signup(self, currency: str, interval: Interval) -> Price:
        """The price a new subscriber gets, or why there is none."""
        if self.archived:
            raise PlanArchived(f"plan {self.code!r} is archived: no new signups")
        price = self._active_price(currency, interval)
        if price is not None:
            return price
        if any((p.currency, p.interval) == (currency, interval) for p in self.prices.values()):
            raise PriceArchived(
                f"plan {self.code!r} has no active {interval} price in {currency}: it was archived"
            )
        raise NoPriceInCurrency(f"plan {self.code!r} has no {interval} price in {currency}")
