"""Command handlers: plain functions ``(command, ledger, now) -> Outcome``.

A handler loads what it needs, asks the aggregates to decide, and returns the answer and
the aggregates it changed; ``commands.dispatch`` saves them with the command record in
one transaction. Subscriptions are first brought up to ``now`` (trial end, renewals,
scheduled cancels) so that every command acts on the current state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from commands import schemas as s
from ledger.application import Ledger
from ledger.calendar import Interval
from ledger.catalog import Plan
from ledger.customers import Customer, PaymentMethod
from ledger.errors import CurrencyMismatch, CustomerAlreadyRegistered, PlanAlreadyRegistered
from ledger.money import Money
from ledger.proration import Proration
from ledger.subscriptions import ChangeTiming, Subscription


@dataclass(frozen=True)
class Outcome:
    """A handler's answer (JSON-ready) and the aggregates it changed."""

    result: dict[str, Any]
    changed: tuple[Aggregate, ...]


def derived_id(kind: str, command_id: str) -> UUID:
    """Ids of created aggregates derive from the command id: a retry creates the same one."""
    return uuid5(NAMESPACE_URL, f"subledger:{kind}:{command_id}")


def money_view(money: Money) -> dict[str, Any]:
    return {"amount": money.amount, "currency": money.currency}


def subscription_view(sub: Subscription) -> dict[str, Any]:
    return {
        "subscription_id": str(sub.id),
        "customer_id": str(sub.customer_id),
        "status": sub.status.value,
        "plan_code": sub.price.plan_code,
        "price_id": sub.price.id,
        "period_index": sub.period.index,
        "period_start": sub.period.start.isoformat(),
        "period_end": sub.period.end.isoformat(),
        "trial_end": sub.trial_end.isoformat() if sub.trial_end else None,
        "cancel_at": sub.cancel_at.isoformat() if sub.cancel_at else None,
        "resume_at": sub.resume_at.isoformat() if sub.resume_at else None,
        "scheduled_price_id": sub.pending_price.id if sub.pending_price else None,
        "mrr": money_view(sub.mrr),
    }


def current_subscription(
    ledger: Ledger, subscription_id: UUID, now: datetime
) -> tuple[Subscription, Customer, datetime]:
    """The subscription with every transition due by ``now`` applied, its customer, and
    the instant the command acts at: ``now``, or the subscription's last event if a
    worker with a faster clock wrote one later, so that its history stays in order and
    the command's checks and amounts use the very instant it is stamped with."""
    sub = ledger.subscription(subscription_id)
    customer = ledger.customer(sub.customer_id)
    sub.advance(now, can_pay=customer.can_pay_at)
    return sub, customer, max(now, sub.modified_on)


def register_plan(cmd: s.RegisterPlan, ledger: Ledger, now: datetime) -> Outcome:
    if ledger.has_plan(cmd.code):
        raise PlanAlreadyRegistered(f"plan {cmd.code!r} is already registered")
    plan = Plan.register(cmd.code, cmd.name, cmd.description, cmd.features, now)
    return Outcome({"plan_id": str(plan.id), "code": plan.code}, (plan,))


def add_price(cmd: s.AddPrice, ledger: Ledger, now: datetime) -> Outcome:
    plan = ledger.plan(cmd.plan_code)
    price = plan.add_price(
        Money(cmd.amount, cmd.currency), Interval.parse(cmd.interval), cmd.trial_days, now
    )
    return Outcome({"price_id": price.id, "version": price.version}, (plan,))


def archive_price(cmd: s.ArchivePrice, ledger: Ledger, now: datetime) -> Outcome:
    plan = ledger.plan(cmd.plan_code)
    plan.archive_price(cmd.price_id, now)
    return Outcome({"price_id": cmd.price_id, "archived": True}, (plan,))


def archive_plan(cmd: s.ArchivePlan, ledger: Ledger, now: datetime) -> Outcome:
    plan = ledger.plan(cmd.plan_code)
    plan.archive(now)
    return Outcome({"code": plan.code, "archived": True}, (plan,))


def register_customer(cmd: s.RegisterCustomer, ledger: Ledger, now: datetime) -> Outcome:
    # A derived id cannot exist without this command's record; a given one may be taken.
    if cmd.customer_id is not None and cmd.customer_id in ledger.repository:
        raise CustomerAlreadyRegistered(f"customer {cmd.customer_id} is already registered")
    customer_id = cmd.customer_id or derived_id("customer", cmd.command_id)
    customer = Customer.register(customer_id, cmd.email, cmd.name, cmd.currency, now)
    return Outcome({"customer_id": str(customer.id)}, (customer,))


def change_customer_contact(cmd: s.ChangeCustomerContact, ledger: Ledger, now: datetime) -> Outcome:
    customer = ledger.customer(cmd.customer_id)
    customer.change_contact(cmd.email, cmd.name, now)
    return Outcome({"customer_id": str(customer.id)}, (customer,))


