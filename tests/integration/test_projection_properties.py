"""Property-based audit: the projections must say what the aggregates say.

Hypothesis tells random stories: a few EUR customers (some with a card, some without;
cards that pay, decline, expire or pay after one decline), subscriptions to Basic or Pro
monthly or Pro yearly, with or without a trial, and a random sequence of plan changes,
cancellations (now, with or without refund, at period end, on a date), revocations, pauses
(with or without a resume date), resumes, new cards, coupons, second subscriptions, clock
advances of an hour to 40 days, the billing clock run for one subscription at a time
(often late, so that due transitions are recorded after other business of the same
customer), the payment processor, dunning retries and give-ups, and refunds. Refused
commands are part of life and skipped. The projections catch up at random points, in
small batches.

After each catch-up, and at the end (every subscription advanced to a final instant, in a
random order), the tables are compared with expectations computed here from the stored
events and the aggregates alone, never with the projections' own code:

1. ``current_subscriptions`` is each aggregate as stored;
2. ``due_work``: the earliest row of a live subscription is its ``due_at``, ended ones
   have no rows, and the rows are those docs/projections.md lists;
3. revenue, per day: MRR, paying customers, registered customers and subscribers by plan
   and status at the end of the day, each day's movements classified per customer in
   business-time order (ties in recording order), trial counts, money collected and
   refunded, failed and recovered payments, the bridge;
4. ``transaction_history``: per customer, one row per event of the customer, of its
   subscriptions and of its invoices (but payment requests), in business-time order, with
   the documented amounts;
5. a rebuild from position 0 writes exactly what the catch-ups wrote.

The stories run on SQLite (a file per example) and, fewer, on PostgreSQL (a schema per
example, sessions in UTC). The last test is what they found on PostgreSQL when the
session's time zone was not UTC: movements reclassified after a late change were booked
on the local day of the changes read back from ``revenue_changes``.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from random import Random
from typing import Any, Literal
from uuid import UUID, uuid4

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import schemas as s
from commands.bootstrap import bootstrap, projector
from commands.lifecycle import advance_subscription, end_dunning, retry_payment
from commands.payments import PaymentProcessor
from gateways.port import Gateways
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.customers import Customer
from ledger.dunning import DunningPolicy, ExhaustedAction
from ledger.errors import DomainError
from ledger.invoices import Invoice, InvoiceStatus
from ledger.subscriptions import Subscription, SubscriptionStatus
from projections import all_projections, stats
from projections.database import Database
from projections.history import customer_history
from projections.runner import Projector
from projections.values import read_day, read_instant, read_int, read_maybe_instant, read_uuid
from tests.conftest import POSTGRES_URL
from tests.integration.conftest import Shop

START = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
CURRENCY = "EUR"
# The catalog of Shop.open_catalog: (plan code, interval).
PLANS = {
    "basic/month": ("basic", "month"),
    "pro/month": ("pro", "month"),
    "pro/year": ("pro", "year"),
}
LIVE = frozenset(
    {
        SubscriptionStatus.TRIALING,
        SubscriptionStatus.ACTIVE,
        SubscriptionStatus.PAST_DUE,
        SubscriptionStatus.PAUSED,
        SubscriptionStatus.UNPAID,
    }
)
MOVEMENT_COLUMNS = (
    "new_mrr",
    "expansion_mrr",
    "contraction_mrr",
    "churn_mrr",
    "reactivation_mrr",
    "new_customers",
    "reactivated_customers",
    "churned_customers",
    "registered_customers",
    "trials_started",
    "trials_converted",
    "trials_not_converted",
    "collected",
    "refunded",
    "failed_payments",
    "recovered_payments",
    "recovered",
)
# Sandbox tokens of the cards customers add.
TOKENS = (
    "tok_visa",
    "tok_chargeDeclinedInsufficientFunds",
    "tok_chargeDeclinedExpiredCard",
    "tok_recoversAfter_1",
)
# The coupons of every story: (code, fields of RegisterCoupon).
COUPONS = {
    "QUARTER": {"percent_off": Decimal("25"), "duration": "repeating", "duration_periods": 2},
    "FIVE": {"amount_off": 500, "currency": CURRENCY, "duration": "once"},
    "FREE": {"percent_off": Decimal("100"), "duration": "forever"},
}

# The actions of a story. Indices pick among the customers or subscriptions that exist
# (modulo their number); an action with nothing to act on is skipped.


@dataclass(frozen=True)
class Wait:
    minutes: int
    microseconds: int = 0


@dataclass(frozen=True)
class Register:
    card: str | None  # the card's token, if any


@dataclass(frozen=True)
class AddCard:
    customer: int
    token: str


@dataclass(frozen=True)
class Subscribe:
    customer: int
    plan: str
    trial_days: int | None  # None: the price's own trial


@dataclass(frozen=True)
class ChangePlan:
    subscription: int | None  # None: the one the previous action was about
    plan: str
    when: Literal["now", "period_end"] | None


@dataclass(frozen=True)
class Cancel:
    subscription: int | None  # None: the one the previous action was about
    when: Literal["now", "period_end", "date"]
    refund: bool
    in_days: int  # for a date: that many days after now


@dataclass(frozen=True)
class Revoke:
    subscription: int | None  # None: the one the previous action was about


@dataclass(frozen=True)
class Pause:
    subscription: int | None  # None: the one the previous action was about
    resume_in_days: int | None


@dataclass(frozen=True)
class Resume:
    subscription: int | None  # None: the one the previous action was about


@dataclass(frozen=True)
class Advance:
    """The billing clock, for one subscription, now."""

    subscription: int | None  # None: the one the previous action was about


@dataclass(frozen=True)
class ApplyCoupon:
    subscription: int | None  # None: the one the previous action was about
    coupon: str


@dataclass(frozen=True)
class Pay:
    """The payment processor carries out the requests recorded so far."""


@dataclass(frozen=True)
class Dun:
    """Dunning, as the billing clock does it now: each invoice in dunning is retried if a
    retry is due (its day came, or a new default card), else given up if dunning ran out."""


@dataclass(frozen=True)
class Void:
    invoice: int  # among those in dunning


@dataclass(frozen=True)
class Refund:
    invoice: int  # among the paid ones
    amount: int | None  # None: all that is left


@dataclass(frozen=True)
class CatchUp:
    batch_size: int


Action = (
    Wait
    | Register
    | AddCard
    | Subscribe
    | ChangePlan
    | Cancel
    | Revoke
    | Pause
    | Resume
    | Advance
    | ApplyCoupon
    | Pay
    | Dun
    | Void
    | Refund
    | CatchUp
)

# Negative indices count from the end: actions often concern the latest subscriptions.
index = st.integers(-2, 2)
# A subscription, or None for the one of the previous action: customers do several things.
subscription = st.one_of(st.none(), index)
plans = st.sampled_from(sorted(PLANS))
minutes = st.one_of(
    st.integers(1, 48).map(lambda hours: 60 * hours),  # hours, keeping the minute
    st.integers(1, 40).map(lambda days: 1440 * days),  # whole days: lands on period ends
    st.integers(60, 40 * 1440),  # anything in between
)
# Mostly whole minutes; sometimes a fraction of a second (a real clock's instants).
waits = st.builds(Wait, minutes, st.one_of(st.just(0), st.just(0), st.integers(1, 999_999)))
subscribes = st.builds(Subscribe, index, plans, st.sampled_from([None, 0, 3, 14]))
changes = st.builds(ChangePlan, subscription, plans, st.sampled_from([None, "now", "period_end"]))
cancels = st.builds(
    Cancel,
    subscription,
    st.sampled_from(["now", "period_end", "period_end", "date", "date"]),
    st.booleans(),
    st.integers(1, 60),
)
pauses = st.builds(Pause, subscription, st.one_of(st.none(), st.integers(1, 60)))
advances = st.builds(Advance, subscription)
# Mostly cards that pay.
tokens = st.sampled_from([TOKENS[0], *TOKENS])
# Picked with weights: time passes, plans change, cancellations come and go.
weighted: list[st.SearchStrategy[Action]] = [
    *[waits] * 4,
    st.builds(Register, st.one_of(st.none(), tokens)),
    st.builds(AddCard, index, tokens),
    *[subscribes] * 2,
    *[changes] * 3,
    *[cancels] * 3,
    *[st.builds(Revoke, subscription)] * 2,
    *[pauses] * 2,
    *[st.builds(Resume, subscription)] * 2,
    *[advances] * 3,
    *[st.builds(ApplyCoupon, subscription, st.sampled_from(sorted(COUPONS)))] * 2,
    *[st.just(Pay())] * 4,
    *[st.just(Dun())] * 2,
    st.builds(Void, index),
    st.builds(Refund, index, st.one_of(st.none(), st.integers(1, 1500))),
    st.builds(CatchUp, st.integers(3, 20)),
]
actions = st.sampled_from(weighted).flatmap(lambda strategy: strategy)


@dataclass(frozen=True)
class Tale:
    """A story: who is there at first, what happens, and how it ends."""

    first_customers: tuple[str | None, ...]  # their card's token, if any
    first_subscriptions: tuple[Subscribe, ...]
    actions: tuple[Action, ...]
    final_wait_days: int
    final_batch_size: int
    advance_order_seed: int
    on_exhausted: ExhaustedAction  # when dunning gives up


tales = st.builds(
    Tale,
    st.lists(st.one_of(st.none(), tokens), min_size=1, max_size=4).map(tuple),
    st.lists(subscribes, min_size=1, max_size=5).map(tuple),
    st.lists(actions, min_size=20, max_size=80).map(tuple),
    st.integers(0, 70),
    st.integers(3, 20),
    st.integers(0, 2**16),
    st.sampled_from(ExhaustedAction),
)


class Story:
    def __init__(
        self, ledger: Ledger, projections: Projector, after_catch_up: Callable[[], None]
    ) -> None:
        self.shop = Shop(ledger, SimulatedClock(START))
        self.shop.open_catalog()
        for code, fields in COUPONS.items():
            self.shop.send(s.RegisterCoupon, code=code, **fields)
        self.ledger = ledger
        self.projections = projections
        self.processor = PaymentProcessor(
            ledger,
            Gateways([self.shop.sandbox]),
            projections.database,
            self.clock,
            wait=lambda *_: None,
        )
        self.after_catch_up = after_catch_up
        self.customers: list[UUID] = []
        self.cards: Counter[UUID] = Counter()
        self.subscriptions: list[UUID] = []
        self.latest: UUID | None = None  # the subscription of the latest action

    @property
    def clock(self) -> SimulatedClock:
        return self.shop.clock

    def tell(self, tale: Tale) -> None:
        self.ledger.dunning_policy = DunningPolicy(on_exhausted=tale.on_exhausted)
        for card in tale.first_customers:
            self.do(Register(card))
        for subscribe in tale.first_subscriptions:
            self.do(subscribe)
        for action in tale.actions:
            self.do(action)
        # The end: a last wait, then the billing clock for everything, in a random order,
        # and the payments it asked for.
        self.clock.advance(timedelta(days=tale.final_wait_days))
        order = list(self.subscriptions)
        Random(tale.advance_order_seed).shuffle(order)
        for subscription_id in order:
            advance_subscription(self.ledger, subscription_id, self.clock.now())
        self.processor.run()
        self.catch_up(tale.final_batch_size)

    def catch_up(self, batch_size: int) -> None:
        self.projections.batch_size = batch_size
        self.projections.catch_up()
        self.after_catch_up()

    def do(self, action: Action) -> None:
        with suppress(DomainError):  # a refusal is part of the story
            self._do(action)

    def _invoice(self, i: int, wanted: Callable[[Invoice], bool]) -> Invoice | None:
        """One of the invoices that are ``wanted``, if there are any."""
        ids = sorted(self.ledger.ids_of(Invoice))
        candidates = [i for i in map(self.ledger.invoice, ids) if wanted(i)]
        return candidates[i % len(candidates)] if candidates else None

    def _customer(self, i: int) -> UUID | None:
        return self.customers[i % len(self.customers)] if self.customers else None

    def _subscription(self, i: int | None) -> UUID | None:
        """One of the subscriptions that have not ended (as stored), if there are any, or
        with ``None`` the subscription of the previous action."""
        if i is None:
            return self.latest
        live = [
            subscription_id
            for subscription_id in self.subscriptions
            if not self.ledger.subscription(subscription_id).is_ended
        ]
        candidates = live or self.subscriptions
        return candidates[i % len(candidates)] if candidates else None

    def _do(self, action: Action) -> None:
        send = self.shop.send
        if isinstance(action, Wait):
            self.clock.advance(timedelta(minutes=action.minutes, microseconds=action.microseconds))
        elif isinstance(action, Register):
            n = len(self.customers)
            answer = send(
                s.RegisterCustomer, email=f"c{n}@example.com", name=f"C{n}", currency="EUR"
            )
            self.customers.append(UUID(answer["customer_id"]))
            if action.card is not None:
                self._card(self.customers[-1], action.card)
        elif isinstance(action, AddCard):
            if (customer_id := self._customer(action.customer)) is not None:
                self._card(customer_id, action.token)
        elif isinstance(action, Pay):
            self.processor.run()
        elif isinstance(action, Dun):
            for invoice_id in sorted(self.ledger.ids_of(Invoice)):
                if self.ledger.invoice(invoice_id).awaits_retry:
                    now = self.clock.now()
                    retry_payment(self.ledger, invoice_id, now) or end_dunning(
                        self.ledger, invoice_id, now
                    )
        elif isinstance(action, Refund):
            if (invoice := self._invoice(action.invoice, refundable)) is not None:
                send(s.RefundInvoice, invoice_id=invoice.id, amount=action.amount)
        elif isinstance(action, Void):
            if (invoice := self._invoice(action.invoice, in_dunning)) is not None:
                send(s.VoidInvoice, invoice_id=invoice.id)
        elif isinstance(action, CatchUp):
            self.catch_up(action.batch_size)
        elif isinstance(action, Subscribe):
            if (customer_id := self._customer(action.customer)) is not None:
                plan_code, interval = PLANS[action.plan]
                answer = send(
                    s.StartSubscription,
                    customer_id=customer_id,
                    plan_code=plan_code,
                    interval=interval,
                    trial_days=action.trial_days,
                )
                self.subscriptions.append(UUID(answer["subscription_id"]))
                self.latest = self.subscriptions[-1]
        elif (subscription_id := self._subscription(action.subscription)) is None:
            return
        else:
            self.latest = subscription_id
            self._act_on(subscription_id, action)

    def _act_on(self, subscription_id: UUID, action: Action) -> None:
        send = self.shop.send
        if isinstance(action, ChangePlan):
            plan_code, interval = PLANS[action.plan]
            send(
                s.ChangePlan,
                subscription_id=subscription_id,
                plan_code=plan_code,
                interval=interval,
                when=action.when,
            )
        elif isinstance(action, Cancel):
            if action.when == "date":
                cancel_at = self.clock.now() + timedelta(days=action.in_days)
                send(
                    s.CancelSubscription,
                    subscription_id=subscription_id,
                    when=cancel_at,
                )
            else:
                refund = action.refund and action.when == "now"
                send(
                    s.CancelSubscription,
                    subscription_id=subscription_id,
                    when=action.when,
                    refund_unused=refund,
                )
        elif isinstance(action, Revoke):
            send(s.RevokeCancel, subscription_id=subscription_id)
        elif isinstance(action, Pause):
            resume_at = (
                None
                if action.resume_in_days is None
                else self.clock.now() + timedelta(days=action.resume_in_days)
            )
            send(s.PauseSubscription, subscription_id=subscription_id, resume_at=resume_at)
        elif isinstance(action, Resume):
            send(s.ResumeSubscription, subscription_id=subscription_id)
        elif isinstance(action, ApplyCoupon):
            send(s.ApplyCoupon, subscription_id=subscription_id, coupon=action.coupon)
        else:
            assert isinstance(action, Advance)
            advance_subscription(self.ledger, subscription_id, self.clock.now())

    def _card(self, customer_id: UUID, token: str) -> None:
        """A new card, which becomes the customer's default."""
        self.cards[customer_id] += 1
        self.shop.card(customer_id, f"pm_{self.cards[customer_id]}", token, make_default=True)


