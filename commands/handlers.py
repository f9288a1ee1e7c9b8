"""Command handlers: plain functions ``(command, ledger, now) -> Outcome``.

A handler loads what it needs, asks the aggregates to decide, and returns the answer and
the aggregates it changed; ``commands.dispatch`` saves them with the command record in
one transaction. Subscriptions are first brought up to ``now`` and billed (see
``commands.accounts``) so that every command acts on the current state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from typing import Any
from uuid import UUID

from commands import schemas as s
from commands.accounts import (
    Account,
    Outcome,
    current_subscription,
    derived_id,
    money_view,
)
from commands.billing_handlers import BILLING_HANDLERS
from commands.gateway_handlers import GATEWAY_HANDLERS
from commands.privacy_handlers import PRIVACY_HANDLERS
from commands.webhook_handlers import WEBHOOK_HANDLERS
from ledger.application import Ledger
from ledger.billing import Mark
from ledger.calendar import Interval
from ledger.catalog import Plan, plan_id
from ledger.coupons import coupon_id
from ledger.customers import Customer, PaymentMethod
from ledger.errors import (
    CurrencyMismatch,
    CustomerAlreadyRegistered,
    NotFound,
    PaymentInFlight,
    PlanAlreadyRegistered,
)
from ledger.invoices import Invoice, InvoiceStatus, period_invoice_id
from ledger.money import Money
from ledger.proration import Proration
from ledger.subscriptions import ChangeTiming, Subscription


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
    # A given id may be taken; so may a derived one, by a customer given that id.
    customer_id = cmd.customer_id or derived_id("customer", cmd.command_id)
    if ledger.exists(customer_id):
        raise CustomerAlreadyRegistered(f"customer {customer_id} is already registered")
    customer = Customer.register(customer_id, cmd.email, cmd.name, cmd.currency, now, cmd.phone)
    return Outcome({"customer_id": str(customer.id)}, (customer,))


def change_customer_contact(cmd: s.ChangeCustomerContact, ledger: Ledger, now: datetime) -> Outcome:
    customer = ledger.customer(cmd.customer_id)
    ledger.refuse_if_erased(customer, "new contact data")
    customer.change_contact(cmd.email, cmd.name, now, cmd.phone)
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
        customer_reference=cmd.customer_reference,
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
    ledger.refuse_if_erased(customer, "a new subscription")
    currency = cmd.currency or customer.currency
    if currency != customer.currency:
        raise CurrencyMismatch(f"the customer is billed in {customer.currency}, not {currency}")
    price = ledger.plan(cmd.plan_code).price_for_signup(currency, Interval.parse(cmd.interval))
    coupon = ledger.coupon(cmd.coupon) if cmd.coupon else None
    sub = Subscription.start(
        derived_id("subscription", cmd.command_id), customer.id, price, now, cmd.trial_days
    )
    account = Account(ledger, sub, customer, now)
    if coupon is not None:
        # The first paid period is 0, after a trial or not.
        sub.apply_discount(coupon.redeem(sub.id, price.plan_code, currency, 0, now), now)
    account.bill_since(Mark.of(None))
    return Outcome(account.view(), account.changed(*([coupon] if coupon else [])))


def _proration_view(proration: Proration | None) -> dict[str, Any] | None:
    if proration is None:
        return None
    return {
        "credit": money_view(proration.credit),
        "charge": money_view(proration.charge),
        "net": money_view(proration.net),
    }


def change_plan(cmd: s.ChangePlan, ledger: Ledger, now: datetime) -> Outcome:
    account = current_subscription(ledger, cmd.subscription_id, now)
    sub = account.sub
    interval = Interval.parse(cmd.interval) if cmd.interval else sub.price.interval
    if (cmd.plan_code, interval) == (sub.price.plan_code, sub.price.interval):
        # One's own plan: no catalog look-up, so that an archived plan can still call
        # off a scheduled change (the domain decides what "the same plan" means).
        price = sub.price
    else:
        price = ledger.plan(cmd.plan_code).price_for_signup(sub.price.currency, interval)
    timing = ChangeTiming(cmd.when) if cmd.when else None
    paid = _invoice_of_period(ledger, sub)
    mark = Mark.of(sub)
    proration = sub.change_price(price, account.at, timing)
    # An upgrade is invoiced at once; a downgrade made now credits the account, with
    # the tax the period's invoice charged on the credited time.
    account.bill_since(mark, paid_ratio=paid.gross_ratio if paid else Fraction(1))
    result = account.view() | {"proration": _proration_view(proration)}
    return Outcome(result, account.changed())


def cancel_subscription(cmd: s.CancelSubscription, ledger: Ledger, now: datetime) -> Outcome:
    account = current_subscription(ledger, cmd.subscription_id, now)
    sub, at = account.sub, account.at
    refund = Money.zero(sub.price.currency)
    refunded: tuple[Invoice, ...] = ()
    if cmd.when == "now":
        invoice = _period_invoice(ledger, sub) if cmd.refund_unused else None
        if invoice is not None:
            # With the tax the period's invoice added, never more than is left to refund.
            refund = min(sub.unused_value(at).scaled(invoice.gross_ratio), invoice.refundable)
        sub.cancel_now(at, refund)
        if invoice is not None and refund:
            invoice.request_refund(refund, "unused time of a subscription canceled now", at)
            refunded = (invoice,)
    elif cmd.when == "period_end":
        sub.cancel_at_period_end(at)
    else:
        sub.cancel_on(cmd.when, at)
    return Outcome(account.view() | {"refund": money_view(refund)}, account.changed(*refunded))


def _invoice_of_period(ledger: Ledger, sub: Subscription) -> Invoice | None:
    """The invoice of the subscription's current period, if it was invoiced (a trial or
    a period begun while paused was not)."""
    try:
        return ledger.invoice(period_invoice_id(sub.id, sub.period.index))
    except NotFound:
        return None


def _period_invoice(ledger: Ledger, sub: Subscription) -> Invoice | None:
    """The paid invoice of the current period, whose unused part a cancel-now refunds;
    refused while its payment awaits the gateway (the charge could still land)."""
    invoice = _invoice_of_period(ledger, sub)
    if invoice is None:
        return None
    if invoice.pending is not None:
        raise PaymentInFlight(f"the payment of {invoice.number} awaits the gateway's answer")
    return invoice if invoice.status is InvoiceStatus.PAID else None


def revoke_cancel(cmd: s.RevokeCancel, ledger: Ledger, now: datetime) -> Outcome:
    account = current_subscription(ledger, cmd.subscription_id, now)
    account.sub.revoke_cancel(account.at)
    return Outcome(account.view(), account.changed())


def pause_subscription(cmd: s.PauseSubscription, ledger: Ledger, now: datetime) -> Outcome:
    account = current_subscription(ledger, cmd.subscription_id, now)
    account.sub.pause(account.at, cmd.resume_at)
    return Outcome(account.view(), account.changed())


def resume_subscription(cmd: s.ResumeSubscription, ledger: Ledger, now: datetime) -> Outcome:
    account = current_subscription(ledger, cmd.subscription_id, now)
    account.sub.resume(account.at)
    return Outcome(account.view(), account.changed())


def prefetch(command: s.Command) -> list[UUID]:
    """The aggregates a command reads first, for a batch to load them all in one go: a
    hint (a wrong one costs a query, never a wrong answer), read off its fields."""
    ids = [
        value
        for name in ("customer_id", "subscription_id", "invoice_id")
        if isinstance(value := getattr(command, name, None), UUID)
    ]
    if isinstance(command, s.RegisterCustomer) and command.customer_id is None:
        ids.append(derived_id("customer", command.command_id))
    if isinstance(command, s.RegisterPlan):
        ids.append(plan_id(command.code))
    elif isinstance(plan_code := getattr(command, "plan_code", None), str):
        ids.append(plan_id(plan_code))
    if isinstance(command, s.RegisterCoupon):
        ids.append(coupon_id(command.code))
    elif isinstance(coupon := getattr(command, "coupon", None), str):
        ids.append(coupon_id(coupon))
    return ids


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
    **BILLING_HANDLERS,
    **GATEWAY_HANDLERS,
    **WEBHOOK_HANDLERS,
    **PRIVACY_HANDLERS,
}
