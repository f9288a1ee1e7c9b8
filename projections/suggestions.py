"""Plan suggestions: customers for whom another plan fits better, found by queries over
the projections' tables (``current_subscriptions``, ``invoices``, ``transaction_history``)
and the catalog. Two kinds:

``annual_plan``
    An ``active`` subscription on a monthly price (one month), with nothing scheduled
    (no cancel, no plan change: those get a retention offer instead), whose last
    ``ANNUAL_STREAK`` (6) or more period invoices were paid in a row, and whose plan has
    an annual price (one year) on sale in the same currency that saves money:
    ``saving = 12 x monthly amount - annual amount > 0``, at list prices (a coupon in
    force is left out: it may end, or not apply to the annual price).

    "In a row": the subscription's period invoices (renewals and the first period; plan
    change invoices are not periods) from the newest back. One still open without a failed
    attempt awaits its first charge: it neither counts nor breaks the streak. Then each
    ``paid`` one counts (also one paid after a retry, or settled by credit), and the first
    one not paid ends the streak: ``void``, ``uncollectible``, or open after a failed
    attempt (in dunning). A period not billed (paused) has no invoice and breaks nothing.
    So 5 paid: no; 6 paid: yes; 6 paid with a voided one in the middle: 3 in a row.

``retention_offer``
    A subscription with a scheduled cancel (``cancel_at``, at period end or on a date)
    or else a scheduled downgrade (a pending price of another plan whose monthly
    equivalent is lower), not yet effective at ``now``, with MRR at risk > 0 (a trial or
    a paused subscription risks none). MRR at risk: its MRR now (after its discount) less
    its MRR after the change (0 for a cancel; the pending price with the same discount).
    The offer: stay on the current plan; and for a downgrade from a monthly price, the
    annual price of the current plan when it is cheaper per month.

A suggestion's ``id`` is the same however often it is found: a uuid5 of its
subscription, kind and basis. The basis of an annual suggestion is the first period of
the streak and both prices (a streak broken then rebuilt, or a new annual price, is a new
suggestion); of a retention offer, the position in the event sequence of the event that
scheduled it (a cancel revoked then scheduled again is a new one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from typing import Any, ClassVar, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.calendar import Interval, IntervalUnit
from ledger.catalog import Plan, Price
from ledger.errors import DomainError
from ledger.invoices import InvoiceStatus, period_invoice_id
from ledger.money import Money
from projections.database import Database
from projections.subscription_state import billed_mrr
from projections.subscriptions import COLUMNS, SubscriptionRow, read_subscription
from projections.values import read_instant, read_int, read_maybe_instant, read_uuid

ANNUAL_STREAK = 6
MONTH = Interval(IntervalUnit.MONTH, 1)
YEAR = Interval(IntervalUnit.YEAR, 1)
# The kinds of ``transaction_history`` rows that schedule a cancel or a plan change.
CANCEL_SCHEDULED = "subscription.cancel_scheduled"
CHANGE_SCHEDULED = "subscription.change_scheduled"


class SuggestionKind(StrEnum):
    ANNUAL_PLAN = "annual_plan"
    RETENTION_OFFER = "retention_offer"


@dataclass(frozen=True)
class AnnualOffer:
    """The annual price of a plan, and what it saves over twelve monthly payments."""

    price_id: str
    amount: Money
    saving: Money

    def as_json(self) -> dict[str, Any]:
        return {
            "price_id": self.price_id,
            "amount": self.amount.amount,
            "saving": self.saving.amount,
        }


def annual_offer(plans: dict[str, Plan], monthly: Price) -> AnnualOffer | None:
    """The annual price on sale for ``monthly``'s plan and currency, if it saves money."""
    plan = plans.get(monthly.plan_code)
    if plan is None or monthly.interval != MONTH:
        return None
    try:
        annual = plan.price_for_signup(monthly.currency, YEAR)
    except DomainError:  # none on sale: archived, or never offered in this currency
        return None
    saving = monthly.amount.scaled(Fraction(12)) - annual.amount
    return AnnualOffer(annual.id, annual.amount, saving) if saving.amount > 0 else None


