"""``current_subscriptions``: one row per subscription as it stands; ``due_work``: what
falls due when (trial ends, renewals, scheduled plan changes, cancellations and resumes),
which the billing clock reads.

A batch loads the rows its events touch, applies the events in memory, then writes each
touched row once: a subscription renewed twelve times in a batch costs one upsert.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from ledger.calendar import Interval, IntervalUnit, Period
from ledger.catalog import Price, normalised_to_month
from ledger.money import Money
from ledger.subscriptions import BILLED, Subscription, SubscriptionStatus
from projections.database import Transaction, chunked, placeholders, select_in
from projections.events import SUBSCRIPTION_EVENTS, subscriptions_to_load
from projections.projection import Positioned, Projection
from projections.values import (
    instant,
    maybe_instant,
    read_bool,
    read_instant,
    read_int,
    read_maybe_instant,
    read_uuid,
)

_BILLED = frozenset(status.value for status in BILLED)
_ENDED = frozenset({SubscriptionStatus.CANCELED.value, SubscriptionStatus.EXPIRED.value})


@dataclass
class SubscriptionRow:
    subscription_id: UUID
    customer_id: UUID
    plan_code: str
    price_id: str
    currency: str
    amount: int
    interval_unit: str
    interval_count: int
    status: str
    started_at: datetime
    trial_end: datetime | None
    period_index: int
    period_start: datetime
    period_end: datetime
    pending_price_id: str | None
    cancel_at: datetime | None
    cancel_at_period_end: bool
    resume_at: datetime | None
    ended_at: datetime | None
    mrr: int
    updated_at: datetime

    def set_price(self, price: Price) -> None:
        self.plan_code = price.plan_code
        self.price_id = price.id
        self.amount = price.amount.amount
        self.interval_unit = str(price.interval.unit)
        self.interval_count = price.interval.count

    def set_period(self, period: Period) -> None:
        self.period_index, self.period_start, self.period_end = (
            period.index,
            period.start,
            period.end,
        )

    def refresh_mrr(self) -> None:
        self.mrr = (
            _monthly(self.amount, self.currency, self.interval_unit, self.interval_count)
            if self.status in _BILLED
            else 0
        )

    def due(self) -> Iterator[tuple[str, datetime, str]]:
        """(kind, instant, price id) of what falls due, as ``advance`` applies it: nothing
        happens after a scheduled cancellation, which wins a tie with a period's end."""
        if self.status in _ENDED:
            return
        end = self.cancel_at
        if end is not None:
            yield "cancel", end, self.price_id
        if self.resume_at is not None and (end is None or self.resume_at < end):
            yield "resume", self.resume_at, self.price_id
        if end is None or self.period_end < end:
            trialing = self.status == SubscriptionStatus.TRIALING.value
            yield ("trial_end" if trialing else "renewal"), self.period_end, self.price_id
            if self.pending_price_id is not None:
                yield "plan_change", self.period_end, self.pending_price_id

    def as_params(self) -> tuple[Any, ...]:
        """The row's values in ``COLUMNS`` order, as parameters."""
        return (
            str(self.subscription_id),
            str(self.customer_id),
            self.plan_code,
            self.price_id,
            self.currency,
            self.amount,
            self.interval_unit,
            self.interval_count,
            self.status,
            instant(self.started_at),
            maybe_instant(self.trial_end),
            self.period_index,
            instant(self.period_start),
            instant(self.period_end),
            self.pending_price_id,
            maybe_instant(self.cancel_at),
            self.cancel_at_period_end,
            maybe_instant(self.resume_at),
            maybe_instant(self.ended_at),
            self.mrr,
            instant(self.updated_at),
        )


@cache
def _monthly(amount: int, currency: str, unit: str, count: int) -> int:
    return normalised_to_month(Money(amount, currency), Interval(IntervalUnit(unit), count)).amount


COLUMNS = tuple(f.name for f in fields(SubscriptionRow))
_INSTANTS = frozenset({"started_at", "period_start", "period_end", "updated_at"})
_MAYBE_INSTANTS = frozenset({"trial_end", "cancel_at", "resume_at", "ended_at"})

INSERT = f"INSERT INTO current_subscriptions ({', '.join(COLUMNS)})"
ON_CONFLICT = "ON CONFLICT (subscription_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in COLUMNS[1:]
)


def _read(row: Sequence[Any]) -> SubscriptionRow:
    values: dict[str, Any] = {}
    for column, value in zip(COLUMNS, row, strict=True):
        if column in _INSTANTS:
            value = read_instant(value)
        elif column in _MAYBE_INSTANTS:
            value = read_maybe_instant(value)
        elif column in ("amount", "interval_count", "period_index", "mrr"):
            value = read_int(value)
        elif column == "cancel_at_period_end":
            value = read_bool(value)
        elif column in ("subscription_id", "customer_id"):
            value = read_uuid(value)
        elif value is not None:
            value = str(value)
        values[column] = value
    return SubscriptionRow(**values)


def _started(event: Subscription.Started) -> SubscriptionRow:
    price = event.price
    return SubscriptionRow(
        subscription_id=event.originator_id,
        customer_id=event.customer_id,
        plan_code=price.plan_code,
        price_id=price.id,
        currency=price.currency,
        amount=price.amount.amount,
        interval_unit=str(price.interval.unit),
        interval_count=price.interval.count,
        status=event.status.value,
        started_at=event.timestamp,
        trial_end=event.trial_end,
        period_index=event.period.index,
        period_start=event.period.start,
        period_end=event.period.end,
        pending_price_id=None,
        cancel_at=None,
        cancel_at_period_end=False,
        resume_at=None,
        ended_at=None,
        mrr=0,
        updated_at=event.timestamp,
    )