def in_dunning(invoice: Invoice) -> bool:
    return invoice.awaits_retry


def refundable(invoice: Invoice) -> bool:
    return invoice.status is InvoiceStatus.PAID and invoice.refundable.amount > 0


# What the stored events say, computed without the projections.


@dataclass(frozen=True)
class SubState:
    """What a subscription counts as: plan, status and MRR (``Subscription.mrr``)."""

    plan_code: str
    status: SubscriptionStatus
    mrr: int

    @classmethod
    def of(cls, sub: Subscription | None) -> SubState | None:
        return None if sub is None else cls(sub.price.plan_code, sub.status, sub.mrr.amount)


@dataclass(frozen=True)
class Step:
    """One stored event of a customer or a subscription, and what it did: the
    subscription's state just before and just after it, in the subscription's own order
    of events (which is its order in business time, save when the ledger stamps an event
    earlier than one it recorded before; the event's effect is then still what it did)."""

    position: int
    event: Any
    customer_id: UUID
    subscription_id: UUID | None  # None for a customer's own event
    before: SubState | None  # None for a customer's event and for a start
    after: SubState | None  # None for a customer's event

    @property
    def delta(self) -> int:
        """The change of the subscription's MRR."""
        return (self.after.mrr if self.after else 0) - (self.before.mrr if self.before else 0)

    @property
    def at(self) -> datetime:
        at: datetime = self.event.timestamp
        return at

    @property
    def key(self) -> tuple[datetime, int]:
        """Business time, then recording order."""
        return self.at, self.position