@dataclass(frozen=True)
class _Suggestion(ABC):
    """What both kinds say: whose subscription, on which price, since when."""

    kind: ClassVar[SuggestionKind]
    subscription_id: UUID
    customer_id: UUID
    price: Price
    # When it became true: the streak reached its length, or the change was scheduled.
    since: datetime

    @property
    @abstractmethod
    def basis(self) -> str:
        """What the suggestion rests on: another basis is another suggestion."""

    @property
    def id(self) -> str:
        """Stable: the same subscription, kind and basis give the same id."""
        key = f"subledger:suggestion:{self.subscription_id}:{self.kind}:{self.basis}"
        return str(uuid5(NAMESPACE_URL, key))

    def as_json(self) -> dict[str, Any]:
        """Amounts in minor units of ``currency``."""
        return {
            "kind": str(self.kind),
            "id": self.id,
            "subscription_id": str(self.subscription_id),
            "customer_id": str(self.customer_id),
            "since": self.since.isoformat(),
            "plan_code": self.price.plan_code,
            "currency": self.price.currency,
            "price_id": self.price.id,
            "amount": self.price.amount.amount,
        }


@dataclass(frozen=True)
class AnnualPlan(_Suggestion):
    kind = SuggestionKind.ANNUAL_PLAN
    paid_in_a_row: int
    first_period: int  # the streak's first period index
    annual: AnnualOffer

    @property
    def basis(self) -> str:
        return f"{self.price.id}:{self.annual.price_id}:from-period-{self.first_period}"

    def as_json(self) -> dict[str, Any]:
        return super().as_json() | {
            "paid_in_a_row": self.paid_in_a_row,
            "annual": self.annual.as_json(),
        }


@dataclass(frozen=True)
class RetentionOffer(_Suggestion):
    kind = SuggestionKind.RETENTION_OFFER
    scheduled: Literal["cancel", "downgrade"]
    effective_at: datetime
    to_price_id: str | None  # a downgrade's price
    mrr_at_risk: Money
    annual: AnnualOffer | None  # for a downgrade from monthly: cheaper per month
    position: int  # of the event that scheduled it

    @property
    def basis(self) -> str:
        return f"{self.scheduled}@{self.position}"

    def as_json(self) -> dict[str, Any]:
        return super().as_json() | {
            "scheduled": self.scheduled,
            "effective_at": self.effective_at.isoformat(),
            "to_price_id": self.to_price_id,
            "mrr_at_risk": self.mrr_at_risk.amount,
            "offer": "stay",
            "annual": None if self.annual is None else self.annual.as_json(),
        }


Suggestion = AnnualPlan | RetentionOffer


_SELECT = f"SELECT {', '.join(COLUMNS)} FROM current_subscriptions s"
# Subscriptions an annual plan may suit: active, monthly, nothing scheduled.
_ANNUAL_SCOPE = (
    "s.status = 'active' AND s.interval_unit = 'month' AND s.interval_count = 1 "
    "AND s.cancel_at IS NULL AND s.pending_price_id IS NULL"
)
_SCHEDULED_SCOPE = "(s.cancel_at IS NOT NULL OR s.pending_price_id IS NOT NULL)"


def _candidates(db: Database, scope: str) -> list[SubscriptionRow]:
    rows = db.query(f"{_SELECT} WHERE {scope} ORDER BY s.subscription_id")
    return [read_subscription(row) for row in rows]


@dataclass(frozen=True)
class _PeriodInvoice:
    period_index: int
    status: str
    failures: int
    paid_at: datetime | None

    @property
    def awaits_first_charge(self) -> bool:
        return self.status == InvoiceStatus.OPEN.value and self.failures == 0


def paid_in_a_row(newest_first: Iterable[_PeriodInvoice]) -> list[_PeriodInvoice]:
    """The streak of paid period invoices, newest first (see the module's docstring)."""
    streak: list[_PeriodInvoice] = []
    for invoice in newest_first:
        if invoice.awaits_first_charge and not streak:
            continue
        if invoice.status != InvoiceStatus.PAID.value:
            break
        streak.append(invoice)
    return streak


def _annual_plans(db: Database, plans: dict[str, Plan]) -> list[AnnualPlan]:
    found = []
    invoices = _period_invoices(db)
    for c in _candidates(db, _ANNUAL_SCOPE):
        offer = annual_offer(plans, c.price)
        streak = paid_in_a_row(invoices.get(c.subscription_id, []))
        if offer is None or len(streak) < ANNUAL_STREAK:
            continue
        reached = streak[-ANNUAL_STREAK].paid_at
        assert reached is not None  # a paid invoice has its payment's instant
        found.append(
            AnnualPlan(
                c.subscription_id,
                c.customer_id,
                c.price,
                reached,
                len(streak),
                streak[-1].period_index,
                offer,
            )
        )
    return found


