"""Analysts' listings: customers and their subscriptions as they stand, filtered in SQL,
a page at a time (keyset: after a customer or subscription id, in id order, which no
write reorders).

Both read ``current_subscriptions`` alone, so a customer is listed once they have
subscribed, and their figures add up to what their subscriptions show. A customer is
billed in the one currency they registered with, so each of their subscriptions is in
it. A customer's status sums up their subscriptions': the first of ``STATUS_ORDER`` that
any of them has (one past due makes the customer past due however many are active).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.calendar import Interval
from ledger.subscriptions import ENDED, SubscriptionStatus
from projections.database import Database, placeholders
from projections.subscriptions import COLUMNS, SubscriptionRow, read_subscription
from projections.values import read_instant, read_int, read_uuid

# What needs attention first, then what brings money, then what has stopped.
STATUS_ORDER = (
    SubscriptionStatus.PAST_DUE,
    SubscriptionStatus.UNPAID,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.PAUSED,
    SubscriptionStatus.CANCELED,
    SubscriptionStatus.EXPIRED,
)
# The statuses are our enum's values, safe to write into the SQL text.
_RANK = (
    "MIN(CASE status "
    + " ".join(f"WHEN '{status.value}' THEN {rank}" for rank, status in enumerate(STATUS_ORDER))
    + " END)"
)
_ENDED = ", ".join(f"'{status.value}'" for status in ENDED)
_LIVE = f"status NOT IN ({_ENDED})"


@dataclass(frozen=True)
class CustomerFilter:
    """Customers in ``currency``, with a live (not ended) subscription to ``plan``, whose
    status sums up to ``status``, paying (MRR above 0) or not; None: any."""

    currency: str | None = None
    plan: str | None = None
    status: SubscriptionStatus | None = None
    paying: bool | None = None


@dataclass(frozen=True)
class CustomerSummary:
    customer_id: UUID
    currency: str
    mrr: int
    status: SubscriptionStatus
    plans: tuple[str, ...]
    first_subscribed_at: datetime

    @property
    def paying(self) -> bool:
        return self.mrr > 0


def customers(
    db: Database, only: CustomerFilter, after: UUID | None, limit: int
) -> list[CustomerSummary]:
    """Up to ``limit`` customers that ``only`` admits, after ``after`` in id order."""
    where, where_params = _conditions(
        ("currency = ?", only.currency),
        ("customer_id > ?", None if after is None else str(after)),
    )
    having, having_params = _conditions(
        (f"SUM(CASE WHEN plan_code = ? AND {_LIVE} THEN 1 ELSE 0 END) > 0", only.plan),
        (f"{_RANK} = ?", None if only.status is None else STATUS_ORDER.index(only.status)),
        ("(SUM(mrr) > 0) = ?", only.paying),
    )
    rows = db.query(
        f"SELECT customer_id, MIN(currency), SUM(mrr), {_RANK}, MIN(started_at) "
        f"FROM current_subscriptions WHERE {where} GROUP BY customer_id "
        f"HAVING {having} ORDER BY customer_id LIMIT ?",
        (*where_params, *having_params, limit),
    )
    plans = _live_plans(db, [row[0] for row in rows])
    return [
        CustomerSummary(
            customer_id=read_uuid(customer_id),
            currency=currency,
            mrr=read_int(mrr),
            status=STATUS_ORDER[read_int(rank)],
            plans=plans.get(read_uuid(customer_id), ()),
            first_subscribed_at=read_instant(first),
        )
        for customer_id, currency, mrr, rank, first in rows
    ]


def _live_plans(db: Database, customer_ids: list[Any]) -> dict[UUID, tuple[str, ...]]:
    """The plans of each customer's subscriptions that have not ended, in code order."""
    if not customer_ids:
        return {}
    found: dict[UUID, set[str]] = {}
    for customer_id, plan_code in db.query(
        "SELECT customer_id, plan_code FROM current_subscriptions "
        f"WHERE {_LIVE} "
        f"AND customer_id IN ({placeholders(len(customer_ids))})",
        [str(customer_id) for customer_id in customer_ids],
    ):
        found.setdefault(read_uuid(customer_id), set()).add(plan_code)
    return {customer_id: tuple(sorted(codes)) for customer_id, codes in found.items()}


@dataclass(frozen=True)
class SubscriptionFilter:
    """Subscriptions in ``status``, of ``plan``, in ``currency``, billed every
    ``interval``; None: any."""

    status: SubscriptionStatus | None = None
    plan: str | None = None
    currency: str | None = None
    interval: Interval | None = None


def subscriptions(
    db: Database, only: SubscriptionFilter, after: UUID | None, limit: int
) -> list[SubscriptionRow]:
    """Up to ``limit`` subscriptions that ``only`` admits, after ``after`` in id order."""
    interval = only.interval
    where, params = _conditions(
        ("status = ?", None if only.status is None else only.status.value),
        ("plan_code = ?", only.plan),
        ("currency = ?", only.currency),
        ("interval_unit = ?", None if interval is None else str(interval.unit)),
        ("interval_count = ?", None if interval is None else interval.count),
        ("subscription_id > ?", None if after is None else str(after)),
    )
    rows = db.query(
        f"SELECT {', '.join(COLUMNS)} FROM current_subscriptions "
        f"WHERE {where} ORDER BY subscription_id LIMIT ?",
        (*params, limit),
    )
    return [read_subscription(row) for row in rows]


def _conditions(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """The conditions whose value is given, joined by AND (TRUE if none), and their values."""
    chosen = [(condition, value) for condition, value in conditions if value is not None]
    return " AND ".join(["TRUE", *(c for c, _ in chosen)]), [value for _, value in chosen]


def subscribed_customers(db: Database) -> list[UUID]:
    """Every customer who has subscribed (to find one by pseudonym)."""
    return [
        read_uuid(customer_id)
        for (customer_id,) in db.query("SELECT DISTINCT customer_id FROM current_subscriptions")
    ]
