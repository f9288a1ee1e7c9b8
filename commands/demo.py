"""The showcase: a year of a subscription business, simulated in seconds.

A simulated clock walks day by day. Customers sign up (some with a trial, some with a
card, a few first sending a raw card number, which is refused), trials convert or lapse,
subscribers upgrade, downgrade, pause (some until a date), resume and cancel in all
three ways, and the clock renews what is due. Five in a hundred commands are delivered
twice, as a bus may do: the ledger must not change on the second delivery. The same seed
gives the same ledger.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from commands import schemas as s
from commands.dispatch import handle
from commands.lifecycle import advance_subscription
from ledger.application import Ledger
from ledger.calendar import Interval, IntervalUnit, boundary
from ledger.clock import SimulatedClock
from ledger.errors import DomainError
from ledger.subscriptions import Subscription, SubscriptionStatus
from projections import stats
from projections.runner import Progress, Projector
from projections.stats import Figures

START = datetime(2025, 1, 1, tzinfo=UTC)
CURRENCIES = {"EUR": 0.6, "USD": 0.4}
# (code, name, monthly minor units, annual minor units, features): annual is ten months.
CATALOG = [
    ("basic", "Basic", 900, 9000, ["1 project", "email support"]),
    ("pro", "Pro", 2900, 29000, ["10 projects", "priority support", "API access"]),
    ("platinum", "Platinum", 9900, 99000, ["unlimited projects", "SSO", "24/7 support"]),
]
PLAN_WEIGHTS = {"basic": 0.5, "pro": 0.35, "platinum": 0.15}
TRIAL_DAYS = 14
# Daily probabilities for one subscriber (roughly monthly rates / 30).
P_UPGRADE, P_DOWNGRADE, P_PAUSE, P_RESUME = 0.0015, 0.001, 0.0007, 0.03
P_CANCEL_END, P_CANCEL_NOW, P_CANCEL_DATE, P_REVOKE = 0.0012, 0.0003, 0.0003, 0.02
P_REDELIVER, P_CARD_NUMBER, P_CARD_AT_SIGNUP, P_CARD_IN_TRIAL = 0.05, 0.02, 0.6, 0.04


@dataclass
class DemoReport:
    seed: int
    months: int
    started: datetime
    ended: datetime
    commands: int = 0
    redeliveries: int = 0
    redelivery_events: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    events: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)
    customers: int = 0
    subscriptions_by_status: dict[str, int] = field(default_factory=dict)
    subscriptions_by_plan: dict[str, int] = field(default_factory=dict)
    # From the revenue projection, per currency: over the whole demo, and its last days.
    revenue: dict[str, Figures] = field(default_factory=dict)
    recent: dict[str, Figures] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "months": self.months,
            "simulated_from": self.started.isoformat(),
            "simulated_until": self.ended.isoformat(),
            "events": self.events,
            "events_by_type": self.events_by_type,
            "customers": self.customers,
            "subscriptions": sum(self.subscriptions_by_status.values()),
            "subscriptions_by_status": self.subscriptions_by_status,
            "live_subscriptions_by_plan": self.subscriptions_by_plan,
            "mrr": {currency: figures.mrr for currency, figures in self.revenue.items()},
            "mrr_movements": {
                currency: figures.movements.as_json() for currency, figures in self.revenue.items()
            },
            "commands": self.commands,
            "redeliveries": self.redeliveries,
            "events_added_by_redeliveries": self.redelivery_events,
            "rejections": dict(sorted(self.rejections.items())),
        }


class Business:
    """Drives the ledger like the business's services and its customers would."""

    def __init__(self, ledger: Ledger, seed: int, months: int) -> None:
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.seed = seed
        self.clock = SimulatedClock(START)
        self.report = DemoReport(
            seed, months, START, boundary(START, Interval(IntervalUnit.MONTH), months)
        )
        self.due: dict[UUID, datetime] = {}
        self.subscriptions: dict[UUID, Subscription] = {}
        self.customer_has_card: dict[UUID, bool] = {}
        self._next = 0

    def send(self, command_type: type[s.Command], **fields: Any) -> dict[str, Any] | None:
        """Sends one command; sometimes twice, as an at-least-once bus would."""
        self._next += 1
        command = command_type(command_id=f"demo-{self.seed}-{self._next}", **fields)
        self.report.commands += 1
        try:
            result = handle(command, self.ledger, self.clock)
        except DomainError as refusal:
            self.report.rejections[refusal.code] += 1
            return None
        if self.rng.random() < P_REDELIVER:
            self.redeliver(command, result)
        if "subscription_id" in result:
            self._track(self.ledger.subscription(UUID(result["subscription_id"])))
        return result

    def redeliver(self, command: s.Command, first: dict[str, Any]) -> None:
        before = self.ledger.recorder.max_notification_id() or 0
        if handle(command, self.ledger, self.clock) != first:
            raise RuntimeError(f"redelivered {command.command_id} got another answer")
        self.report.redeliveries += 1
        self.report.redelivery_events += (self.ledger.recorder.max_notification_id() or 0) - before

    def _track(self, sub: Subscription) -> None:
        self.subscriptions[sub.id] = sub
        if sub.due_at is None:
            self.due.pop(sub.id, None)
        else:
            self.due[sub.id] = sub.due_at

    def advance_due(self) -> None:
        now = self.clock.now()
        for subscription_id in [i for i, due in self.due.items() if due <= now]:
            self._track(advance_subscription(self.ledger, subscription_id, now))

    def open_catalog(self) -> None:
        for code, name, monthly, annual, features in CATALOG:
            self.send(
                s.RegisterPlan,
                code=code,
                name=name,
                description=f"The {name} plan",
                features=features,
            )
            for currency in CURRENCIES:
                for interval, amount in (("month", monthly), ("year", annual)):
                    self.send(
                        s.AddPrice,
                        plan_code=code,
                        currency=currency,
                        amount=amount,
                        interval=interval,
                        trial_days=TRIAL_DAYS,
                    )

    def sign_up(self, number: int) -> None:
        currency = self._pick(CURRENCIES)
        customer = self.send(
            s.RegisterCustomer,
            email=f"customer{number}@example.com",
            name=f"Customer {number}",
            currency=currency,
        )
        if customer is None:
            return
        customer_id = UUID(customer["customer_id"])
        if self.rng.random() < P_CARD_AT_SIGNUP:
            self.add_card(customer_id)
        self.send(
            s.StartSubscription,
            customer_id=customer_id,
            plan_code=self._pick(PLAN_WEIGHTS),
            interval="year" if self.rng.random() < 0.2 else "month",
            trial_days=None if self.rng.random() < 0.6 else 0,
        )

    def add_card(self, customer_id: UUID) -> None:
        if self.rng.random() < P_CARD_NUMBER:
            # A careless integration sends the card number itself: refused, never stored.
            self._card(customer_id, token="4242 4242 4242 4242")
        self._card(customer_id, token=f"tok_{self.rng.getrandbits(64):016x}")

    def _card(self, customer_id: UUID, token: str) -> None:
        result = self.send(
            s.AddPaymentMethod,
            customer_id=customer_id,
            payment_method_id=f"pm_{self.rng.getrandbits(48):012x}",
            token=token,
            brand=self.rng.choice(["visa", "mastercard", "amex"]),
            last4=f"{self.rng.randrange(10_000):04d}",
            exp_month=self.rng.randint(1, 12),
            exp_year=START.year + self.rng.randint(3, 6),
        )
        if result is not None:
            self.customer_has_card[customer_id] = True

    def act(self, sub: Subscription) -> None:
        """What one subscriber may do today."""
        roll = self.rng.random()
        if sub.status is SubscriptionStatus.TRIALING:
            if not self.customer_has_card.get(sub.customer_id) and roll < P_CARD_IN_TRIAL:
                self.add_card(sub.customer_id)
            return
        if sub.status is SubscriptionStatus.PAUSED:
            if roll < P_RESUME:
                self.send(s.ResumeSubscription, subscription_id=sub.id)
            return
        if sub.cancel_at is not None:
            if roll < P_REVOKE:
                self.send(s.RevokeCancel, subscription_id=sub.id)
            return
        codes = [code for code, *_ in CATALOG]
        rank = codes.index(sub.price.plan_code)
        cancel_on = self.clock.now() + timedelta(days=5 + int(roll * 1e9) % 56)
        resume_on = self.clock.now() + timedelta(days=14 + int(roll * 1e9) % 42)
        choices: list[tuple[float, type[s.Command], dict[str, Any]]] = [
            (P_PAUSE, s.PauseSubscription, {}),
            (P_PAUSE, s.PauseSubscription, {"resume_at": resume_on}),
            (P_CANCEL_END, s.CancelSubscription, {"when": "period_end"}),
            (P_CANCEL_NOW, s.CancelSubscription, {"when": "now", "refund_unused": True}),
            (P_CANCEL_DATE, s.CancelSubscription, {"when": "date", "cancel_at": cancel_on}),
        ]
        if rank + 1 < len(codes):
            choices.append((P_UPGRADE, s.ChangePlan, {"plan_code": codes[rank + 1]}))
        if rank > 0:
            choices.append((P_DOWNGRADE, s.ChangePlan, {"plan_code": codes[rank - 1]}))
        for chance, command_type, fields in choices:
            if roll < chance:
                self.send(command_type, subscription_id=sub.id, **fields)
                return
            roll -= chance

    def run_day(self, arrivals: int) -> None:
        self.advance_due()
        for _ in range(arrivals):
            self.sign_up(self.report.customers + 1)
            self.report.customers += 1
        for sub in list(self.subscriptions.values()):
            if not sub.is_ended:
                self.act(sub)

    def _pick(self, weights: dict[str, float]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def finish(self) -> DemoReport:
        report = self.report
        self.advance_due()
        statuses: Counter[str] = Counter()
        plans: Counter[str] = Counter()
        for sub in self.subscriptions.values():
            statuses[sub.status.value] += 1
            if not sub.is_ended:
                plans[sub.price.plan_code] += 1
        report.subscriptions_by_status = dict(sorted(statuses.items()))
        report.subscriptions_by_plan = dict(sorted(plans.items()))
        report.events_by_type = dict(sorted(self.ledger.event_counts_by_type().items()))
        report.events = sum(report.events_by_type.values())
        return report


def run_demo(
    ledger: Ledger,
    customers: int,
    months: int,
    seed: int,
    on_day: Callable[[int, int], None] | None = None,
) -> DemoReport:
    """Simulates ``months`` of business with ``customers`` signups spread over them."""
    business = Business(ledger, seed, months)
    business.open_catalog()
    days = (business.report.ended - START).days
    arrivals = Counter(business.rng.randrange(days) for _ in range(customers))
    for day in range(days):
        business.run_day(arrivals[day])
        business.clock.advance(timedelta(days=1))
        if on_day is not None:
            on_day(day + 1, days)
    return business.finish()


def project(report: DemoReport, projector: Projector, progress: Progress | None = None) -> None:
    """Brings the projections up to date, then reads the revenue figures of the demo from
    them: over the whole simulation, and over its last days (rates need a paying start)."""
    projector.catch_up(progress)
    db = projector.database
    start, end = report.started.date(), report.ended.date()
    recent_start, recent_end = stats.default_range(db)
    for currency in stats.currencies(db):
        report.revenue[currency] = stats.figures(db, currency, start, end)
        report.recent[currency] = stats.figures(db, currency, recent_start, recent_end)