def add_payment_method(cmd: s.AddPaymentMethod, ledger: Ledger, now: datetime) -> Outcome:
    customer = ledger.customer(cmd.customer_id)
    method = PaymentMethod(
        id=cmd.payment_method_id,
        gateway=cmd.gateway,
        token=cmd.token,
        brand=cmd.brand,
        last4=cmd.last4,
        exp_month=cmd.exp_month,
        exp_year=cmd.exp_year,
    )
    customer.add_payment_method(method, cmd.make_default, now)
    result = {"payment_method_id": method.id, "default": customer.default_payment_method_id}
    return Outcome(result, (customer,))


def switch_default_payment_method(
    cmd: s.SwitchDefaultPaymentMethod, ledger: Ledger, now: datetime
) -> Outcome:
    customer = ledger.customer(cmd.customer_id)
    customer.switch_default_payment_method(cmd.payment_method_id, now)
    return Outcome({"default": cmd.payment_method_id}, (customer,))


def start_subscription(cmd: s.StartSubscription, ledger: Ledger, now: datetime) -> Outcome:
    customer = ledger.customer(cmd.customer_id)
    currency = cmd.currency or customer.currency
    if currency != customer.currency:
        raise CurrencyMismatch(f"the customer is billed in {customer.currency}, not {currency}")
    price = ledger.plan(cmd.plan_code).price_for_signup(currency, Interval.parse(cmd.interval))
    sub = Subscription.start(
        derived_id("subscription", cmd.command_id), customer.id, price, now, cmd.trial_days
    )
    return Outcome(subscription_view(sub), (sub,))


def _proration_view(proration: Proration | None) -> dict[str, Any] | None:
    if proration is None:
        return None
    return {
        "credit": money_view(proration.credit),
        "charge": money_view(proration.charge),
        "net": money_view(proration.net),
    }


def change_plan(cmd: s.ChangePlan, ledger: Ledger, now: datetime) -> Outcome:
    sub, customer, now = current_subscription(ledger, cmd.subscription_id, now)
    interval = Interval.parse(cmd.interval) if cmd.interval else sub.price.interval
    if (cmd.plan_code, interval) == (sub.price.plan_code, sub.price.interval):
        # One's own plan: no catalog look-up, so that an archived plan can still call
        # off a scheduled change (the domain decides what "the same plan" means).
        price = sub.price
    else:
        price = ledger.plan(cmd.plan_code).price_for_signup(sub.price.currency, interval)
    timing = ChangeTiming(cmd.when) if cmd.when else None
    proration = sub.change_price(price, now, timing)
    changed: tuple[Aggregate, ...] = (sub,)
    if proration is not None and proration.net.amount < 0:
        # A downgrade made now leaves the unused difference as account credit.
        customer.adjust_credit(-proration.net, f"plan change of subscription {sub.id}", now)
        changed = (sub, customer)
    result = subscription_view(sub) | {"proration": _proration_view(proration)}
    return Outcome(result, changed)


def cancel_subscription(cmd: s.CancelSubscription, ledger: Ledger, now: datetime) -> Outcome:
    sub, _, now = current_subscription(ledger, cmd.subscription_id, now)
    refund = Money.zero(sub.price.currency)
    if cmd.when == "now":
        refund = sub.cancel_now(now, cmd.refund_unused)
    elif cmd.when == "period_end":
        sub.cancel_at_period_end(now)
    else:
        assert cmd.cancel_at is not None  # the schema requires it with when='date'
        sub.cancel_on(cmd.cancel_at, now)
    return Outcome(subscription_view(sub) | {"refund": money_view(refund)}, (sub,))


def revoke_cancel(cmd: s.RevokeCancel, ledger: Ledger, now: datetime) -> Outcome:
    sub, _, now = current_subscription(ledger, cmd.subscription_id, now)
    sub.revoke_cancel(now)
    return Outcome(subscription_view(sub), (sub,))


def pause_subscription(cmd: s.PauseSubscription, ledger: Ledger, now: datetime) -> Outcome:
    sub, _, now = current_subscription(ledger, cmd.subscription_id, now)
    sub.pause(now, cmd.resume_at)
    return Outcome(subscription_view(sub), (sub,))


def resume_subscription(cmd: s.ResumeSubscription, ledger: Ledger, now: datetime) -> Outcome:
    sub, _, now = current_subscription(ledger, cmd.subscription_id, now)
    sub.resume(now)
    return Outcome(subscription_view(sub), (sub,))


HANDLERS: dict[type[s.Command], Callable[[Any, Ledger, datetime], Outcome]] = {
    s.RegisterPlan: register_plan,
    s.AddPrice: add_price,
    s.ArchivePrice: archive_price,
    s.ArchivePlan: archive_plan,
    s.RegisterCustomer: register_customer,
    s.ChangeCustomerContact: change_customer_contact,
    s.AddPaymentMethod: add_payment_method,
    s.SwitchDefaultPaymentMethod: switch_default_payment_method,
    s.StartSubscription: start_subscription,
    s.ChangePlan: change_plan,
    s.CancelSubscription: cancel_subscription,
    s.RevokeCancel: revoke_cancel,
    s.PauseSubscription: pause_subscription,
    s.ResumeSubscription: resume_subscription,
}