def _period_invoices(db: Database) -> dict[UUID, list[_PeriodInvoice]]:
    """The period invoices of the subscriptions an annual plan may suit, newest first."""
    rows = db.query(
        "SELECT i.invoice_id, i.subscription_id, i.period_index, i.status, i.failures, "
        "i.paid_at FROM invoices i "
        "JOIN current_subscriptions s ON s.subscription_id = i.subscription_id "
        f"WHERE i.period_index IS NOT NULL AND {_ANNUAL_SCOPE} "
        "ORDER BY i.period_index DESC"
    )
    invoices: defaultdict[UUID, list[_PeriodInvoice]] = defaultdict(list)
    for invoice_id, sub_id, index, status, failures, paid_at in rows:
        subscription_id = read_uuid(sub_id)
        # A change made within a period bills it again, on an invoice with the period's
        # index but an id of its own: not a period invoice.
        if read_uuid(invoice_id) != period_invoice_id(subscription_id, read_int(index)):
            continue
        invoices[subscription_id].append(
            _PeriodInvoice(
                read_int(index), str(status), read_int(failures), read_maybe_instant(paid_at)
            )
        )
    return invoices


def _scheduling_events(db: Database) -> dict[tuple[UUID, str], tuple[int, datetime]]:
    """(position, instant) of the last event that scheduled a cancel or a plan change of
    each subscription that has one scheduled, by (subscription, history kind)."""
    rows = db.query(
        "SELECT h.subscription_id, h.kind, h.position, h.occurred_at FROM transaction_history h "
        "JOIN current_subscriptions s ON s.subscription_id = h.subscription_id "
        f"WHERE {_SCHEDULED_SCOPE} AND h.kind IN (?, ?) ORDER BY h.position",
        (CANCEL_SCHEDULED, CHANGE_SCHEDULED),
    )
    # In position order: the last one of each subscription and kind wins.
    return {
        (read_uuid(sub_id), str(kind)): (read_int(position), read_instant(at))
        for sub_id, kind, position, at in rows
    }


def _retention_offers(db: Database, plans: dict[str, Plan], now: datetime) -> list[RetentionOffer]:
    prices = {price.id: price for plan in plans.values() for price in plan.prices.values()}
    scheduling = _scheduling_events(db)
    found = []
    for c in _candidates(db, _SCHEDULED_SCOPE):
        offer = _retention_offer(c, prices, plans, scheduling)
        if offer is not None and offer.effective_at > now and offer.mrr_at_risk.amount > 0:
            found.append(offer)
    return found


def _retention_offer(
    c: SubscriptionRow,
    prices: dict[str, Price],
    plans: dict[str, Plan],
    scheduling: dict[tuple[UUID, str], tuple[int, datetime]],
) -> RetentionOffer | None:
    """The offer for a candidate's scheduled cancel, or else its scheduled downgrade."""
    if c.cancel_at is not None:
        scheduled: Literal["cancel", "downgrade"] = "cancel"
        effective_at, to_price, after, event = c.cancel_at, None, 0, CANCEL_SCHEDULED
    else:
        to_price = prices.get(c.pending_price_id or "")
        if to_price is None or not _is_downgrade(c.price, to_price):
            return None
        scheduled, effective_at, event = "downgrade", c.period_end, CHANGE_SCHEDULED
        after = billed_mrr(c.status, to_price, c.discount)
    basis = scheduling.get((c.subscription_id, event))
    if basis is None:  # the history is behind the subscriptions: found at a later read
        return None
    position, scheduled_at = basis
    return RetentionOffer(
        c.subscription_id,
        c.customer_id,
        c.price,
        scheduled_at,
        scheduled,
        effective_at,
        None if to_price is None else to_price.id,
        Money(c.mrr - after, c.price.currency),
        annual_offer(plans, c.price) if scheduled == "downgrade" else None,
        position,
    )


def _is_downgrade(current: Price, pending: Price) -> bool:
    """Another plan, cheaper per month (the same plan yearly is a commitment, not a loss)."""
    return (
        pending.plan_code != current.plan_code and pending.monthly_amount < current.monthly_amount
    )


def suggestions(
    db: Database, plans: Iterable[Plan], now: datetime, kind: SuggestionKind | None = None
) -> list[Suggestion]:
    """Every suggestion (of ``kind``, or both) as the projections stand: annual plans,
    then retention offers, each by subscription id."""
    catalog = {plan.code: plan for plan in plans}
    found: list[Suggestion] = []
    if kind in (None, SuggestionKind.ANNUAL_PLAN):
        found += _annual_plans(db, catalog)
    if kind in (None, SuggestionKind.RETENTION_OFFER):
        found += _retention_offers(db, catalog, now)
    return found