@dataclass
class Truth:
    steps: list[Step]  # every customer and subscription event, in business-time order
    customers: dict[UUID, Customer]
    subscriptions: dict[UUID, Subscription]  # as the application loads them
    invoice_events: list[tuple[int, Any]]  # (position, event), in recording order


def truth(ledger: Ledger) -> Truth:
    positions = {
        (UUID(str(n.originator_id)), n.originator_version): n.id
        for n in ledger.recorder.select_notifications(1, 10_000_000)
    }
    steps: list[Step] = []
    customers = {i: ledger.customer(i) for i in ledger.ids_of(Customer)}
    for customer_id in customers:
        for fact in ledger.events.get(customer_id):
            position = positions[customer_id, fact.originator_version]
            steps.append(Step(position, fact, customer_id, None, None, None))
    subscriptions: dict[UUID, Subscription] = {}
    for subscription_id in ledger.ids_of(Subscription):
        folded: Any = None
        for stored in ledger.events.get(subscription_id):
            event: Any = stored
            before = SubState.of(folded)
            folded = event.mutate(folded)
            assert isinstance(folded, Subscription)
            steps.append(
                Step(
                    positions[subscription_id, event.originator_version],
                    event,
                    folded.customer_id,
                    subscription_id,
                    before,
                    SubState.of(folded),
                )
            )
        subscriptions[subscription_id] = ledger.subscription(subscription_id)
    steps.sort(key=lambda step: step.key)
    invoice_events = sorted(
        (positions[invoice_id, event.originator_version], event)
        for invoice_id in ledger.ids_of(Invoice)
        for event in ledger.events.get(invoice_id)
    )
    return Truth(steps, customers, subscriptions, invoice_events)


