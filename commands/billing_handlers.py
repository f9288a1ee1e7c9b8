"""Handlers of the billing commands: coupons, tax rates, refunds and voids."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from commands import schemas as s
from commands.accounts import Outcome, current_subscription, invoice_view, money_view
from ledger.application import Ledger
from ledger.coupons import Coupon
from ledger.discounts import Duration
from ledger.errors import CouponAlreadyRegistered
from ledger.money import Money
from ledger.tax import TaxRate


def register_coupon(cmd: s.RegisterCoupon, ledger: Ledger, now: datetime) -> Outcome:
    if ledger.has_coupon(cmd.code):
        raise CouponAlreadyRegistered(f"coupon {cmd.code!r} is already registered")
    amount_off = Money(cmd.amount_off, cmd.currency) if cmd.amount_off and cmd.currency else None
    coupon = Coupon.register(
        code=cmd.code,
        name=cmd.name or cmd.code,
        percent_off=cmd.percent_off,
        amount_off=amount_off,
        duration=Duration(cmd.duration),
        duration_periods=cmd.duration_periods,
        expires_at=cmd.expires_at,
        max_redemptions=cmd.max_redemptions,
        plan_codes=cmd.plan_codes,
        public=cmd.public,
        at=now,
    )
    return Outcome({"coupon_id": str(coupon.id), "code": coupon.code}, (coupon,))


def apply_coupon(cmd: s.ApplyCoupon, ledger: Ledger, now: datetime) -> Outcome:
    account = current_subscription(ledger, cmd.subscription_id, now)
    sub, at = account.sub, account.at
    coupon = ledger.coupon(cmd.coupon)
    discount = coupon.redeem(
        sub.id, sub.price.plan_code, sub.price.currency, sub.next_discountable_period, at
    )
    sub.apply_discount(discount, at)
    return Outcome(account.view(), account.changed(coupon))


def set_tax_rate(cmd: s.SetTaxRate, ledger: Ledger, now: datetime) -> Outcome:
    customer = ledger.customer(cmd.customer_id)
    rate = TaxRate(cmd.name, cmd.percent, cmd.inclusive)
    customer.set_tax_rate(rate, now)
    return Outcome({"customer_id": str(customer.id), "tax_rate": rate.label}, (customer,))


def refund_invoice(cmd: s.RefundInvoice, ledger: Ledger, now: datetime) -> Outcome:
    invoice = ledger.invoice(cmd.invoice_id)
    amount = Money(cmd.amount, invoice.currency) if cmd.amount else invoice.refundable
    request = invoice.request_refund(amount, cmd.reason, max(now, invoice.modified_on))
    result = invoice_view(invoice) | {
        "refund_number": request.number,
        "refund": money_view(request.amount),
        "refund_status": "requested",
    }
    return Outcome(result, (invoice,))


def void_invoice(cmd: s.VoidInvoice, ledger: Ledger, now: datetime) -> Outcome:
    """Voids an open invoice: nothing more is collected, credit applied to it returns to
    the account, and a subscription in dunning for it is active again."""
    invoice = ledger.invoice(cmd.invoice_id)
    account = current_subscription(ledger, invoice.subscription_id, now)
    invoice.void(account.at)
    if invoice.credit_applied:
        account.customer.adjust_credit(
            invoice.credit_applied, f"{invoice.number} voided", account.at
        )
    account.sub.payment_recovered(invoice.id, account.at)
    return Outcome(invoice_view(invoice), account.changed(invoice))


BILLING_HANDLERS: dict[type[s.Command], Callable[[Any, Ledger, datetime], Outcome]] = {
    s.RegisterCoupon: register_coupon,
    s.ApplyCoupon: apply_coupon,
    s.SetTaxRate: set_tax_rate,
    s.RefundInvoice: refund_invoice,
    s.VoidInvoice: void_invoice,
}
