"""Revenue statistics: MRR movements and customer flows per currency and day.

The tables hold flows only (what changed on a day); levels such as MRR or paying
customers on a day are running sums of the flows (the ``revenue_daily`` and
``revenue_monthly`` views, and ``projections.stats``). So a late event (a renewal
recorded after later business) just adds to its own day, and MRR(end) - MRR(start) =
new + expansion - contraction - churn + reactivation holds by construction: each change
of a customer's MRR is booked as exactly one movement of the same size.

Movements are classified per customer and currency, comparing the customer's MRR just
before and just after each change (DESIGN.md): 0 -> >0 is new, or reactivation if the
customer paid before; up while above 0 is expansion; down but above 0 is contraction;
>0 -> 0 is churn. ``revenue_subscriptions`` and ``revenue_customers`` keep the state
this needs; ``revenue_days`` has one row per currency and day from the first to the last
day with events, so that daily series have no holes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from uuid import UUID

from ledger.customers import Customer
from ledger.subscriptions import BILLED, ENDED, Subscription, SubscriptionStatus
from projections.database import Transaction, select_in
from projections.projection import Positioned, Projection
from projections.values import read_bool, read_day, read_int, read_uuid

_BILLED = frozenset(status.value for status in BILLED)
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
    "trials_expired",
)
NET_MRR = "new_mrr + expansion_mrr - contraction_mrr - churn_mrr + reactivation_mrr"
PAYING_CHANGE = "new_customers + reactivated_customers - churned_customers"


@dataclass
class SubscriptionState:
    subscription_id: UUID
    customer_id: UUID
    currency: str
    plan_code: str
    status: str
    price_mrr: int  # what its price adds to MRR while billed
    mrr: int

    def as_params(self) -> tuple[Any, ...]:
        return (
            str(self.subscription_id),
            str(self.customer_id),
            self.currency,
            self.plan_code,
            self.status,
            self.price_mrr,
            self.mrr,
        )

    @property
    def plan_key(self) -> tuple[str, str, int] | None:
        """(plan, status, MRR) while it counts as a subscriber, else None."""
        return (self.plan_code, self.status, self.mrr) if self.status in _LIVE else None


@dataclass
class CustomerState:
    customer_id: UUID
    currency: str
    mrr: int
    has_paid: bool


@dataclass
class Batch:
    """The flows of one batch, summed per currency and day before they are written."""

    days: defaultdict[tuple[str, str], Counter[str]]
    plans: defaultdict[tuple[str, str, str, str], list[int]]

    def count(self, currency: str, day: str, column: str, value: int = 1) -> None:
        self.days[currency, day][column] += value

    def plan(self, currency: str, day: str, key: tuple[str, str, int], sign: int) -> None:
        plan_code, status, mrr = key
        flow = self.plans[currency, day, plan_code, status]
        flow[0] += sign
        flow[1] += sign * mrr


def _apply(sub: SubscriptionState, event: Any) -> None:
    if isinstance(event, Subscription.TrialEnded):
        if event.converted:
            sub.status = SubscriptionStatus.ACTIVE.value
            sub.plan_code, sub.price_mrr = event.price.plan_code, event.price.mrr.amount
        else:
            sub.status = SubscriptionStatus.EXPIRED.value
    elif isinstance(event, Subscription.Renewed):
        sub.plan_code, sub.price_mrr = event.price.plan_code, event.price.mrr.amount
    elif isinstance(event, Subscription.PlanChanged):
        sub.plan_code, sub.price_mrr = event.to_price.plan_code, event.to_price.mrr.amount
    elif isinstance(event, Subscription.Canceled):
        sub.status = SubscriptionStatus.CANCELED.value
    elif isinstance(event, Subscription.Paused):
        sub.status = SubscriptionStatus.PAUSED.value
    elif isinstance(event, Subscription.Resumed):
        sub.status = SubscriptionStatus.ACTIVE.value
    sub.mrr = sub.price_mrr if sub.status in _BILLED else 0


def _move(batch: Batch, customer: CustomerState, day: str, delta: int) -> None:
    """Books a change of the customer's MRR as the one movement it is."""
    before, after = customer.mrr, customer.mrr + delta
    currency = customer.currency
    if before == 0:
        kind = "reactivation" if customer.has_paid else "new"
        batch.count(currency, day, f"{kind}_mrr", after)
        batch.count(
            currency, day, "reactivated_customers" if customer.has_paid else "new_customers"
        )
    elif after == 0:
        batch.count(currency, day, "churn_mrr", before)
        batch.count(currency, day, "churned_customers")
    elif after > before:
        batch.count(currency, day, "expansion_mrr", after - before)
    else:
        batch.count(currency, day, "contraction_mrr", before - after)
    customer.mrr = after
    customer.has_paid = customer.has_paid or after > 0


def _days_between(first: date, last: date) -> Iterable[date]:
    return (first + timedelta(days=n) for n in range((last - first).days + 1))