# 1. current_subscriptions


SUBSCRIPTION_COLUMNS = (
    "subscription_id",
    "customer_id",
    "plan_code",
    "price_id",
    "currency",
    "amount",
    "interval_unit",
    "interval_count",
    "status",
    "started_at",
    "trial_end",
    "period_index",
    "period_start",
    "period_end",
    "pending_price_id",
    "cancel_at",
    "cancel_at_period_end",
    "resume_at",
    "ended_at",
    "invoices_in_dunning",
    "coupon_code",
    "percent_off",
    "amount_off",
    "discount_first_period",
    "discount_last_period",
    "mrr",
    "updated_at",
)
# Columns that are integers when not null.
MAYBE_INTEGERS = ("amount_off", "discount_first_period", "discount_last_period")


def as_stored(sub: Subscription) -> dict[str, Any]:
    """The row docs/projections.md describes, from the aggregate."""
    discount = sub.discount
    return {
        "customer_id": sub.customer_id,
        "plan_code": sub.price.plan_code,
        "price_id": sub.price.id,
        "currency": sub.price.currency,
        "amount": sub.price.amount.amount,
        "interval_unit": str(sub.price.interval.unit),
        "interval_count": sub.price.interval.count,
        "status": sub.status.value,
        "started_at": sub.created_on,
        "trial_end": sub.trial_end,
        "period_index": sub.period.index,
        "period_start": sub.period.start,
        "period_end": sub.period.end,
        "pending_price_id": sub.pending_price.id if sub.pending_price else None,
        "cancel_at": sub.cancel_at,
        "cancel_at_period_end": sub.cancels_at_period_end,
        "resume_at": sub.resume_at,
        "ended_at": sub.ended_at,
        "invoices_in_dunning": len(sub.failing_invoices),
        "coupon_code": discount.coupon_code if discount else None,
        "percent_off": str(discount.percent_off) if discount and discount.percent_off else None,
        "amount_off": discount.amount_off.amount if discount and discount.amount_off else None,
        "discount_first_period": discount.first_period if discount else None,
        "discount_last_period": discount.last_period if discount else None,
        "mrr": sub.mrr.amount,
        "updated_at": sub.modified_on,
    }


def projected_subscriptions(db: Database) -> dict[UUID, dict[str, Any]]:
    rows: dict[UUID, dict[str, Any]] = {}
    for values in db.query(f"SELECT {', '.join(SUBSCRIPTION_COLUMNS)} FROM current_subscriptions"):
        row = dict(zip(SUBSCRIPTION_COLUMNS, values, strict=True))
        for column in ("started_at", "period_start", "period_end", "updated_at"):
            row[column] = read_instant(row[column])
        for column in ("trial_end", "cancel_at", "resume_at", "ended_at"):
            row[column] = read_maybe_instant(row[column])
        for column in ("amount", "interval_count", "period_index", "invoices_in_dunning", "mrr"):
            row[column] = read_int(row[column])
        for column in MAYBE_INTEGERS:
            row[column] = None if row[column] is None else read_int(row[column])
        row["cancel_at_period_end"] = bool(row["cancel_at_period_end"])
        row["customer_id"] = read_uuid(row["customer_id"])
        rows[read_uuid(row.pop("subscription_id"))] = row
    return rows


def check_current_subscriptions(db: Database, known: Truth) -> None:
    projected = projected_subscriptions(db)
    assert set(projected) == set(known.subscriptions)
    for subscription_id, sub in known.subscriptions.items():
        assert projected[subscription_id] == as_stored(sub), f"subscription {subscription_id}"


# 2. due_work


def documented_due(sub: Subscription) -> dict[str, tuple[datetime, str]]:
    """The rows docs/projections.md lists for the subscription: kind -> (due_at, price)."""
    if sub.is_ended:
        return {}
    rows: dict[str, tuple[datetime, str]] = {}
    cancel_at = sub.cancel_at
    if cancel_at is not None:
        rows["cancel"] = (cancel_at, sub.price.id)
    if (
        sub.status is SubscriptionStatus.PAUSED
        and sub.resume_at is not None
        and (cancel_at is None or sub.resume_at < cancel_at)
    ):
        rows["resume"] = (sub.resume_at, sub.price.id)
    if cancel_at is None or sub.period.end < cancel_at:
        kind = "trial_end" if sub.status is SubscriptionStatus.TRIALING else "renewal"
        rows[kind] = (sub.period.end, sub.price.id)
        if sub.pending_price is not None:
            rows["plan_change"] = (sub.period.end, sub.pending_price.id)
    return rows


