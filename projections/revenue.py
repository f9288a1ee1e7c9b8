"""Revenue statistics: MRR movements, customer flows and payments per currency and day.

The tables hold flows only (what changed on a day); levels such as MRR or paying
customers on a day are running sums of the flows (the ``revenue_daily`` and
``revenue_monthly`` views, and ``projections.stats``). So MRR(end) - MRR(start) = new +
expansion - contraction - churn + reactivation holds by construction: each change of a
customer's MRR is booked as movements of exactly its size, on the day of its timestamp.

Movements are classified per customer and currency, comparing the customer's MRR just
before and just after each change in business time (DESIGN.md): 0 -> >0 is new, or
reactivation if the customer paid before; up while above 0 is expansion; down but above
0 is contraction; >0 -> 0 is churn. A change recorded late is put in its place and the
movements after it are classified again (``_move``). ``revenue_subscriptions``,
``revenue_customers`` and ``revenue_changes`` keep the state this needs; ``revenue_days``
has a row per currency and day, so that daily and monthly series have no holes. A
subscription's MRR is its price after the discount in force, while billed (``active`` or
``past_due``: a failed payment changes no MRR until dunning gives up). Money collected
and refunded, failed and recovered payments are flows of the same days
(``projections.payment_flows``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.catalog import Price
from ledger.customers import Customer
from ledger.discounts import Discount
from ledger.subscriptions import ENDED, Subscription, SubscriptionStatus
from projections import payment_flows
from projections.database import Transaction, select_in
from projections.events import subscriptions_to_load
from projections.payment_flows import PaymentFlows
from projections.projection import Positioned, Projection
from projections.subscription_state import (
    DISCOUNT_COLUMNS,
    DISCOUNT_SCHEMA,
    DUNNING_EVENTS,
    PRICE_COLUMNS,
    PRICE_SCHEMA,
    after_collection,
    billed_mrr,
    discount_params,
    price_params,
    read_discount,
    read_price,
)
from projections.values import (
    instant,
    maybe_instant,
    read_bool,
    read_day,
    read_instant,
    read_int,
    read_maybe_instant,
    read_uuid,
)

_TRIALING = SubscriptionStatus.TRIALING.value
_LIVE = frozenset(status.value for status in SubscriptionStatus if status not in ENDED)

MOVEMENTS = ("new", "expansion", "contraction", "churn", "reactivation")
DAY_COUNTS = (
    *(f"{movement}_mrr" for movement in MOVEMENTS),
    "new_customers",
    "reactivated_customers",
    "churned_customers",
    "registered_customers",
    "trials_started",
    "trials_converted",
    "trials_not_converted",
    *payment_flows.FLOWS,
)
NET_MRR = "new_mrr + expansion_mrr - contraction_mrr - churn_mrr + reactivation_mrr"
PAYING_CHANGE = "new_customers + reactivated_customers - churned_customers"


@dataclass
class SubscriptionState:
    subscription_id: UUID
    customer_id: UUID
    price: Price
    status: str
    invoices_in_dunning: int
    discount: Discount | None
    mrr: int

    @property
    def currency(self) -> str:
        return self.price.currency

    def as_params(self) -> tuple[Any, ...]:
        """The values of ``SUBSCRIPTION_COLUMNS``."""
        return (
            str(self.subscription_id),
            str(self.customer_id),
            *price_params(self.price),
            self.status,
            self.invoices_in_dunning,
            *discount_params(self.discount),
            self.mrr,
        )

    @property
    def plan_key(self) -> tuple[str, str, int] | None:
        """(plan, status, MRR) while it counts as a subscriber, else None."""
        return (self.price.plan_code, self.status, self.mrr) if self.status in _LIVE else None


SUBSCRIPTION_COLUMNS = (
    "subscription_id",
    "customer_id",
    *PRICE_COLUMNS,
    "status",
    "invoices_in_dunning",
    *DISCOUNT_COLUMNS,
    "mrr",
)


def _read_subscription(row: Sequence[Any]) -> SubscriptionState:
    value = dict(zip(SUBSCRIPTION_COLUMNS, row, strict=True))
    price = read_price([value[column] for column in PRICE_COLUMNS])
    return SubscriptionState(
        subscription_id=read_uuid(value["subscription_id"]),
        customer_id=read_uuid(value["customer_id"]),
        price=price,
        status=str(value["status"]),
        invoices_in_dunning=read_int(value["invoices_in_dunning"]),
        discount=read_discount([value[column] for column in DISCOUNT_COLUMNS], price.currency),
        mrr=read_int(value["mrr"]),
    )


@dataclass(frozen=True, order=True)
class Change:
    """One change of a customer's MRR in a currency, in business-time order."""

    at: datetime
    position: int
    delta: int


