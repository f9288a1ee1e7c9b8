"""What the subscription projections keep of a subscription's billing: its price, the
discount in force and the invoices in dunning, as table columns; the status that
collection outcomes leave; and the MRR they make.

``current_subscriptions`` and ``revenue_subscriptions`` both keep them, each in its own
table (a projection never reads another's), so both read and write them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from functools import cache
from typing import Any

from ledger.calendar import Interval, IntervalUnit
from ledger.catalog import Price
from ledger.discounts import Discount, discounted_mrr
from ledger.money import Money
from ledger.subscriptions import BILLED, Subscription, SubscriptionStatus
from projections.values import read_int

PRICE_COLUMNS = ("plan_code", "price_id", "currency", "amount", "interval_unit", "interval_count")
PRICE_SCHEMA = """plan_code TEXT NOT NULL,
            price_id TEXT NOT NULL,
            currency TEXT NOT NULL,
            amount BIGINT NOT NULL,
            interval_unit TEXT NOT NULL,
            interval_count INTEGER NOT NULL"""
DISCOUNT_COLUMNS = (
    "coupon_code",
    "percent_off",
    "amount_off",
    "discount_first_period",
    "discount_last_period",
)
# Percentages as decimal text: SQLite would turn a NUMERIC into a binary float.
DISCOUNT_SCHEMA = """coupon_code TEXT,
            percent_off TEXT,
            amount_off BIGINT,
            discount_first_period INTEGER,
            discount_last_period INTEGER"""

DUNNING_EVENTS = (Subscription.PastDue, Subscription.Recovered, Subscription.DunningExhausted)
_BILLED = frozenset(status.value for status in BILLED)


def price_params(price: Price) -> tuple[Any, ...]:
    return (
        price.plan_code,
        price.id,
        price.currency,
        price.amount.amount,
        str(price.interval.unit),
        price.interval.count,
    )


def read_price(values: Sequence[Any]) -> Price:
    """The price of ``PRICE_COLUMNS``: what MRR needs of it (not its trial days or version)."""
    plan_code, price_id, currency, amount, unit, count = values
    return Price(
        id=str(price_id),
        plan_code=str(plan_code),
        amount=Money(read_int(amount), str(currency)),
        interval=Interval(IntervalUnit(unit), read_int(count)),
    )


def discount_params(discount: Discount | None) -> tuple[Any, ...]:
    if discount is None:
        return (None,) * len(DISCOUNT_COLUMNS)
    return (
        discount.coupon_code,
        None if discount.percent_off is None else str(discount.percent_off),
        None if discount.amount_off is None else discount.amount_off.amount,
        discount.first_period,
        discount.last_period,
    )


def read_discount(values: Sequence[Any], currency: str) -> Discount | None:
    """The discount of ``DISCOUNT_COLUMNS`` (an amount off is in the price's currency)."""
    code, percent_off, amount_off, first_period, last_period = values
    if code is None:
        return None
    return Discount(
        coupon_code=str(code),
        percent_off=None if percent_off is None else Decimal(percent_off),
        amount_off=None if amount_off is None else Money(read_int(amount_off), currency),
        first_period=read_int(first_period),
        last_period=None if last_period is None else read_int(last_period),
    )


def after_collection(event: Any, status: str, in_dunning: int) -> tuple[str, int]:
    """The status, and how many invoices are in dunning, after one of ``DUNNING_EVENTS``,
    as ``Subscription`` applies it: past due while any invoice is, active again when the
    last is paid; canceled or unpaid when dunning gives up."""
    if isinstance(event, Subscription.PastDue):
        return SubscriptionStatus.PAST_DUE.value, in_dunning + 1
    if isinstance(event, Subscription.Recovered):
        left = in_dunning - 1
        return (status if left else SubscriptionStatus.ACTIVE.value), left
    assert isinstance(event, Subscription.DunningExhausted)
    ended = SubscriptionStatus.CANCELED if event.canceled else SubscriptionStatus.UNPAID
    return ended.value, 0


def billed_mrr(status: str, price: Price, discount: Discount | None) -> int:
    """``Subscription.mrr``: the discounted price normalised to a month while billed, else 0."""
    return _discounted_mrr(price, discount) if status in _BILLED else 0


@cache  # a few prices and discounts, for every subscription a batch touches
def _discounted_mrr(price: Price, discount: Discount | None) -> int:
    return discounted_mrr(price, discount).amount
