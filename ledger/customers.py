"""Customers: contact data, payment methods (gateway tokens only), account credit.

A card number never enters the ledger: a token that looks like one (13-19 digits that
pass the Luhn check) is refused. Contact data (email, name, phone) is personal data: the
event store seals it with the customer's own key (``ledger.personal_data``), and an
erased customer's contact data reads as ``ERASED`` (the right to be forgotten), while
their payment methods, credit and the rest of their account stay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.errors import (
    CardNumberNotAllowed,
    CurrencyMismatch,
    DomainError,
    InvalidCustomer,
    InvalidPaymentMethod,
    UnknownPaymentMethod,
)
from ledger.money import Money, exponent
from ledger.tax import TaxRate

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# E.164, which gateways that want a phone (Razorpay's "contact") accept.
_PHONE = re.compile(r"^\+[1-9][0-9]{7,14}$")
# What an erased customer's email and name read as, wherever they are read.
ERASED = "erased"


class CustomerErased(DomainError):
    """The customer's personal data was erased: no new contact data, no new subscription."""

    code = "customer_erased"


def passes_luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def looks_like_card_number(token: str) -> bool:
    digits = re.sub(r"[\s-]", "", token)
    return digits.isdigit() and 13 <= len(digits) <= 19 and passes_luhn(digits)


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    """A gateway's token for a card or account, with what a receipt may show."""

    id: str
    gateway: str
    token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    # The gateway's id of the customer the token is saved under, where it needs one
    # (Stripe cus_..., Razorpay cust_..., Authorize.net's customer profile id).
    customer_reference: str | None = None

    def __post_init__(self) -> None:
        if looks_like_card_number(self.token):
            raise CardNumberNotAllowed(
                "the payment method token looks like a card number; send the gateway's token"
            )
        if not self.id or not self.gateway or not self.token:
            raise InvalidPaymentMethod("a payment method needs an id, a gateway and a token")
        if not (len(self.last4) == 4 and self.last4.isdigit()):
            raise InvalidPaymentMethod(f"last4 must be four digits, got {self.last4!r}")
        if not 1 <= self.exp_month <= 12:
            raise InvalidPaymentMethod(f"expiry month must be 1-12, got {self.exp_month}")
        if not 2000 <= self.exp_year <= 2199:
            raise InvalidPaymentMethod(f"expiry year {self.exp_year} is not plausible")

    def is_expired(self, at: datetime) -> bool:
        return (at.year, at.month) > (self.exp_year, self.exp_month)