@dataclass
class CustomerState:
    customer_id: UUID
    currency: str
    mrr: int
    has_paid: bool
    last_change_at: datetime | None
    # Changes made by this batch, to be stored; the whole timeline once a late change
    # needed it (None until then).
    new_changes: list[Change] = field(default_factory=list)
    timeline: list[Change] | None = None


@dataclass
class Batch:
    """The flows of one batch, summed per currency and day before they are written."""

    days: defaultdict[tuple[str, str], Counter[str]]
    plans: defaultdict[tuple[str, str, str, str], list[int]]

    def touch(self, currency: str, day: str) -> None:
        """Gives the day its row even with nothing to count on it (a trial canceled), so
        that revenue_days runs to the last day on which anything happened."""
        self.days.setdefault((currency, day), Counter())

    def count(self, currency: str, day: str, column: str, value: int = 1) -> None:
        self.days[currency, day][column] += value

    def plan(self, currency: str, day: str, key: tuple[str, str, int], sign: int) -> None:
        plan_code, status, mrr = key
        flow = self.plans[currency, day, plan_code, status]
        flow[0] += sign
        flow[1] += sign * mrr


def _apply(sub: SubscriptionState, event: Any) -> None:
    """The event's effect on what the subscription brings, as ``Subscription`` applies it."""
    if isinstance(event, Subscription.TrialEnded):
        if event.converted:
            sub.status = SubscriptionStatus.ACTIVE.value
            sub.price = event.price
        else:
            sub.status = SubscriptionStatus.EXPIRED.value
    elif isinstance(event, Subscription.Renewed):
        sub.price = event.price
    elif isinstance(event, Subscription.PlanChanged):
        sub.price = event.to_price
    elif isinstance(event, Subscription.Canceled):
        sub.status = SubscriptionStatus.CANCELED.value
    elif isinstance(event, Subscription.Paused):
        sub.status = SubscriptionStatus.PAUSED.value
    elif isinstance(event, Subscription.Resumed):
        sub.status = SubscriptionStatus.ACTIVE.value
    elif isinstance(event, Subscription.DiscountApplied):
        sub.discount = event.discount
    elif isinstance(event, Subscription.DiscountEnded):
        sub.discount = None
    elif isinstance(event, DUNNING_EVENTS):
        sub.status, sub.invoices_in_dunning = after_collection(
            event, sub.status, sub.invoices_in_dunning
        )
    sub.mrr = billed_mrr(sub.status, sub.price, sub.discount)


def _movement(before: int, after: int, has_paid: bool) -> list[tuple[str, int]]:
    """The flows that book a customer's MRR going from ``before`` to ``after``."""
    if before == 0:
        kind = "reactivation" if has_paid else "new"
        customers = "reactivated_customers" if has_paid else "new_customers"
        return [(f"{kind}_mrr", after), (customers, 1)]
    if after == 0:
        return [("churn_mrr", before), ("churned_customers", 1)]
    if after > before:
        return [("expansion_mrr", after - before)]
    return [("contraction_mrr", before - after)]


def _book(batch: Batch, currency: str, changes: Sequence[Change], start: int, sign: int) -> None:
    """Books (``sign`` 1) or takes back (-1) the movements of ``changes[start:]``, each
    classified by the customer's MRR just before it, in business-time order."""
    mrr = sum(c.delta for c in changes[:start])
    has_paid = _has_paid(changes[:start])
    for change in changes[start:]:
        day = change.at.date().isoformat()
        for column, value in _movement(mrr, mrr + change.delta, has_paid):
            batch.count(currency, day, column, sign * value)
        mrr += change.delta
        has_paid = has_paid or mrr > 0


def _has_paid(changes: Sequence[Change]) -> bool:
    mrr = 0
    for change in changes:
        mrr += change.delta
        if mrr > 0:
            return True
    return False