class RevenueStatistics(Projection):
    name = "revenue"
    version = 1
    tables = ("revenue_days", "revenue_plan_days", "revenue_subscriptions", "revenue_customers")
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
        """CREATE TABLE revenue_subscriptions (
            subscription_id UUID PRIMARY KEY,
            customer_id UUID NOT NULL,
            currency TEXT NOT NULL,
            plan_code TEXT NOT NULL,
            status TEXT NOT NULL,
            price_mrr BIGINT NOT NULL,
            mrr BIGINT NOT NULL
        )""",
        """CREATE TABLE revenue_customers (
            customer_id UUID NOT NULL,
            currency TEXT NOT NULL,
            mrr BIGINT NOT NULL,
            has_paid BOOLEAN NOT NULL,
            PRIMARY KEY (customer_id, currency)
        )""",
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
    handles = frozenset(
        {
            Customer.Registered,
            Subscription.Started,
            Subscription.TrialEnded,
            Subscription.Renewed,
            Subscription.PlanChanged,
            Subscription.Canceled,
            Subscription.Paused,
            Subscription.Resumed,
        }
    )

    def process(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        subs = self._subscriptions(tx, events)
        customers = self._customers(tx, events, subs)
        batch = Batch(defaultdict(Counter), defaultdict(lambda: [0, 0]))
        for _, event in events:
            day = event.timestamp.date().isoformat()
            if isinstance(event, Customer.Registered):
                batch.count(event.currency, day, "registered_customers")
                continue
            if isinstance(event, Subscription.Started):
                sub = subs[event.originator_id] = SubscriptionState(
                    event.originator_id,
                    event.customer_id,
                    event.price.currency,
                    event.price.plan_code,
                    event.status.value,
                    event.price.mrr.amount,
                    0,
                )
                before_key, before_mrr = None, 0
                if event.status is SubscriptionStatus.TRIALING:
                    batch.count(sub.currency, day, "trials_started")
            else:
                sub = subs[event.originator_id]
                before_key, before_mrr = sub.plan_key, sub.mrr
                if isinstance(event, Subscription.TrialEnded):
                    outcome = "converted" if event.converted else "expired"
                    batch.count(sub.currency, day, f"trials_{outcome}")
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
                    customer = customers[key] = CustomerState(*key, mrr=0, has_paid=False)
                _move(batch, customer, day, sub.mrr - before_mrr)
        self._write(tx, subs.values(), customers.values(), batch)

    def _subscriptions(
        self, tx: Transaction, events: Sequence[Positioned]
    ) -> dict[UUID, SubscriptionState]:
        started = {e.originator_id for _, e in events if isinstance(e, Subscription.Started)}
        subscriptions = {
            e.originator_id for _, e in events if not isinstance(e, Customer.Registered)
        }
        wanted = [str(key) for key in subscriptions - started]
        select = (
            "SELECT subscription_id, customer_id, currency, plan_code, status, price_mrr, mrr "
            "FROM revenue_subscriptions"
        )
        return {
            read_uuid(row[0]): SubscriptionState(
                read_uuid(row[0]),
                read_uuid(row[1]),
                row[2],
                row[3],
                row[4],
                read_int(row[5]),
                read_int(row[6]),
            )
            for row in select_in(tx, select, "subscription_id", wanted)
        }

    def _customers(
        self,
        tx: Transaction,
        events: Sequence[Positioned],
        subs: dict[UUID, SubscriptionState],
    ) -> dict[tuple[UUID, str], CustomerState]:
        owners = {sub.customer_id for sub in subs.values()} | {
            e.customer_id for _, e in events if isinstance(e, Subscription.Started)
        }
        select = "SELECT customer_id, currency, mrr, has_paid FROM revenue_customers"
        rows = select_in(tx, select, "customer_id", [str(key) for key in owners])
        return {
            (read_uuid(row[0]), row[1]): CustomerState(
                read_uuid(row[0]), row[1], read_int(row[2]), read_bool(row[3])
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
            "INSERT INTO revenue_subscriptions (subscription_id, customer_id, currency, "
            "plan_code, status, price_mrr, mrr)",
            [s.as_params() for s in subs],
            "ON CONFLICT (subscription_id) DO UPDATE SET plan_code = excluded.plan_code, "
            "status = excluded.status, price_mrr = excluded.price_mrr, mrr = excluded.mrr",
        )
        tx.insert_rows(
            "INSERT INTO revenue_customers (customer_id, currency, mrr, has_paid)",
            [(str(c.customer_id), c.currency, c.mrr, c.has_paid) for c in customers],
            "ON CONFLICT (customer_id, currency) DO UPDATE SET "
            "mrr = excluded.mrr, has_paid = excluded.has_paid",
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
        """Adds zero rows so that each currency has every day from its first to its last."""
        spans = {
            currency: (read_day(first), read_day(last))
            for currency, first, last in tx.query(
                "SELECT currency, MIN(day), MAX(day) FROM revenue_days GROUP BY currency"
            )
        }
        touched: defaultdict[str, list[date]] = defaultdict(list)
        for currency, day in batch.days:
            touched[currency].append(date.fromisoformat(day))
        missing: list[tuple[str, str, str]] = []
        for currency, days in touched.items():
            first, last = min(days), max(days)
            known = spans.get(currency)
            if known is not None:
                first, last = min(first, known[0]), max(last, known[1])
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