class Customer(Aggregate):
    # Version 2 added ``tax_rate``, version 3 ``phone``, version 4 ``erased``: older
    # snapshots are upcast.
    class_version = 4

    # State set by the events' apply(); under TYPE_CHECKING because eventsourcing would
    # turn class annotations into constructor fields.
    if TYPE_CHECKING:
        email: str
        name: str
        phone: str | None
        currency: str
        payment_methods: dict[str, PaymentMethod]
        payment_methods_added_at: dict[str, datetime]
        default_payment_method_id: str | None
        credit_balance: Money
        tax_rate: TaxRate | None
        erased: bool

    @staticmethod
    def upcast_v1_v2(state: dict[str, object]) -> None:
        state["tax_rate"] = None

    @staticmethod
    def upcast_v2_v3(state: dict[str, object]) -> None:
        state["phone"] = None

    @staticmethod
    def upcast_v3_v4(state: dict[str, object]) -> None:
        state["erased"] = False

    class Registered(Aggregate.Created):
        # Version 2 added ``phone``.
        class_version = 2
        email: str
        name: str
        currency: str
        phone: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, object]) -> None:
            state["phone"] = None

        def apply(self, customer: Customer) -> None:
            customer.email = self.email
            customer.name = self.name
            customer.phone = self.phone
            customer.currency = self.currency
            customer.payment_methods = {}
            customer.payment_methods_added_at = {}
            customer.default_payment_method_id = None
            customer.credit_balance = Money.zero(self.currency)
            customer.tax_rate = None
            customer.erased = False

    class ContactChanged(Aggregate.Event):
        # Version 2 added ``phone``.
        class_version = 2
        email: str
        name: str
        phone: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, object]) -> None:
            state["phone"] = None

        def apply(self, customer: Customer) -> None:
            customer.email = self.email
            customer.name = self.name
            customer.phone = self.phone

    class Erased(Aggregate.Event):
        """The customer's personal data key was destroyed: what was sealed with it is
        unreadable for good. Carries no personal data itself."""

        def apply(self, customer: Customer) -> None:
            customer.email = ERASED
            customer.name = ERASED
            customer.phone = None
            customer.erased = True

    class PaymentMethodAdded(Aggregate.Event):
        method: PaymentMethod
        is_default: bool

        def apply(self, customer: Customer) -> None:
            customer.payment_methods[self.method.id] = self.method
            customer.payment_methods_added_at[self.method.id] = self.timestamp
            if self.is_default:
                customer.default_payment_method_id = self.method.id

    class DefaultPaymentMethodSwitched(Aggregate.Event):
        payment_method_id: str

        def apply(self, customer: Customer) -> None:
            customer.default_payment_method_id = self.payment_method_id

    class CreditAdjusted(Aggregate.Event):
        amount: Money
        reason: str

        def apply(self, customer: Customer) -> None:
            customer.credit_balance = customer.credit_balance + self.amount

    class TaxRateSet(Aggregate.Event):
        tax_rate: TaxRate | None

        def apply(self, customer: Customer) -> None:
            customer.tax_rate = self.tax_rate

    @classmethod
    def register(
        cls,
        id: UUID,
        email: str,
        name: str,
        currency: str,
        at: datetime,
        phone: str | None = None,
    ) -> Customer:
        _check_contact(email, name, phone)
        exponent(currency)
        return cls._create(
            cls.Registered,
            id=id,
            timestamp=at,
            email=email,
            name=name,
            currency=currency,
            phone=phone,
        )

    def change_contact(self, email: str, name: str, at: datetime, phone: str | None = None) -> None:
        """New contact data; a ``phone`` of None keeps the one on file."""
        self.refuse_if_erased("new contact data")
        phone = phone or self.phone
        _check_contact(email, name, phone)
        if (email, name, phone) == (self.email, self.name, self.phone):
            return  # nothing changed: nothing to record
        self.trigger_event(self.ContactChanged, timestamp=at, email=email, name=name, phone=phone)

    def erase(self, at: datetime) -> None:
        """Records that the customer's personal data was erased (once: erasing again
        records nothing). Their subscriptions, invoices and payments go on."""
        if not self.erased:
            self.trigger_event(self.Erased, timestamp=at)

    def refuse_if_erased(self, what: str) -> None:
        if self.erased:
            raise CustomerErased(f"customer {self.id} was erased: {what} is refused")

    def add_payment_method(self, method: PaymentMethod, make_default: bool, at: datetime) -> None:
        if method.id in self.payment_methods:
            raise InvalidPaymentMethod(f"payment method {method.id!r} is already on file")
        if method.is_expired(at):
            raise InvalidPaymentMethod(f"payment method {method.id!r} has expired")
        # A new method replaces a default that can no longer be charged.
        is_default = make_default or self.default_payment_method(at) is None
        self.trigger_event(
            self.PaymentMethodAdded, timestamp=at, method=method, is_default=is_default
        )

    def switch_default_payment_method(self, payment_method_id: str, at: datetime) -> None:
        method = self.payment_methods.get(payment_method_id)
        if method is None:
            raise UnknownPaymentMethod(f"customer has no payment method {payment_method_id!r}")
        if method.is_expired(at):
            raise InvalidPaymentMethod(f"payment method {payment_method_id!r} has expired")
        if payment_method_id == self.default_payment_method_id:
            return  # already the default: nothing new to record
        self.trigger_event(
            self.DefaultPaymentMethodSwitched, timestamp=at, payment_method_id=payment_method_id
        )

    def adjust_credit(self, amount: Money, reason: str, at: datetime) -> None:
        """Adds (positive) or uses (negative) account credit, never below zero."""
        if amount.currency != self.currency:
            raise CurrencyMismatch(f"credit in {amount.currency} for a {self.currency} customer")
        if (self.credit_balance + amount).amount < 0:
            raise InvalidCustomer(f"credit balance {self.credit_balance} cannot cover {-amount}")
        if amount:
            self.trigger_event(self.CreditAdjusted, timestamp=at, amount=amount, reason=reason)

    def set_tax_rate(self, tax_rate: TaxRate | None, at: datetime) -> None:
        """The tax on this customer's future invoices (None: no tax); issued ones keep theirs."""
        if tax_rate != self.tax_rate:
            self.trigger_event(self.TaxRateSet, timestamp=at, tax_rate=tax_rate)

    def can_pay_at(self, at: datetime) -> bool:
        """Whether a payment method was on file at ``at`` and had not expired by then."""
        return any(
            added <= at and not self.payment_methods[method_id].is_expired(at)
            for method_id, added in self.payment_methods_added_at.items()
        )

    def default_payment_method(self, at: datetime) -> PaymentMethod | None:
        """The default method if it can still be charged at ``at``."""
        if self.default_payment_method_id is None:
            return None
        method = self.payment_methods[self.default_payment_method_id]
        return None if method.is_expired(at) else method


def _check_contact(email: str, name: str, phone: str | None) -> None:
    if not _EMAIL.match(email):
        # The value stays out of the message: a refusal is recorded, unsealed.
        raise InvalidCustomer("the email is not an email address")
    if not name.strip():
        raise InvalidCustomer("a customer needs a name")
    if phone is not None and not _PHONE.match(phone):
        raise InvalidCustomer("the phone is not a phone number (E.164: +, then 8-15 digits)")