def _move(batch: Batch, customer: CustomerState, change: Change, tx: Transaction) -> None:
    """Books a change of the customer's MRR as the one movement it is at its instant.

    A change usually comes after the customer's others in business time. One recorded late
    (a renewal or scheduled cancel stored after the customer's later business) is put in
    its place in the customer's timeline, and the movements after it are classified again:
    a cancel due on 28 February and recorded on 3 March is a churn on 28 February, and a
    new subscription on 2 March a reactivation, not a contraction and an expansion."""
    customer.new_changes.append(change)
    if customer.last_change_at is None or change.at >= customer.last_change_at:
        day = change.at.date().isoformat()
        for column, value in _movement(
            customer.mrr, customer.mrr + change.delta, customer.has_paid
        ):
            batch.count(customer.currency, day, column, value)
        if customer.timeline is not None:
            customer.timeline.append(change)
        customer.mrr += change.delta
        customer.has_paid = customer.has_paid or customer.mrr > 0
        customer.last_change_at = change.at
        return
    if customer.timeline is None:
        customer.timeline = _timeline(tx, customer)
    else:
        customer.timeline.append(change)
    timeline = sorted(customer.timeline)
    start = timeline.index(change)
    _book(batch, customer.currency, [c for c in timeline if c is not change], start, -1)
    _book(batch, customer.currency, timeline, start, 1)
    customer.timeline = timeline
    customer.has_paid = _has_paid(timeline)
    customer.mrr += change.delta


def _timeline(tx: Transaction, customer: CustomerState) -> list[Change]:
    """Every change of the customer's MRR: those stored, and this batch's."""
    stored = tx.query(
        "SELECT at, position, delta FROM revenue_changes WHERE customer_id = ? AND currency = ?",
        (str(customer.customer_id), customer.currency),
    )
    return [
        Change(read_instant(at), read_int(position), read_int(delta))
        for at, position, delta in stored
    ] + customer.new_changes


def _days_between(first: date, last: date) -> Iterable[date]:
    return (first + timedelta(days=n) for n in range((last - first).days + 1))