def check_due_work(db: Database, known: Truth) -> None:
    projected: defaultdict[UUID, dict[str, tuple[datetime, str]]] = defaultdict(dict)
    for subscription_id, kind, due_at, customer_id, price_id in db.query(
        "SELECT subscription_id, kind, due_at, customer_id, price_id FROM due_work"
    ):
        sub = known.subscriptions[read_uuid(subscription_id)]
        assert read_uuid(customer_id) == sub.customer_id
        projected[sub.id][str(kind)] = (read_instant(due_at), str(price_id))
    assert set(projected) <= set(known.subscriptions)
    for subscription_id, sub in known.subscriptions.items():
        rows = projected.get(subscription_id, {})
        if sub.is_ended:
            assert rows == {}, f"ended subscription {subscription_id} has due work"
            continue
        assert min(at for at, _ in rows.values()) == sub.due_at, f"subscription {subscription_id}"
        assert rows == documented_due(sub), f"subscription {subscription_id}"


# 3. Revenue


def classify(before: int, after: int, has_paid: bool) -> list[tuple[str, int]]:
    """metrics.md, "MRR movements": the flows of one change of a customer's MRR."""
    if before == 0 and after > 0:
        if has_paid:
            return [("reactivation_mrr", after), ("reactivated_customers", 1)]
        return [("new_mrr", after), ("new_customers", 1)]
    if before > 0 and after == 0:
        return [("churn_mrr", before), ("churned_customers", 1)]
    if after > before:
        return [("expansion_mrr", after - before)]
    return [("contraction_mrr", before - after)]


# The events the revenue projection reads (docs/projections.md): they give a day its row.
REVENUE_EVENTS = (
    Customer.Registered,
    Subscription.Started,
    Subscription.TrialEnded,
    Subscription.Renewed,
    Subscription.PlanChanged,
    Subscription.Canceled,
    Subscription.Paused,
    Subscription.Resumed,
    Subscription.DiscountApplied,
    Subscription.DiscountEnded,
    Subscription.PastDue,
    Subscription.Recovered,
    Subscription.DunningExhausted,
)
# The invoice events it reads (all but PaymentRequested).
REVENUE_INVOICE_EVENTS = (
    Invoice.Issued,
    Invoice.PaymentSucceeded,
    Invoice.PaymentFailed,
    Invoice.MarkedUncollectible,
    Invoice.Voided,
    Invoice.RefundRequested,
    Invoice.RefundSucceeded,
    Invoice.RefundFailed,
)
PlanKey = tuple[str, str]  # (plan code, status)


@dataclass(frozen=True)
class DayEnd:
    mrr: int
    paying: int
    customers: int
    subscribers: dict[PlanKey, tuple[int, int]]  # live subscriptions and their MRR
    customer_mrr: dict[UUID, int]  # each customer's MRR, 0 or above


@dataclass
class Revenue:
    first: date
    last: date
    flows: defaultdict[date, Counter[str]]
    levels: dict[date, DayEnd]


def payment_flows(known: Truth, flows: defaultdict[date, Counter[str]]) -> None:
    """metrics.md, "Payments": what the invoices' events collected, refunded, failed and
    recovered, each on its own day. A payment collects what its attempt's request asked
    for; a refund returns what its request asked for."""
    requested: dict[tuple[UUID, int], int] = {}
    refunds: dict[tuple[UUID, int], int] = {}
    for _, event in known.invoice_events:
        invoice_id, today = event.originator_id, flows[event.timestamp.date()]
        if isinstance(event, Invoice.PaymentRequested):
            requested[invoice_id, event.request.attempt] = event.request.amount.amount
        elif isinstance(event, Invoice.PaymentSucceeded):
            amount = requested[invoice_id, event.attempt]
            today["collected"] += amount
            if event.attempt > 1:
                today["recovered_payments"] += 1
                today["recovered"] += amount
        elif isinstance(event, Invoice.PaymentFailed):
            today["failed_payments"] += 1
        elif isinstance(event, Invoice.RefundRequested):
            refunds[invoice_id, event.request.number] = event.request.amount.amount
        elif isinstance(event, Invoice.RefundSucceeded):
            today["refunded"] += refunds[invoice_id, event.number]


def revenue(known: Truth) -> Revenue:
    """Flows and levels per day, from the steps alone (one currency in these stories)."""
    flows: defaultdict[date, Counter[str]] = defaultdict(Counter)
    # Live subscriptions and their MRR per (plan, status): each step moves its
    # subscription from its state before to its state after.
    live: defaultdict[PlanKey, list[int]] = defaultdict(lambda: [0, 0])
    customer_mrr: Counter[UUID] = Counter()
    has_paid: set[UUID] = set()
    registered = 0
    levels: dict[date, DayEnd] = {}
    revenue_days = [
        step.at.date() for step in known.steps if isinstance(step.event, REVENUE_EVENTS)
    ] + [
        event.timestamp.date()
        for _, event in known.invoice_events
        if isinstance(event, REVENUE_INVOICE_EVENTS)
    ]
    first, last = min(revenue_days), max(revenue_days)
    payment_flows(known, flows)

    def move(state: SubState | None, sign: int) -> None:
        if state is not None and state.status in LIVE:
            count_and_mrr = live[state.plan_code, state.status.value]
            count_and_mrr[0] += sign
            count_and_mrr[1] += sign * state.mrr

    def close(day: date) -> None:
        subscribers = {key: (count, mrr) for key, (count, mrr) in live.items() if count}
        levels[day] = DayEnd(
            sum(customer_mrr.values()),
            sum(1 for mrr in customer_mrr.values() if mrr > 0),
            registered,
            subscribers,
            dict(customer_mrr),
        )

    steps = iter(known.steps)
    step: Step | None = next(steps, None)
    day = first
    while day <= last:
        while step is not None and step.at.date() <= day:
            event = step.event
            today = flows[step.at.date()]
            if isinstance(event, Customer.Registered):
                registered += 1
                today["registered_customers"] += 1
            elif step.after is not None:
                before_status = step.before.status if step.before else None
                if (
                    isinstance(event, Subscription.Started)
                    and step.after.status is SubscriptionStatus.TRIALING
                ):
                    today["trials_started"] += 1
                elif isinstance(event, Subscription.TrialEnded):
                    today["trials_converted" if event.converted else "trials_not_converted"] += 1
                elif (
                    isinstance(event, Subscription.Canceled)
                    and before_status is SubscriptionStatus.TRIALING
                ):
                    today["trials_not_converted"] += 1
                move(step.before, -1)
                move(step.after, +1)
                if delta := step.delta:
                    before = customer_mrr[step.customer_id]
                    after = before + delta
                    for column, amount in classify(before, after, step.customer_id in has_paid):
                        today[column] += amount
                    customer_mrr[step.customer_id] = after
                    if after > 0:
                        has_paid.add(step.customer_id)
            step = next(steps, None)
        close(day)
        day += timedelta(days=1)
    assert step is None or step.at.date() > last
    return Revenue(first, last, flows, levels)