def _apply(row: SubscriptionRow, event: Any) -> None:
    """The event's effect on the row, as ``Subscription``'s own events apply it."""
    if isinstance(event, Subscription.TrialEnded | Subscription.Renewed):
        row.pending_price_id = None
        if isinstance(event, Subscription.TrialEnded) and not event.converted:
            row.status = SubscriptionStatus.EXPIRED.value
            row.ended_at = event.timestamp
            row.cancel_at, row.cancel_at_period_end = None, False
            row.resume_at = None
        else:
            if isinstance(event, Subscription.TrialEnded):
                row.status = SubscriptionStatus.ACTIVE.value
            row.set_price(event.price)
            row.set_period(event.period)
    elif isinstance(event, Subscription.PlanChanged):
        row.set_price(event.to_price)
        row.set_period(event.period)
        row.pending_price_id = None
        if row.cancel_at_period_end:
            row.cancel_at = event.period.end
    elif isinstance(event, Subscription.ChangeScheduled):
        row.pending_price_id = event.to_price.id
    elif isinstance(event, Subscription.ScheduledChangeCanceled):
        row.pending_price_id = None
    elif isinstance(event, Subscription.CancelScheduled):
        row.cancel_at, row.cancel_at_period_end = event.cancel_at, event.at_period_end
    elif isinstance(event, Subscription.CancelRevoked):
        row.cancel_at, row.cancel_at_period_end = None, False
    elif isinstance(event, Subscription.Canceled):
        row.status = SubscriptionStatus.CANCELED.value
        row.ended_at = event.timestamp
        row.cancel_at, row.cancel_at_period_end = None, False
        row.pending_price_id = None
        row.resume_at = None
    elif isinstance(event, Subscription.Paused):
        row.status = SubscriptionStatus.PAUSED.value
    elif isinstance(event, Subscription.ResumeScheduled):
        row.resume_at = event.resume_at
    elif isinstance(event, Subscription.Resumed):
        row.status = SubscriptionStatus.ACTIVE.value
        row.resume_at = None


class CurrentSubscriptions(Projection):
    name = "subscriptions"
    version = 1
    tables = ("current_subscriptions", "due_work")
    schema = (
        """CREATE TABLE current_subscriptions (
            subscription_id UUID PRIMARY KEY,
            customer_id UUID NOT NULL,
            plan_code TEXT NOT NULL,
            price_id TEXT NOT NULL,
            currency TEXT NOT NULL,
            amount BIGINT NOT NULL,
            interval_unit TEXT NOT NULL,
            interval_count INTEGER NOT NULL,
            status TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            trial_end TIMESTAMPTZ,
            period_index INTEGER NOT NULL,
            period_start TIMESTAMPTZ NOT NULL,
            period_end TIMESTAMPTZ NOT NULL,
            pending_price_id TEXT,
            cancel_at TIMESTAMPTZ,
            cancel_at_period_end BOOLEAN NOT NULL,
            resume_at TIMESTAMPTZ,
            ended_at TIMESTAMPTZ,
            mrr BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )""",
        "CREATE INDEX current_subscriptions_customer ON current_subscriptions (customer_id)",
        "CREATE INDEX current_subscriptions_status ON current_subscriptions (status, plan_code)",
        """CREATE TABLE due_work (
            subscription_id UUID NOT NULL,
            kind TEXT NOT NULL,
            due_at TIMESTAMPTZ NOT NULL,
            customer_id UUID NOT NULL,
            price_id TEXT NOT NULL,
            PRIMARY KEY (subscription_id, kind)
        )""",
        "CREATE INDEX due_work_due_at ON due_work (due_at)",
    )
    handles = SUBSCRIPTION_EVENTS

    def process(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        rows = self._load(tx, events)
        for _, event in events:
            if isinstance(event, Subscription.Started):
                row = rows[event.originator_id] = _started(event)
            else:
                row = rows[event.originator_id]
                _apply(row, event)
            row.updated_at = event.timestamp
        for row in rows.values():
            row.refresh_mrr()
        tx.insert_rows(INSERT, [row.as_params() for row in rows.values()], ON_CONFLICT)
        for chunk in chunked([str(key) for key in rows]):
            tx.execute(
                f"DELETE FROM due_work WHERE subscription_id IN ({placeholders(len(chunk))})",
                chunk,
            )
        tx.insert_rows(
            "INSERT INTO due_work (subscription_id, kind, due_at, customer_id, price_id)",
            [
                (str(row.subscription_id), kind, instant(at), str(row.customer_id), price_id)
                for row in rows.values()
                for kind, at, price_id in row.due()
            ],
        )

    def _load(self, tx: Transaction, events: Sequence[Positioned]) -> dict[UUID, SubscriptionRow]:
        """The stored rows of the subscriptions that the batch did not start itself."""
        wanted = subscriptions_to_load(events)
        select = f"SELECT {', '.join(COLUMNS)} FROM current_subscriptions"
        rows = (_read(stored) for stored in select_in(tx, select, "subscription_id", wanted))
        return {row.subscription_id: row for row in rows}
