"""A large, realistic ledger, generated fast: the input of benchmarks that read events back.

``populate`` stores the kinds of events the demo (``commands.demo``) stores, at its rates,
at scale: the demo's catalog, then customers signing up over a simulated year, each with
(usually) a payment method and a subscription that lives to the year's end (trials
convert or lapse, periods renew, subscribers upgrade, downgrade, pause, some until a
date, resume and cancel in all three ways), an invoice for every billed period and every
upgrade made now (``ledger.billing``, as the handlers and the billing clock issue them),
charged a minute later as the payment processor would, and a command record for every
command. The
demo sends one command per transaction, a few hundred events/s; this calls the aggregates
directly on simulated time and stores a cohort of customers per save, tens of times faster.

Memory stays flat: each cohort is simulated from signup to the year's end, saved, and
dropped. Within a cohort the events are stored in time order; the next cohort's start
again from its signups. The same seed gives the same events: one rng draws everything,
and ids derive from command ids (as the handlers derive them), which derive from the seed.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, CanMutateAggregate

from bench import ignore
from commands.accounts import derived_id, money_view
from commands.demo import (
    CATALOG,
    CURRENCIES,
    P_CANCEL_DATE,
    P_CANCEL_END,
    P_CANCEL_NOW,
    P_CARD_AT_SIGNUP,
    P_CARD_IN_TRIAL,
    P_CARD_NUMBER,
    P_DOWNGRADE,
    P_PAUSE,
    P_RESUME,
    P_REVOKE,
    P_UPGRADE,
    PLAN_WEIGHTS,
    START,
    TRIAL_DAYS,
)
from ledger import collector
from ledger.application import Ledger
from ledger.billing import Mark, bill
from ledger.calendar import Interval, IntervalUnit, boundary
from ledger.catalog import Plan, Price
from ledger.customers import Customer, PaymentMethod
from ledger.dunning import DunningPolicy
from ledger.errors import DomainError
from ledger.idempotency import CommandRecord, fingerprint
from ledger.invoices import Invoice
from ledger.money import Money
from ledger.subscriptions import ChangeTiming, Subscription, SubscriptionStatus

MONTH = Interval(IntervalUnit.MONTH)
YEAR = Interval(IntervalUnit.YEAR)
PLAN_CODES = [code for code, *_ in CATALOG]
# Customers simulated, then saved, together: some 2,200 events of 1,100 aggregates
# (command records included), in one save.
COHORT = 200
# The ledger's PostgreSQL recorder sends one INSERT per save, 4 parameters an event, and
# a statement takes at most 65535 parameters.
MAX_EVENTS_PER_SAVE = 8000
# Stored events per customer over a whole year, estimated low (about 21.3 are stored,
# invoices and payments included), so that the year's customers store enough: some 4%
# more events than asked, rather than a year whose last weeks have no signups. Were they
# too few, another year would follow.
EVENTS_PER_CUSTOMER = 20.5
# Share of downgrades asked for "now" (prorated, the difference becomes account credit)
# rather than the default, at period end; the demo asks for none.
P_DOWNGRADE_NOW = 0.2
LOG_EVERY = 25_000
ADD_CARD = "add_card"

Event = CanMutateAggregate[UUID]


@dataclass(frozen=True, slots=True)
class _Command:
    """What a command record keeps of a command."""

    id: str
    type: str
    fingerprint: str


class _InOrder:
    """Events of many aggregates, for ``ledger.save`` to store in this very order.

    Given aggregates, ``save`` stores their events aggregate by aggregate; given events,
    it checks each against a runtime protocol (some 20 us an event, a fifth of the time
    budget). It takes anything with an id, a version and ``collect_events`` as it takes
    an aggregate: this is one such thing, holding the events in time order."""

    version = 0
    _id = uuid5(NAMESPACE_URL, "subledger:population:in-order")

    def __init__(self, events: list[Event]) -> None:
        self._events = events

    @property
    def id(self) -> UUID:
        return self._id

    def collect_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events


@dataclass
class _Cohort:
    """What a cohort stores: its events in time order, and its customers and subscriptions
    (which the ledger may have to snapshot)."""

    events: list[Event]
    aggregates: list[Aggregate]


class _Population:
    """The simulation: one rng, a clock per customer, and the events of the cohort."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.commands = 0
        self.customers = 0
        self.prices: dict[tuple[str, Interval, str], Price] = {}
        self.events: list[Event] = []
        self.aggregates: list[Aggregate] = []
        self.counts: Counter[str] = Counter()

    def take(self, *aggregates: Aggregate) -> None:
        """Moves the aggregates' new events to the cohort's list, in the order they happened."""
        for aggregate in aggregates:
            self.events.extend(aggregate.collect_events())

    def cohort(self) -> _Cohort:
        """The events taken so far, in time order, and their aggregates; then forgets them."""
        # Each customer's events are taken in time order; a stable sort interleaves the
        # customers of the cohort without reordering any aggregate's events.
        events = sorted(self.events, key=lambda e: e.timestamp)
        cohort = _Cohort(events, self.aggregates)
        self.events, self.aggregates = [], []
        self.counts.update(type(e).__qualname__ for e in events)
        return cohort

    # Commands and their records

    def command(self, command_type: str, **payload: Any) -> _Command:
        """A command's id and fingerprint (of what it asks, in the JSON a bus would carry)."""
        self.commands += 1
        digest = fingerprint(command_type, {"type": command_type, **payload})
        return _Command(f"population-{self.seed}-{self.commands}", command_type, digest)

    def handled(
        self, command: _Command, result: dict[str, Any], at: datetime, *changed: Aggregate
    ) -> None:
        """Records the command as dispatch does: its record first, then what it changed."""
        record = CommandRecord.handled(command.id, command.type, command.fingerprint, result, at)
        self.take(record, *changed)

    def rejected(self, command: _Command, refusal: DomainError, at: datetime) -> None:
        record = CommandRecord.rejected(command.id, command.type, command.fingerprint, refusal, at)
        self.take(record)

    # The catalog

    def open_catalog(self, at: datetime) -> None:
        for code, name, monthly, annual, features in CATALOG:
            description = f"The {name} plan"
            command = self.command(
                "plan.create", code=code, name=name, description=description, features=features
            )
            plan = Plan.register(code, name, description, features, at)
            self.handled(command, {"plan_id": str(plan.id), "code": code}, at, plan)
            for currency in CURRENCIES:
                for interval, amount in ((MONTH, monthly), (YEAR, annual)):
                    # One command per instant, as a real clock would have it.
                    at += timedelta(seconds=1)
                    command = self.command(
                        "plan.add_price",
                        plan_code=code,
                        currency=currency,
                        amount=amount,
                        interval=str(interval),
                        trial_days=TRIAL_DAYS,
                    )
                    price = plan.add_price(Money(amount, currency), interval, TRIAL_DAYS, at)
                    self.prices[(code, interval, currency)] = price
                    result = {"price_id": price.id, "version": price.version}
                    self.handled(command, result, at, plan)
            at += timedelta(seconds=1)

    # One customer's life

    def live(self, arrival: datetime, horizon: datetime) -> None:
        """One customer from signup to ``horizon``: the commands they and the business
        send, each acting on a subscription first brought up to that instant."""
        rng = self.rng
        self.customers += 1
        email, name = f"customer{self.customers}@example.com", f"Customer {self.customers}"
        currency = self._pick(CURRENCIES)
        at = arrival
        command = self.command("customer.register", email=email, name=name, currency=currency)
        customer = Customer.register(derived_id("customer", command.id), email, name, currency, at)
        self.handled(command, {"customer_id": str(customer.id)}, at, customer)
        self.aggregates.append(customer)
        has_card = rng.random() < P_CARD_AT_SIGNUP
        if has_card:
            at = self.add_card(customer, at + _seconds(rng.randint(20, 600)))

        code = self._pick(PLAN_WEIGHTS)
        interval = YEAR if rng.random() < 0.2 else MONTH
        # A paid signup gives a card at checkout; without one, the price's trial.
        trial_days = None if rng.random() < 0.6 or not has_card else 0
        at += _seconds(rng.randint(5, 120))
        command = self.command(
            "subscription.start",
            customer_id=str(customer.id),
            plan_code=code,
            interval=str(interval),
            trial_days=trial_days,
        )
        price = self.prices[(code, interval, currency)]
        sub = Subscription.start(
            derived_id("subscription", command.id), customer.id, price, at, trial_days
        )
        invoices = self.bill(sub, customer, Mark.of(None))
        self.handled(command, _view(sub), at, sub, *invoices, customer)
        self.aggregates.append(sub)

        # What the customer does next follows the demo's daily chances, drawn as waiting
        # times (memoryless, so drawing anew after each transition changes nothing): a
        # few draws per subscription instead of one per subscription and day.
        while not sub.is_ended:
            choices = self.choices(sub, has_card)
            rate = sum(chance for chance, _ in choices)
            due = sub.due_at
            # Whole seconds, at least one after the last event.
            wait = math.ceil(rng.expovariate(rate) * 86_400) if rate else math.inf
            action_at = at + _seconds(wait) if wait < (horizon - at).total_seconds() else None
            if due is not None and due <= horizon and (action_at is None or due <= action_at):
                # A trial end, renewal or scheduled cancel comes first: the subscriber's
                # next move is drawn anew from there.
                mark = Mark.of(sub)
                sub.advance(due, customer.can_pay_at)
                self.take(sub, *self.bill(sub, customer, mark), customer)
                at = due
            elif action_at is None:
                break  # nothing more happens this year
            else:
                at = action_at
                action = self._choose(choices, rate)
                if action == ADD_CARD:
                    at = self.add_card(customer, at)
                    has_card = True
                else:
                    self.act(action, sub, customer, at)
        # The year ends: what fell due by then has happened.
        mark = Mark.of(sub)
        sub.advance(horizon, customer.can_pay_at)
        self.take(sub, *self.bill(sub, customer, mark), customer)

    def bill(self, sub: Subscription, customer: Customer, mark: Mark) -> list[Invoice]:
        """The invoices the subscription's events since ``mark`` call for, as the handlers
        and the billing clock issue them, each charged a minute later as the payment
        processor would (a customer without a usable card fails at once and stays in
        dunning: nobody here retries)."""
        invoices = bill(sub, customer, mark, DunningPolicy())
        for invoice in invoices:
            if invoice.pending is not None:
                charged_at = invoice.modified_on + timedelta(minutes=1)
                reference = f"ch_population_{invoice.id.hex[:20]}"
                invoice.record_success(invoice.pending.attempt, reference, charged_at)
        return invoices

    def choices(self, sub: Subscription, has_card: bool) -> list[tuple[float, str]]:
        """What a subscriber may do, with the demo's daily chances."""
        if sub.status is SubscriptionStatus.TRIALING:
            return [] if has_card else [(P_CARD_IN_TRIAL, ADD_CARD)]
        if sub.status is SubscriptionStatus.PAUSED:
            return [(P_RESUME, "resume")]
        if sub.cancel_at is not None:
            return [(P_REVOKE, "revoke")]
        choices = [
            (P_PAUSE, "pause"),
            (P_PAUSE, "pause_until"),
            (P_CANCEL_END, "cancel_at_period_end"),
            (P_CANCEL_NOW, "cancel_now"),
            (P_CANCEL_DATE, "cancel_on"),
        ]
        rank = PLAN_CODES.index(sub.price.plan_code)
        if rank + 1 < len(PLAN_CODES):
            choices.append((P_UPGRADE, "upgrade"))
        if rank > 0:
            choices.append((P_DOWNGRADE, "downgrade"))
        return choices

    def act(self, action: str, sub: Subscription, customer: Customer, at: datetime) -> None:
        """Applies one subscription command at ``at`` (nothing is due before it)."""
        command: _Command
        target = str(sub.id)
        mark = Mark.of(sub)
        extra: dict[str, Any] = {}
        # Each branch names its command before acting, so that a refusal (which the
        # simulation avoids, by the rules in choices) is recorded as dispatch records it.
        try:
            if action in ("upgrade", "downgrade"):
                step = 1 if action == "upgrade" else -1
                code = PLAN_CODES[PLAN_CODES.index(sub.price.plan_code) + step]
                now = action == "downgrade" and self.rng.random() < P_DOWNGRADE_NOW
                command = self.command(
                    "subscription.change_plan",
                    subscription_id=target,
                    plan_code=code,
                    when="now" if now else None,
                )
                new = self.prices[(code, sub.price.interval, sub.price.currency)]
                proration = sub.change_price(new, at, ChangeTiming.NOW if now else None)
                if proration is not None:
                    # Billing (``collect``, after this) invoices it, or credits the account.
                    extra = {"net": money_view(proration.net)}
            elif action == "pause":
                command = self.command("subscription.pause", subscription_id=target)
                sub.pause(at)
            elif action == "pause_until":
                resume_at = _midnight(at) + timedelta(days=self.rng.randint(14, 55))
                command = self.command(
                    "subscription.pause", subscription_id=target, resume_at=resume_at.isoformat()
                )
                sub.pause(at, resume_at)
            elif action == "resume":
                command = self.command("subscription.resume", subscription_id=target)
                sub.resume(at)
            elif action == "revoke":
                command = self.command("subscription.revoke_cancel", subscription_id=target)
                sub.revoke_cancel(at)
            elif action == "cancel_now":
                command = self.command(
                    "subscription.cancel", subscription_id=target, when="now", refund_unused=True
                )
                refund = sub.unused_value(at)
                sub.cancel_now(at, refund)
                extra = {"refund": money_view(refund)}
            elif action == "cancel_at_period_end":
                command = self.command(
                    "subscription.cancel", subscription_id=target, when="period_end"
                )
                sub.cancel_at_period_end(at)
            else:
                when = _midnight(at) + timedelta(days=self.rng.randint(5, 60))
                command = self.command(
                    "subscription.cancel",
                    subscription_id=target,
                    when="date",
                    cancel_at=when.isoformat(),
                )
                sub.cancel_on(when, at)
        except DomainError as refusal:
            self.rejected(command, refusal, at)
            return
        # As the handler does: an upgrade is invoiced, a downgrade now credits the account.
        invoices = self.bill(sub, customer, mark)
        self.handled(command, _view(sub) | extra, at, sub, *invoices, customer)

    def add_card(self, customer: Customer, at: datetime) -> datetime:
        """Adds a gateway token, sometimes after a refused raw card number; returns the
        instant of the last command."""
        rng = self.rng
        if rng.random() < P_CARD_NUMBER:
            # A careless integration sends the card number itself: the domain refuses it
            # and the refusal is recorded, as dispatch records it.
            self.try_card(customer, "4242 4242 4242 4242", at)
            at += _seconds(rng.randint(10, 300))
        self.try_card(customer, f"tok_{rng.getrandbits(64):016x}", at)
        return at

    def try_card(self, customer: Customer, token: str, at: datetime) -> None:
        rng = self.rng
        fields: dict[str, Any] = {
            "id": f"pm_{rng.getrandbits(48):012x}",
            "gateway": "sandbox",
            "token": token,
            "brand": rng.choice(["visa", "mastercard", "amex"]),
            "last4": f"{rng.randrange(10_000):04d}",
            "exp_month": rng.randint(1, 12),
            "exp_year": at.year + rng.randint(3, 6),
        }
        command = self.command(
            "customer.add_payment_method",
            customer_id=str(customer.id),
            **{("payment_method_id" if k == "id" else k): v for k, v in fields.items()},
        )
        try:
            method = PaymentMethod(**fields)
            customer.add_payment_method(method, make_default=False, at=at)
        except DomainError as refusal:
            self.rejected(command, refusal, at)
            return
        result = {"payment_method_id": method.id, "default": customer.default_payment_method_id}
        self.handled(command, result, at, customer)

    def _choose(self, choices: list[tuple[float, str]], rate: float) -> str:
        roll = self.rng.random() * rate
        for chance, action in choices:
            if roll < chance:
                return action
            roll -= chance
        return choices[-1][1]  # float rounding left the roll a hair above the total

    def _pick(self, weights: dict[str, float]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]