def check_revenue(db: Database, known: Truth, every_day_figures: bool) -> None:
    expected = revenue(known)
    stored: dict[date, dict[str, int]] = {}
    for row in db.query(
        f"SELECT currency, day, {', '.join(MOVEMENT_COLUMNS)} FROM revenue_days ORDER BY day"
    ):
        assert row[0] == CURRENCY
        stored[read_day(row[1])] = {
            column: read_int(value) for column, value in zip(MOVEMENT_COLUMNS, row[2:], strict=True)
        }
    days = [
        expected.first + timedelta(days=n) for n in range((expected.last - expected.first).days + 1)
    ]
    assert sorted(stored) == days, "revenue_days must run without holes from first to last day"
    for day in days:
        wanted = {column: expected.flows[day][column] for column in MOVEMENT_COLUMNS}
        assert stored[day] == wanted, f"revenue_days on {day}"
    daily = {
        read_day(day): (read_int(mrr), read_int(paying), read_int(customers))
        for day, mrr, paying, customers in db.query(
            "SELECT day, mrr, paying_customers, customers FROM revenue_daily WHERE currency = ?",
            (CURRENCY,),
        )
    }
    for day in days:
        level = expected.levels[day]
        assert daily[day] == (level.mrr, level.paying, level.customers), f"revenue_daily on {day}"
    if not every_day_figures:
        return
    previous = DayEnd(0, 0, 0, {}, {})
    for day in days:
        level = expected.levels[day]
        figures = stats.figures(db, CURRENCY, day, day)
        assert figures.mrr == level.mrr, f"MRR at the end of {day}"
        assert figures.paying_customers == level.paying, f"paying customers at the end of {day}"
        assert figures.customers == level.customers, f"customers at the end of {day}"
        assert figures.mrr_at_start == previous.mrr, f"MRR at the start of {day}"
        assert figures.mrr == figures.mrr_at_start + figures.movements.net, f"bridge on {day}"
        paying_change = (
            figures.new_customers + figures.reactivated_customers - figures.churned_customers
        )
        assert paying_change == level.paying - previous.paying, f"paying change on {day}"
        subscribers = {
            (plan.plan_code, plan.status): (plan.subscribers, plan.mrr)
            for plan in figures.subscribers
        }
        assert subscribers == level.subscribers, f"subscribers by plan at the end of {day}"
        paid = expected.flows[day]
        assert (
            figures.collected,
            figures.refunded,
            figures.failed_payments,
            figures.recovered_payments,
            figures.recovered,
        ) == tuple(paid[flow] for flow in MOVEMENT_COLUMNS[-5:]), f"payments on {day}"
        check_cohort(figures, previous, level)
        # And from this day to the last: ranges of every length.
        check_cohort(
            stats.figures(db, CURRENCY, day, days[-1]), previous, expected.levels[days[-1]]
        )
        previous = level


def check_cohort(figures: stats.Figures, start: DayEnd, end: DayEnd) -> None:
    """metrics.md, "Churn rates" and "NRR": over the customers paying at ``start`` (the
    end of the day before the range), from each one's MRR then and at ``end``."""
    paying = {customer: mrr for customer, mrr in start.customer_mrr.items() if mrr > 0}
    at_end = {customer: end.customer_mrr.get(customer, 0) for customer in paying}
    lost = sum(max(0, paying[c] - at_end[c]) for c in paying)
    gained = sum(max(0, at_end[c] - paying[c]) for c in paying)
    churned = sum(1 for mrr in at_end.values() if mrr == 0)
    where = f"cohort of {figures.start} to {figures.end}"
    assert figures.cohort == stats.Cohort(
        len(paying), sum(paying.values()), sum(at_end.values()), lost, churned
    ), where
    assert figures.cohort.mrr_at_start == figures.mrr_at_start, where
    assert figures.cohort.expansion_mrr == gained, where
    if not paying:
        assert (figures.customer_churn_rate, figures.revenue_churn_rate) == (None, None), where
        assert figures.net_revenue_retention is None, where
        return
    customer_churn = Fraction(churned, len(paying))
    revenue_churn = Fraction(lost, figures.mrr_at_start)
    nrr = Fraction(sum(at_end.values()), figures.mrr_at_start)
    assert figures.customer_churn_rate == customer_churn, where
    assert figures.revenue_churn_rate == revenue_churn, where
    assert figures.net_revenue_retention == nrr, where
    assert 0 <= customer_churn <= 1, where
    assert 0 <= revenue_churn <= 1, where
    assert nrr >= 0, where
    assert nrr == 1 - revenue_churn + Fraction(gained, figures.mrr_at_start), where


# 4. transaction_history


HistoryRow = tuple[Any, ...]


