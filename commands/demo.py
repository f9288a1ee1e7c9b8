"""The showcase: a year of a subscription business, billed for real, in seconds.

A simulated clock walks day by day. Customers sign up (some with a trial, some with a
card, a few first sending a raw card number, which is refused, some with a welcome
coupon, some with VAT), trials convert or lapse, subscribers upgrade, downgrade, pause
(some until a date), resume and cancel in all three ways; customers who left may come
back with a win-back coupon. Every day the billing clock renews what is due and the
payment processor charges the sandbox gateway: some cards decline (soft, hard, or until
the account is topped up), dunning retries, some customers bring a new card, some ask
for a refund. Five in a hundred commands are delivered twice, as a bus may do: the
ledger must not change on the second delivery. The same seed gives the same ledger.
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
from commands.billing_clock import BillingClock
from commands.dispatch import handle
from commands.payments import PaymentProcessor
from gateways.port import Gateways
from gateways.sandbox import SandboxGateway
from ledger.application import Ledger
from ledger.calendar import Interval, IntervalUnit, boundary
from ledger.clock import SimulatedClock
from ledger.errors import DomainError
from ledger.invoices import period_invoice_id
from ledger.subscriptions import SubscriptionStatus
from projections import stats
from projections.journal import journal_balanced
from projections.runner import Progress, Projector
from projections.stats import Figures
from projections.values import read_int, read_maybe_instant, read_uuid

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
P_WELCOME, P_VAT, P_WINBACK, P_NEW_CARD_IN_DUNNING, P_REFUND = 0.15, 0.3, 0.01, 0.1, 0.0005
# Cards that decline: insufficient funds for good (soft), expired (hard), or until the
# account is topped up after two declines; every other token is charged.
BAD_CARDS = {
    "tok_chargeDeclinedInsufficientFunds": 0.04,
    "tok_chargeDeclinedExpiredCard": 0.02,
    "tok_recoversAfter_2": 0.04,
}
COUPONS: list[dict[str, Any]] = [
    {"code": "WELCOME20", "name": "Welcome, 20% off the first month", "percent_off": "20"},
    {
        "code": "WINBACK50",
        "name": "Come back: 50% off three months",
        "percent_off": "50",
        "duration": "repeating",
        "duration_periods": 3,
    },
]


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
    journal_balanced: bool = False

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
            "collected": {currency: f.collected for currency, f in self.revenue.items()},
            "refunded": {currency: f.refunded for currency, f in self.revenue.items()},
            "failed_payments": sum(f.failed_payments for f in self.revenue.values()),
            "recovered_payments": sum(f.recovered_payments for f in self.revenue.values()),
            "journal_balanced": self.journal_balanced,
            "commands": self.commands,
            "redeliveries": self.redeliveries,
            "events_added_by_redeliveries": self.redelivery_events,
            "rejections": dict(sorted(self.rejections.items())),
        }


@dataclass(frozen=True)
class Live:
    """A subscription as the projections show it, which is all a customer acts on."""

    subscription_id: UUID
    customer_id: UUID
    status: str
    plan_code: str
    period_index: int
    cancel_at: datetime | None


class Business:
    """Drives the ledger like the business's services and its customers would."""

    def __init__(self, ledger: Ledger, projector: Projector, seed: int, months: int) -> None:
        self.ledger = ledger
        self.projector = projector
        self.rng = random.Random(seed)
        self.seed = seed
        self.clock = SimulatedClock(START)
        self.billing_clock = BillingClock(ledger, projector, self.clock)
        self.processor = PaymentProcessor(
            ledger,
            Gateways([SandboxGateway()]),
            projector.database,
            self.clock,
            wait=lambda *_: None,  # simulated time: a retried request needs no real wait
        )
        self.report = DemoReport(
            seed, months, START, boundary(START, Interval(IntervalUnit.MONTH), months)
        )
        self.customer_has_card: dict[UUID, bool] = {}
        self.currency_of: dict[UUID, str] = {}
        self.left: list[UUID] = []  # customers whose subscription ended: win-back targets
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
        return result

    def redeliver(self, command: s.Command, first: dict[str, Any]) -> None:
        before = self.ledger.recorder.max_notification_id() or 0
        if handle(command, self.ledger, self.clock) != first:
            raise RuntimeError(f"redelivered {command.command_id} got another answer")
        self.report.redeliveries += 1
        self.report.redelivery_events += (self.ledger.recorder.max_notification_id() or 0) - before

    def live(self) -> list[Live]:
        """The subscriptions not ended, from the projections brought up to date."""
        self.projector.catch_up()
        rows = self.projector.database.query(
            "SELECT subscription_id, customer_id, status, plan_code, period_index, cancel_at "
            "FROM current_subscriptions WHERE status NOT IN ('canceled', 'expired') "
            "ORDER BY started_at, subscription_id"
        )
        return [
            Live(read_uuid(a), read_uuid(b), status, plan, read_int(index), read_maybe_instant(c))
            for a, b, status, plan, index, c in rows
        ]

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
        for coupon in COUPONS:
            self.send(s.RegisterCoupon, public=coupon["code"] == "WELCOME20", **coupon)

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
        self.currency_of[customer_id] = currency
        if currency == "EUR" and self.rng.random() < P_VAT:
            self.send(s.SetTaxRate, customer_id=customer_id, name="VAT", percent="20")
        if self.rng.random() < P_CARD_AT_SIGNUP:
            self.add_card(customer_id)
        coupon = "WELCOME20" if self.rng.random() < P_WELCOME else None
        self.subscribe(customer_id, coupon)

    def subscribe(self, customer_id: UUID, coupon: str | None) -> None:
        self.send(
            s.StartSubscription,
            customer_id=customer_id,
            plan_code=self._pick(PLAN_WEIGHTS),
            interval="year" if self.rng.random() < 0.2 else "month",
            trial_days=None if self.rng.random() < 0.6 else 0,
            coupon=coupon,
        )

    def add_card(self, customer_id: UUID, good: bool = False) -> None:
        if self.rng.random() < P_CARD_NUMBER:
            # A careless integration sends the card number itself: refused, never stored.
            self._card(customer_id, token="4242 4242 4242 4242", default=good)
        token = f"tok_{self.rng.getrandbits(64):016x}"
        roll = self.rng.random()
        for bad, chance in BAD_CARDS.items():
            if not good and roll < chance:
                token = bad
                break
            roll -= chance
        self._card(customer_id, token=token, default=good)

    def _card(self, customer_id: UUID, token: str, default: bool) -> None:
        result = self.send(
            s.AddPaymentMethod,
            customer_id=customer_id,
            payment_method_id=f"pm_{self.rng.getrandbits(48):012x}",
            token=token,
            brand=self.rng.choice(["visa", "mastercard", "amex"]),
            last4=f"{self.rng.randrange(10_000):04d}",
            exp_month=self.rng.randint(1, 12),
            exp_year=START.year + self.rng.randint(3, 6),
            make_default=default,
        )
        if result is not None:
            self.customer_has_card[customer_id] = True

    def act(self, sub: Live) -> None:
        """What one subscriber may do today."""
        roll = self.rng.random()
        if sub.status == SubscriptionStatus.TRIALING.value:
            if not self.customer_has_card.get(sub.customer_id) and roll < P_CARD_IN_TRIAL:
                self.add_card(sub.customer_id)
            return
        if sub.status == SubscriptionStatus.PAST_DUE.value:
            # A reminder email works sometimes: a new card, which is retried at once.
            if roll < P_NEW_CARD_IN_DUNNING:
                self.add_card(sub.customer_id, good=True)
            return
        if sub.status in (SubscriptionStatus.PAUSED.value, SubscriptionStatus.UNPAID.value):
            if sub.status == SubscriptionStatus.PAUSED.value and roll < P_RESUME:
                self.send(s.ResumeSubscription, subscription_id=sub.subscription_id)
            return
        if sub.cancel_at is not None:
            if roll < P_REVOKE:
                self.send(s.RevokeCancel, subscription_id=sub.subscription_id)
            return
        if roll < P_REFUND:
            # A goodwill refund of part of the period's invoice.
            invoice_id = period_invoice_id(sub.subscription_id, sub.period_index)
            self.send(s.RefundInvoice, invoice_id=invoice_id, amount=100, reason="goodwill")
            return
        roll -= P_REFUND
        codes = [code for code, *_ in CATALOG]
        rank = codes.index(sub.plan_code)
        cancel_on = self.clock.now() + timedelta(days=5 + int(roll * 1e9) % 56)
        resume_on = self.clock.now() + timedelta(days=14 + int(roll * 1e9) % 42)
        choices: list[tuple[float, type[s.Command], dict[str, Any]]] = [
            (P_PAUSE, s.PauseSubscription, {}),
            (P_PAUSE, s.PauseSubscription, {"resume_at": resume_on}),
            (P_CANCEL_END, s.CancelSubscription, {"when": "period_end"}),
            (P_CANCEL_NOW, s.CancelSubscription, {"when": "now", "refund_unused": True}),
            (P_CANCEL_DATE, s.CancelSubscription, {"when": cancel_on}),
        ]
        if rank + 1 < len(codes):
            choices.append((P_UPGRADE, s.ChangePlan, {"plan_code": codes[rank + 1]}))
        if rank > 0:
            choices.append((P_DOWNGRADE, s.ChangePlan, {"plan_code": codes[rank - 1]}))
        for chance, command_type, fields in choices:
            if roll < chance:
                self.send(command_type, subscription_id=sub.subscription_id, **fields)
                return
            roll -= chance

    def win_back(self) -> None:
        """Some customers who left come back, with the win-back coupon."""
        for customer_id in list(self.left):
            if self.rng.random() < P_WINBACK:
                self.left.remove(customer_id)
                self.subscribe(customer_id, "WINBACK50")

    def run_day(self, arrivals: int) -> None:
        self.billing_clock.tick()
        self.processor.run()
        for _ in range(arrivals):
            self.sign_up(self.report.customers + 1)
            self.report.customers += 1
        live = self.live()
        for sub in live:
            self.act(sub)
        self.win_back()
        self.processor.run()
        still = {sub.customer_id for sub in self.live()}
        self.left += sorted({sub.customer_id for sub in live} - still - set(self.left))

    def _pick(self, weights: dict[str, float]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def finish(self) -> DemoReport:
        report = self.report
        self.billing_clock.tick()
        self.processor.run()
        self.projector.catch_up()
        statuses: Counter[str] = Counter()
        plans: Counter[str] = Counter()
        rows = self.projector.database.query("SELECT status, plan_code FROM current_subscriptions")
        for status, plan_code in rows:
            statuses[status] += 1
            if status not in ("canceled", "expired"):
                plans[plan_code] += 1
        report.subscriptions_by_status = dict(sorted(statuses.items()))
        report.subscriptions_by_plan = dict(sorted(plans.items()))
        report.events_by_type = dict(sorted(self.ledger.event_counts_by_type().items()))
        report.events = sum(report.events_by_type.values())
        return report


def run_demo(
    ledger: Ledger,
    projector: Projector,
    customers: int,
    months: int,
    seed: int,
    on_day: Callable[[int, int], None] | None = None,
) -> DemoReport:
    """Simulates ``months`` of business with ``customers`` signups spread over them."""
    business = Business(ledger, projector, seed, months)
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
    report.journal_balanced = journal_balanced(db)