def _seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def _midnight(at: datetime) -> datetime:
    """The start of ``at``'s day: dates people pick (to cancel, to resume) are days."""
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _view(sub: Subscription) -> dict[str, Any]:
    """A command's answer, kept small: what the subscription is now."""
    return {
        "subscription_id": str(sub.id),
        "status": sub.status.value,
        "price_id": sub.price.id,
        "period_end": sub.period.end.isoformat(),
    }


def _save(ledger: Ledger, cohort: _Cohort) -> int:
    """Stores the cohort's events in their order, in saves of a bounded size."""
    aggregates = {a.id: a for a in cohort.aggregates}
    intervals = ledger.snapshotting_intervals
    events = cohort.events
    for start in range(0, len(events), MAX_EVENTS_PER_SAVE):
        chunk = events[start : start + MAX_EVENTS_PER_SAVE]
        # The ledger snapshots an aggregate it is given when one of the aggregate's events
        # lands on a multiple of its interval: those few are given too.
        due: dict[UUID, Aggregate] = {}
        for event in chunk:
            aggregate = aggregates.get(event.originator_id)
            if aggregate is not None:
                interval = intervals.get(type(aggregate))
                if interval and event.originator_version % interval == 0:
                    due[aggregate.id] = aggregate
        ledger.save(_InOrder(chunk), *due.values())
    return len(events)