class RevenueStatistics(Projection):
    name = "revenue"
    version = 2
    tables = (
        "revenue_days",
        "revenue_plan_days",
        "revenue_subscriptions",
        "revenue_customers",
        "revenue_changes",
        *payment_flows.TABLES,
    )
    views = ("revenue_daily", "revenue_monthly")
    schema = (
        f"""CREATE TABLE revenue_days (
            currency TEXT NOT NULL,
            day DATE NOT NULL,
            month TEXT NOT NULL,
            {", ".join(f"{column} BIGINT NOT NULL DEFAULT 0" for column in DAY_COUNTS)},
            PRIMARY KEY (currency, day)
        )""",
        """CREATE TABLE revenue_plan_days (
            currency TEXT NOT NULL,
            day DATE NOT NULL,
            month TEXT NOT NULL,
            plan_code TEXT NOT NULL,
            status TEXT NOT NULL,
            subscribers_change BIGINT NOT NULL,
            mrr_change BIGINT NOT NULL,
            PRIMARY KEY (currency, day, plan_code, status)
        )""",
        f"""CREATE TABLE revenue_subscriptions (
            subscription_id UUID PRIMARY KEY,
            customer_id UUID NOT NULL,
            {PRICE_SCHEMA},
            status TEXT NOT NULL,
            invoices_in_dunning INTEGER NOT NULL,
            {DISCOUNT_SCHEMA},
            mrr BIGINT NOT NULL
        )""",
        """CREATE TABLE revenue_customers (
            customer_id UUID NOT NULL,
            currency TEXT NOT NULL,
            mrr BIGINT NOT NULL,
            has_paid BOOLEAN NOT NULL,
            last_change_at TIMESTAMPTZ,
            PRIMARY KEY (customer_id, currency)
        )""",
        """CREATE TABLE revenue_changes (
            customer_id UUID NOT NULL,
            currency TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            position BIGINT NOT NULL,
            delta BIGINT NOT NULL,
            PRIMARY KEY (customer_id, currency, position)
        )""",
        *payment_flows.SCHEMA,
        f"""CREATE VIEW revenue_daily AS
        SELECT currency, day, month,
            {", ".join(DAY_COUNTS[:5])},
            {NET_MRR} AS net_mrr_change,
            SUM({NET_MRR}) OVER running AS mrr,
            12 * SUM({NET_MRR}) OVER running AS arr,
            SUM({PAYING_CHANGE}) OVER running AS paying_customers,
            SUM(registered_customers) OVER running AS customers,
            {", ".join(DAY_COUNTS[5:])}
        FROM revenue_days
        WINDOW running AS (PARTITION BY currency ORDER BY day ROWS UNBOUNDED PRECEDING)""",
        f"""CREATE VIEW revenue_monthly AS
        SELECT currency, month, MIN(day) AS first_day, MAX(day) AS last_day,
            SUM(SUM({NET_MRR})) OVER running - SUM({NET_MRR}) AS mrr_at_start,
            SUM(SUM({NET_MRR})) OVER running AS mrr_at_end,
            {", ".join(f"SUM({column}) AS {column}" for column in DAY_COUNTS[:5])},
            SUM(SUM({PAYING_CHANGE})) OVER running - SUM({PAYING_CHANGE})
                AS paying_customers_at_start,
            SUM(SUM({PAYING_CHANGE})) OVER running AS paying_customers_at_end,
            SUM(SUM(registered_customers)) OVER running AS customers_at_end,
            {", ".join(f"SUM({column}) AS {column}" for column in DAY_COUNTS[5:])}
        FROM revenue_days
        GROUP BY currency, month
        WINDOW running AS (PARTITION BY currency ORDER BY month ROWS UNBOUNDED PRECEDING)""",
    )
    handles = (
        frozenset(
            {
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
                *DUNNING_EVENTS,
            }
        )
        | payment_flows.EVENTS
    )

    def process(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        subs = self._subscriptions(tx, events)
        customers = self._customers(tx, events, subs)
        payments = PaymentFlows(tx, events)
        batch = Batch(defaultdict(Counter), defaultdict(lambda: [0, 0]))
        for position, event in events:
            day = event.timestamp.date().isoformat()
            if isinstance(event, Customer.Registered):
                batch.count(event.currency, day, "registered_customers")
            elif type(event) in payment_flows.EVENTS:
                currency, flows = payments.apply(event)
                batch.touch(currency, day)
                for column, value in flows:
                    batch.count(currency, day, column, value)
            else:
                self._subscription_event(tx, batch, subs, customers, position, event)
        self._write(tx, subs.values(), customers.values(), batch)
        payments.write(tx)

    def _subscription_event(
        self,
        tx: Transaction,
        batch: Batch,
        subs: dict[UUID, SubscriptionState],
        customers: dict[tuple[UUID, str], CustomerState],
        position: int,
        event: Any,
    ) -> None:
        """Books the trial counts, subscribers by plan and MRR movements of one event."""
        day = event.timestamp.date().isoformat()
        if isinstance(event, Subscription.Started):
            sub = subs[event.originator_id] = SubscriptionState(
                event.originator_id, event.customer_id, event.price, event.status.value, 0, None, 0
            )
            batch.touch(sub.currency, day)
            before_key, before_mrr = None, 0
            if event.status is SubscriptionStatus.TRIALING:
                batch.count(sub.currency, day, "trials_started")
        else:
            sub = subs[event.originator_id]
            batch.touch(sub.currency, day)
            before_key, before_mrr = sub.plan_key, sub.mrr
            if isinstance(event, Subscription.TrialEnded):
                outcome = "converted" if event.converted else "not_converted"
                batch.count(sub.currency, day, f"trials_{outcome}")
            elif isinstance(event, Subscription.Canceled) and sub.status == _TRIALING:
                # A trial canceled before it ends is a trial that did not convert.
                batch.count(sub.currency, day, "trials_not_converted")
        _apply(sub, event)
        if sub.plan_key != before_key:
            if before_key is not None:
                batch.plan(sub.currency, day, before_key, -1)
            if sub.plan_key is not None:
                batch.plan(sub.currency, day, sub.plan_key, +1)
        if sub.mrr != before_mrr:
            key = (sub.customer_id, sub.currency)
            customer = customers.get(key)
            if customer is None:
                customer = customers[key] = CustomerState(*key, 0, False, None)
            change = Change(event.timestamp, position, sub.mrr - before_mrr)
            _move(batch, customer, change, tx)

    def _subscriptions(
        self, tx: Transaction, events: Sequence[Positioned]
    ) -> dict[UUID, SubscriptionState]:
        select = f"SELECT {', '.join(SUBSCRIPTION_COLUMNS)} FROM revenue_subscriptions"
        rows = select_in(tx, select, "subscription_id", subscriptions_to_load(events))
        return {sub.subscription_id: sub for sub in map(_read_subscription, rows)}

    def _customers(
        self,
        tx: Transaction,
        events: Sequence[Positioned],
        subs: dict[UUID, SubscriptionState],
    ) -> dict[tuple[UUID, str], CustomerState]:
        owners = {sub.customer_id for sub in subs.values()} | {
            e.customer_id for _, e in events if isinstance(e, Subscription.Started)
        }
        select = (
            "SELECT customer_id, currency, mrr, has_paid, last_change_at FROM revenue_customers"
        )
        rows = select_in(tx, select, "customer_id", [str(key) for key in owners])
        return {
            (read_uuid(row[0]), row[1]): CustomerState(
                read_uuid(row[0]),
                row[1],
                read_int(row[2]),
                read_bool(row[3]),
                read_maybe_instant(row[4]),
            )
            for row in rows
        }

    def _write(
        self,
        tx: Transaction,
        subs: Iterable[SubscriptionState],
        customers: Iterable[CustomerState],
        batch: Batch,
    ) -> None:
        tx.insert_rows(
            f"INSERT INTO revenue_subscriptions ({', '.join(SUBSCRIPTION_COLUMNS)})",
            [s.as_params() for s in subs],
            "ON CONFLICT (subscription_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in SUBSCRIPTION_COLUMNS[2:]),
        )
        tx.insert_rows(
            "INSERT INTO revenue_customers (customer_id, currency, mrr, has_paid, last_change_at)",
            [
                (str(c.customer_id), c.currency, c.mrr, c.has_paid, maybe_instant(c.last_change_at))
                for c in customers
            ],
            "ON CONFLICT (customer_id, currency) DO UPDATE SET mrr = excluded.mrr, "
            "has_paid = excluded.has_paid, last_change_at = excluded.last_change_at",
        )
        tx.insert_rows(
            "INSERT INTO revenue_changes (customer_id, currency, at, position, delta)",
            [
                (str(c.customer_id), c.currency, instant(change.at), change.position, change.delta)
                for c in customers
                for change in c.new_changes
            ],
        )
        self._fill_days(tx, batch)
        tx.insert_rows(
            f"INSERT INTO revenue_days (currency, day, month, {', '.join(DAY_COUNTS)})",
            [
                (currency, day, day[:7], *(counts[column] for column in DAY_COUNTS))
                for (currency, day), counts in batch.days.items()
            ],
            "ON CONFLICT (currency, day) DO UPDATE SET "
            + ", ".join(f"{c} = revenue_days.{c} + excluded.{c}" for c in DAY_COUNTS),
        )
        tx.insert_rows(
            "INSERT INTO revenue_plan_days (currency, day, month, plan_code, status, "
            "subscribers_change, mrr_change)",
            [
                (currency, day, day[:7], plan_code, status, subscribers, mrr)
                for (currency, day, plan_code, status), (subscribers, mrr) in batch.plans.items()
            ],
            "ON CONFLICT (currency, day, plan_code, status) DO UPDATE SET "
            "subscribers_change = revenue_plan_days.subscribers_change "
            "+ excluded.subscribers_change, "
            "mrr_change = revenue_plan_days.mrr_change + excluded.mrr_change",
        )

    def _fill_days(self, tx: Transaction, batch: Batch) -> None:
        """Adds zero rows so that every currency has every day from its first day to the
        last day of any currency: daily and monthly series then have no holes, and a
        month in which one currency saw nothing still has its row."""
        spans = {
            currency: (read_day(first), read_day(last))
            for currency, first, last in tx.query(
                "SELECT currency, MIN(day), MAX(day) FROM revenue_days GROUP BY currency"
            )
        }
        touched: defaultdict[str, list[date]] = defaultdict(list)
        for currency, day in batch.days:
            touched[currency].append(date.fromisoformat(day))
        ends = [last for _, last in spans.values()] + [max(days) for days in touched.values()]
        if not ends:
            return
        last = max(ends)
        missing: list[tuple[str, str, str]] = []
        for currency in spans.keys() | touched.keys():
            known = spans.get(currency)
            first = min(touched[currency] + ([known[0]] if known else []))
            missing.extend(
                (currency, day.isoformat(), day.isoformat()[:7])
                for day in _days_between(first, last)
                if known is None or not known[0] <= day <= known[1]
            )
        tx.insert_rows(
            "INSERT INTO revenue_days (currency, day, month)",
            missing,
            "ON CONFLICT (currency, day) DO NOTHING",
        )
