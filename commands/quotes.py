"""Quotes: what a customer would pay for a signup or a plan change, with a coupon and
proration, computed by the very rules that bill, on aggregates that are never saved."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from commands.accounts import Account, current_subscription, invoice_view, subscription_view
from commands.schemas import PreviewQuote
from ledger.application import Ledger
from ledger.billing import Mark
from ledger.calendar import Interval
from ledger.customers import Customer
from ledger.errors import CurrencyMismatch
from ledger.subscriptions import ChangeTiming, Subscription


def quote_signup(
    ledger: Ledger,
    plan_code: str,
    interval: str,
    now: datetime,
    customer_id: UUID | None = None,
    currency: str | None = None,
    coupon: str | None = None,
    trial_days: int | None = None,
) -> dict[str, Any]:
    """The invoice a signup would get now, or at the end of its trial."""
    if customer_id is not None:
        customer = ledger.customer(customer_id)
        if currency is not None and currency != customer.currency:
            raise CurrencyMismatch(f"the customer is billed in {customer.currency}")
    else:
        # A prospect: no tax rate or credit known yet.
        customer = Customer.register(
            uuid4(), "prospect@example.com", "prospect", currency or "", now
        )
    price = ledger.plan(plan_code).price_for_signup(customer.currency, Interval.parse(interval))
    sub = Subscription.start(uuid4(), customer.id, price, now, trial_days)
    account = Account(ledger, sub, customer, now)
    if coupon:
        redeemed = ledger.coupon(coupon).redeem(sub.id, price.plan_code, price.currency, 0, now)
        sub.apply_discount(redeemed, now)
    account.bill_since(Mark.of(None), collect_now=False)
    if sub.trial_end is not None:
        mark = Mark.of(sub)
        sub.advance(sub.trial_end, can_pay=lambda _: True)
        account.bill_since(mark, collect_now=False)
    quote = _quote(account)
    if customer_id is None:
        quote["subscription"]["customer_id"] = None  # a prospect has no id yet
    return quote


def quote_change(
    ledger: Ledger,
    subscription_id: UUID,
    plan_code: str,
    now: datetime,
    interval: str | None = None,
    when: str | None = None,
) -> dict[str, Any]:
    """What a plan change would invoice now (an upgrade's proration), or credit."""
    account = current_subscription(ledger, subscription_id, now)
    sub = account.sub
    price = ledger.plan(plan_code).price_for_signup(
        sub.price.currency, Interval.parse(interval) if interval else sub.price.interval
    )
    credit_before = account.customer.credit_balance
    account.invoices = []  # what fell due before now is not part of the quote
    mark = Mark.of(sub)
    sub.change_price(price, account.at, ChangeTiming(when) if when else None)
    account.bill_since(mark, collect_now=False)
    credited = account.customer.credit_balance - credit_before
    return _quote(account) | {
        "credited": {"amount": credited.amount, "currency": credited.currency}
    }


def _quote(account: Account) -> dict[str, Any]:
    """The would-be subscription and invoices, without the ids they would get."""
    return {
        "subscription": subscription_view(account.sub) | {"subscription_id": None},
        "invoices": [
            invoice_view(i) | {"invoice_id": None, "number": None} for i in account.invoices
        ],
        "recorded": False,
    }


def preview_quote(cmd: PreviewQuote, ledger: Ledger, now: datetime) -> dict[str, Any]:
    """The ``quote.preview`` command: a change quote with ``subscription_id``, else a
    signup quote."""
    if cmd.subscription_id is not None:
        return quote_change(ledger, cmd.subscription_id, cmd.plan_code, now, cmd.interval, cmd.when)
    return quote_signup(
        ledger,
        cmd.plan_code,
        cmd.interval or "month",
        now,
        cmd.customer_id,
        cmd.currency,
        cmd.coupon,
        cmd.trial_days,
    )