def documented_line(step: Step) -> HistoryRow:
    """(position, occurred_at, kind, subscription, invoice, price, previous price, currency,
    amount, credit, charge, effective_at) as docs/projections.md tabulates them."""
    event = step.event
    sub = step.subscription_id
    line: dict[str, Any] = {
        "invoice": None,
        "price": None,
        "previous": None,
        "currency": None,
        "amount": None,
        "credit": None,
        "charge": None,
        "effective": None,
    }
    if isinstance(event, Customer.Registered):
        kind = "customer.registered"
    elif isinstance(event, Customer.ContactChanged):
        kind = "customer.contact_changed"
    elif isinstance(event, Customer.PaymentMethodAdded):
        kind = "customer.payment_method_added"
    elif isinstance(event, Customer.DefaultPaymentMethodSwitched):
        kind = "customer.default_payment_method_switched"
    elif isinstance(event, Customer.CreditAdjusted):
        kind = "customer.credit_adjusted"
        line |= {"currency": event.amount.currency, "amount": event.amount.amount}
    elif isinstance(event, Customer.TaxRateSet):
        kind = "customer.tax_rate_set"
    elif isinstance(event, Subscription.Started):
        price = event.price
        line |= {"price": price.id, "currency": price.currency}
        if event.trial_end is not None:
            kind = "subscription.trial_started"
        else:
            kind = "subscription.started"
            line["amount"] = price.amount.amount
    elif isinstance(event, Subscription.TrialEnded):
        line |= {"price": event.price.id, "currency": event.price.currency}
        if event.converted:
            kind = "subscription.trial_converted"
            line["amount"] = event.price.amount.amount
        else:
            kind = "subscription.trial_expired"
            line["amount"] = 0
    elif isinstance(event, Subscription.Renewed):
        kind = "subscription.renewed"
        line |= {
            "price": event.price.id,
            "currency": event.price.currency,
            "amount": event.price.amount.amount if event.billed else 0,
        }
    elif isinstance(event, Subscription.PlanChanged):
        kind = "subscription.plan_changed"
        line |= {
            "price": event.to_price.id,
            "previous": event.from_price.id,
            "currency": event.to_price.currency,
            "amount": event.charge.amount - event.credit.amount,
            "credit": event.credit.amount,
            "charge": event.charge.amount,
        }
    elif isinstance(event, Subscription.ChangeScheduled):
        kind = "subscription.change_scheduled"
        line |= {
            "price": event.to_price.id,
            "currency": event.to_price.currency,
            "effective": event.effective_at,
        }
    elif isinstance(event, Subscription.ScheduledChangeCanceled):
        kind = "subscription.scheduled_change_canceled"
    elif isinstance(event, Subscription.CancelScheduled):
        kind = "subscription.cancel_scheduled"
        line["effective"] = event.cancel_at
    elif isinstance(event, Subscription.CancelRevoked):
        kind = "subscription.cancel_revoked"
    elif isinstance(event, Subscription.Canceled):
        kind = "subscription.canceled"
        line |= {"currency": event.refund.currency, "amount": event.refund.amount}
    elif isinstance(event, Subscription.Paused):
        kind = "subscription.paused"
    elif isinstance(event, Subscription.ResumeScheduled):
        kind = "subscription.resume_scheduled"
        line["effective"] = event.resume_at
    elif isinstance(event, Subscription.Resumed):
        kind = "subscription.resumed"
    elif isinstance(event, Subscription.DiscountApplied):
        kind = "subscription.discount_applied"
    elif isinstance(event, Subscription.DiscountEnded):
        kind = "subscription.discount_ended"
    else:
        kind = DUNNING_KINDS[type(event)]
        line["invoice"] = event.invoice_id
    return (
        step.position,
        step.at,
        kind,
        sub,
        line["invoice"],
        line["price"],
        line["previous"],
        line["currency"],
        line["amount"],
        line["credit"],
        line["charge"],
        line["effective"],
    )


DUNNING_KINDS = {
    Subscription.PastDue: "subscription.past_due",
    Subscription.Recovered: "subscription.recovered",
    Subscription.DunningExhausted: "subscription.dunning_exhausted",
}
# Invoice events, by kind, whose amount is the invoice's amount due.
AMOUNT_DUE_KINDS = {
    Invoice.PaymentSucceeded: "invoice.payment_succeeded",
    Invoice.PaymentFailed: "invoice.payment_failed",
    Invoice.MarkedUncollectible: "invoice.uncollectible",
    Invoice.Voided: "invoice.voided",
}
# The answers to a refund, by kind: their amount is the refund's.
REFUND_KINDS = {
    Invoice.RefundSucceeded: "invoice.refund_succeeded",
    Invoice.RefundFailed: "invoice.refund_failed",
}


def documented_invoice_lines(known: Truth) -> list[tuple[UUID, HistoryRow]]:
    """(customer, line) of every invoice event but a payment request, as
    docs/projections.md tabulates them: the total issued, the amount due paid, failed,
    written off or voided, the amount of each refund."""
    issued: dict[UUID, Invoice.Issued] = {}
    refunds: dict[tuple[UUID, int], int] = {}
    lines: list[tuple[UUID, HistoryRow]] = []
    for position, event in known.invoice_events:
        invoice_id = event.originator_id
        if isinstance(event, Invoice.Issued):
            issued[invoice_id] = event
            kind, amount = "invoice.issued", event.total.amount
        elif isinstance(event, Invoice.PaymentRequested):
            continue
        elif type(event) in AMOUNT_DUE_KINDS:
            kind, amount = AMOUNT_DUE_KINDS[type(event)], issued[invoice_id].amount_due.amount
        elif isinstance(event, Invoice.RefundRequested):
            amount = refunds[invoice_id, event.request.number] = event.request.amount.amount
            kind = "invoice.refund_requested"
        else:
            kind, amount = REFUND_KINDS[type(event)], refunds[invoice_id, event.number]
        invoice = issued[invoice_id]
        line = (invoice.subscription_id, invoice_id, None, None, invoice.total.currency, amount)
        row = (position, event.timestamp, kind, *line, None, None, None)
        lines.append((invoice.customer_id, row))
    return lines


