"""``current_subscriptions``: one row per subscription as it stands (with the discount in
force and its invoices in dunning); ``due_work``: what falls due when (trial ends,
renewals, scheduled plan changes, cancellations and resumes), which the billing clock
reads.

A batch loads the rows its events touch, applies the events in memory, then writes each
touched row once: a subscription renewed twelve times in a batch costs one upsert.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.calendar import Period
from ledger.catalog import Price
from ledger.discounts import Discount
from ledger.subscriptions import Subscription, SubscriptionStatus
from projections.database import Transaction, chunked, placeholders, select_in
from projections.events import SUBSCRIPTION_EVENTS, subscriptions_to_load
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
    read_instant,
    read_int,
    read_maybe_instant,
    read_uuid,
)

_ENDED = frozenset({SubscriptionStatus.CANCELED.value, SubscriptionStatus.EXPIRED.value})


@dataclass
class SubscriptionRow:
    subscription_id: UUID
    customer_id: UUID
    price: Price
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
    invoices_in_dunning: int
    discount: Discount | None
    mrr: int
    updated_at: datetime

    def set_period(self, period: Period) -> None:
        self.period_index, self.period_start, self.period_end = (
            period.index,
            period.start,
            period.end,
        )

    def end(self, at: datetime) -> None:
        """Canceled or expired at ``at``: nothing is scheduled any more."""
        self.ended_at = at
        self.cancel_at, self.cancel_at_period_end = None, False
        self.pending_price_id = None
        self.resume_at = None

    def due(self) -> Iterator[tuple[str, datetime, str]]:
        """(kind, instant, price id) of what falls due, as ``advance`` applies it: nothing
        happens after a scheduled cancellation, which wins a tie with a period's end. An
        unpaid subscription, like a paused one, renews unbilled."""
        if self.status in _ENDED:
            return
        price_id = self.price.id
        end = self.cancel_at
        if end is not None:
            yield "cancel", end, price_id
        if self.resume_at is not None and (end is None or self.resume_at < end):
            yield "resume", self.resume_at, price_id
        if end is None or self.period_end < end:
            trialing = self.status == SubscriptionStatus.TRIALING.value
            yield ("trial_end" if trialing else "renewal"), self.period_end, price_id
            if self.pending_price_id is not None:
                yield "plan_change", self.period_end, self.pending_price_id

    def as_params(self) -> tuple[Any, ...]:
        """The row's values in ``COLUMNS`` order, as parameters."""
        return (
            str(self.subscription_id),
            str(self.customer_id),
            *price_params(self.price),
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
            self.invoices_in_dunning,
            *discount_params(self.discount),
            self.mrr,
            instant(self.updated_at),
        )


COLUMNS = (
    "subscription_id",
    "customer_id",
    *PRICE_COLUMNS,
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
    *DISCOUNT_COLUMNS,
    "mrr",
    "updated_at",
)
INSERT = f"INSERT INTO current_subscriptions ({', '.join(COLUMNS)})"
ON_CONFLICT = "ON CONFLICT (subscription_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in COLUMNS[1:]
)


def read_subscription(row: Sequence[Any]) -> SubscriptionRow:
    """A row of ``current_subscriptions``, its ``COLUMNS`` selected in order."""
    value = dict(zip(COLUMNS, row, strict=True))
    price = read_price([value[column] for column in PRICE_COLUMNS])
    return SubscriptionRow(
        subscription_id=read_uuid(value["subscription_id"]),
        customer_id=read_uuid(value["customer_id"]),
        price=price,
        status=str(value["status"]),
        started_at=read_instant(value["started_at"]),
        trial_end=read_maybe_instant(value["trial_end"]),
        period_index=read_int(value["period_index"]),
        period_start=read_instant(value["period_start"]),
        period_end=read_instant(value["period_end"]),
        pending_price_id=value["pending_price_id"],
        cancel_at=read_maybe_instant(value["cancel_at"]),
        cancel_at_period_end=read_bool(value["cancel_at_period_end"]),
        resume_at=read_maybe_instant(value["resume_at"]),
        ended_at=read_maybe_instant(value["ended_at"]),
        invoices_in_dunning=read_int(value["invoices_in_dunning"]),
        discount=read_discount([value[column] for column in DISCOUNT_COLUMNS], price.currency),
        mrr=read_int(value["mrr"]),
        updated_at=read_instant(value["updated_at"]),
    )


def _started(event: Subscription.Started) -> SubscriptionRow:
    return SubscriptionRow(
        subscription_id=event.originator_id,
        customer_id=event.customer_id,
        price=event.price,
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
        invoices_in_dunning=0,
        discount=None,
        mrr=0,
        updated_at=event.timestamp,
    )


def _apply(row: SubscriptionRow, event: Any) -> None:
    """The event's effect on the row, as ``Subscription``'s own events apply it."""
    if isinstance(event, Subscription.TrialEnded | Subscription.Renewed):
        row.pending_price_id = None
        if isinstance(event, Subscription.TrialEnded) and not event.converted:
            row.status = SubscriptionStatus.EXPIRED.value
            row.end(event.timestamp)
        else:
            if isinstance(event, Subscription.TrialEnded):
                row.status = SubscriptionStatus.ACTIVE.value
            row.price = event.price
            row.set_period(event.period)
    elif isinstance(event, Subscription.PlanChanged):
        row.price = event.to_price
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
        row.end(event.timestamp)
    elif isinstance(event, Subscription.Paused):
        row.status = SubscriptionStatus.PAUSED.value
    elif isinstance(event, Subscription.ResumeScheduled):
        row.resume_at = event.resume_at
    elif isinstance(event, Subscription.Resumed):
        row.status = SubscriptionStatus.ACTIVE.value
        row.resume_at = None
    elif isinstance(event, Subscription.DiscountApplied):
        row.discount = event.discount
    elif isinstance(event, Subscription.DiscountEnded):
        row.discount = None
    elif isinstance(event, DUNNING_EVENTS):
        row.status, row.invoices_in_dunning = after_collection(
            event, row.status, row.invoices_in_dunning
        )
        if isinstance(event, Subscription.DunningExhausted):
            row.resume_at = None
            if event.canceled:
                row.end(event.timestamp)


class CurrentSubscriptions(Projection):
    name = "subscriptions"
    version = 2
    tables = ("current_subscriptions", "due_work")
    schema = (
        f"""CREATE TABLE current_subscriptions (
            subscription_id UUID PRIMARY KEY,
            customer_id UUID NOT NULL,
            {PRICE_SCHEMA},
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
            invoices_in_dunning INTEGER NOT NULL,
            {DISCOUNT_SCHEMA},
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
            row.mrr = billed_mrr(row.status, row.price, row.discount)
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
        rows = (
            read_subscription(stored) for stored in select_in(tx, select, "subscription_id", wanted)
        )
        return {row.subscription_id: row for row in rows}