def populate(
    ledger: Ledger,
    events: int,
    seed: int = 7,
    log: Callable[[str], None] = ignore,
    progress: Callable[[int], None] | None = None,
) -> Counter[str]:
    """Stores at least ``events`` events; returns the stored events counted by type
    ("Subscription.Renewed", ...). The ledger must be empty. ``progress`` is told how many
    events are stored after each cohort's save.

    A few percent more are stored than asked: every customer planned for the year is
    simulated to its end (see ``EVENTS_PER_CUSTOMER``)."""
    if ledger.recorder.max_notification_id():
        raise ValueError("populate needs an empty ledger")
    started = perf_counter()
    population = _Population(seed)
    population.open_catalog(START)
    stored = catalog = _save(ledger, population.cohort())
    logged, year, per_customer = 0, 0, float(EVENTS_PER_CUSTOMER)
    with collector.paused():
        while stored < events:
            # Customers arrive evenly over the year (at a random instant within their own
            # slot, so in order) and live until its end.
            opens = boundary(START, YEAR, year) + timedelta(minutes=1)
            horizon = boundary(START, YEAR, year + 1)
            span = (horizon - timedelta(hours=1) - opens).total_seconds()
            planned = max(1, math.ceil((events - stored) / per_customer))
            for first in range(0, planned, COHORT):
                for k in range(first, min(first + COHORT, planned)):
                    offset = math.floor(span * (k + population.rng.random()) / planned)
                    population.live(opens + _seconds(offset), horizon)
                stored += _save(ledger, population.cohort())
                if progress is not None:
                    progress(stored)
                if stored - logged >= LOG_EVERY:
                    logged = stored
                    log(
                        f"populate: {stored:,} events stored, {population.customers:,} "
                        f"customers, {stored / (perf_counter() - started):,.0f} events/s"
                    )
            year += 1
            # Should the year fall short (by chance, with few customers), the next one plans
            # from what a customer stored so far, with a margin: one more year is enough.
            per_customer = min(per_customer, 0.8 * (stored - catalog) / population.customers)
    return population.counts