def check_history(db: Database, known: Truth) -> None:
    expected: defaultdict[UUID, list[HistoryRow]] = defaultdict(list)
    for step in known.steps:
        expected[step.customer_id].append(documented_line(step))
    invoice_lines = documented_invoice_lines(known)
    for customer_id, row in invoice_lines:
        expected[customer_id].append(row)
    for rows in expected.values():
        rows.sort(key=lambda row: (row[1], row[0]))  # business time, then recording order
    for customer_id in known.customers:
        lines = [
            (
                line.position,
                line.occurred_at,
                line.kind,
                line.subscription_id,
                line.invoice_id,
                line.price_id,
                line.previous_price_id,
                line.currency,
                line.amount,
                line.proration_credit,
                line.proration_charge,
                line.effective_at,
            )
            for line in customer_history(db, customer_id)
        ]
        assert lines == expected[customer_id], f"history of customer {customer_id}"
    (count,) = db.query("SELECT COUNT(*) FROM transaction_history")[0]
    assert read_int(count) == len(known.steps) + len(invoice_lines)


def check_everything(db: Database, ledger: Ledger, every_day_figures: bool) -> None:
    known = truth(ledger)
    check_current_subscriptions(db, known)
    check_due_work(db, known)
    check_revenue(db, known, every_day_figures)
    check_history(db, known)


# 5. Rebuild


def dump(db: Database) -> dict[str, list[tuple[str, ...]]]:
    tables = [table for p in all_projections() for table in p.tables] + ["projection_positions"]
    return {
        table: sorted(tuple(map(str, row)) for row in db.query(f"SELECT * FROM {table}"))
        for table in tables
    }


# The story, told on a ledger of its own.


def tell_and_check(url: str, tale: Tale) -> None:
    with bootstrap(url) as ledger, projector(ledger, url) as projections:
        story = Story(
            ledger,
            projections,
            lambda: check_everything(projections.database, ledger, every_day_figures=False),
        )
        try:
            story.tell(tale)
        finally:
            story.shop.close()
        db = projections.database
        check_everything(db, ledger, every_day_figures=True)
        incremental = dump(db)
        projections.batch_size = 10_000
        projections.rebuild()
        assert dump(db) == incremental, "a rebuild must write what the catch-ups wrote"


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        yield f"sqlite:///{Path(folder) / 'ledger.db'}"


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A fresh schema per example (hypothesis runs many in one test, so the function-scoped
    ``postgres_url`` fixture would share one), dropped afterwards. Sessions in UTC: what a
    server in another time zone does is the test at the end of this file."""
    schema = f"test_{uuid4().hex[:12]}"
    zone = os.environ.get("PGTZ")
    os.environ["PGTZ"] = "UTC"
    try:
        yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"
    finally:
        if zone is None:
            del os.environ["PGTZ"]
        else:
            os.environ["PGTZ"] = zone
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@settings(max_examples=40, deadline=None)
@given(tales)
def test_projections_agree_with_the_aggregates_on_sqlite(tale: Tale) -> None:
    with sqlite_url() as url:
        tell_and_check(url, tale)


@pytest.mark.postgres
@settings(max_examples=5, deadline=None)
@given(tales)
def test_projections_agree_with_the_aggregates_on_postgres(tale: Tale) -> None:
    with postgres_schema_url() as url:
        tell_and_check(url, tale)


# Found by the stories above on PostgreSQL with a session time zone other than UTC.


@pytest.mark.postgres
def test_a_late_change_reclassifies_stored_movements_on_their_utc_day(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL server whose ``timezone`` is not UTC (initdb takes the machine's
    local zone) gives instants back in that zone: here Asia/Tokyo, UTC+9, set the way
    libpq lets a client choose it. Days are UTC all the same (docs/metrics.md).

    The customer pays 1000 from Jan 31 20:00 UTC and cancels at period end (Feb 28 20:00);
    on Mar 2 20:00 UTC (Mar 3 05:00 in Tokyo) they start a 2000 subscription, which a
    catch-up stores as an expansion (the cancellation is not recorded yet). On Mar 3 the
    billing clock records the cancellation, stamped Feb 28 20:00: Feb 28 is a churn and
    Mar 2 a reactivation, and the expansion of Mar 2 is taken back. The Mar 2 change was
    read back from ``revenue_changes`` as 2025-03-03 05:00+09:00, and its old and new
    movements were booked on Mar 3 instead of Mar 2 (until the projections' instants were
    read in UTC)."""
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")
    with bootstrap(postgres_url) as ledger, projector(ledger, postgres_url) as projections:
        shop = Shop(ledger, SimulatedClock(datetime(2025, 1, 31, 20, 0, tzinfo=UTC)))
        shop.open_catalog()
        customer_id = shop.customer()
        answer = shop.send(s.StartSubscription, customer_id=customer_id, plan_code="basic")
        first = UUID(answer["subscription_id"])
        shop.send(s.CancelSubscription, subscription_id=first, when="period_end")
        shop.clock.advance_to(datetime(2025, 3, 2, 20, 0, tzinfo=UTC))
        shop.send(s.StartSubscription, customer_id=customer_id, plan_code="pro", trial_days=0)
        projections.catch_up()
        shop.clock.advance_to(datetime(2025, 3, 3, 9, 0, tzinfo=UTC))
        advance_subscription(ledger, first, shop.clock.now())  # canceled as of Feb 28 20:00
        projections.catch_up()
        db = projections.database
        mar_2 = stats.figures(db, CURRENCY, date(2025, 3, 2), date(2025, 3, 2))
        mar_3 = stats.figures(db, CURRENCY, date(2025, 3, 3), date(2025, 3, 3))
        # As on a UTC server: Mar 2 is a reactivation of 2000, Mar 3 has no movement.
        # Read back in Tokyo time, it was: Mar 2 an expansion of 2000 with nobody paying
        # at its end; Mar 3 an expansion of -2000 and the reactivation.
        assert (mar_2.movements, mar_2.paying_customers) == (stats.Movements(0, 0, 0, 0, 2000), 1)
        assert (mar_3.movements, mar_3.paying_customers) == (stats.Movements(0, 0, 0, 0, 0), 1)
        check_everything(db, ledger, every_day_figures=True)
        incremental = dump(db)
        projections.rebuild()
        assert dump(db) == incremental
