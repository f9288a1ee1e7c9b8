"""Customers: contact data, gateway tokens (never card numbers) and an account credit."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from ledger.application import Ledger
from ledger.customers import Customer, PaymentMethod, looks_like_card_number, passes_luhn
from ledger.errors import (
    CardNumberNotAllowed,
    CurrencyMismatch,
    InvalidCustomer,
    InvalidPaymentMethod,
    UnknownCurrency,
    UnknownPaymentMethod,
)
from ledger.money import Money
from ledger.tax import TaxRate

JAN = datetime(2025, 1, 15, tzinfo=UTC)


def eur(cents: int) -> Money:
    return Money(cents, "EUR")


def method(
    id: str = "pm_1", token: str = "tok_visa", exp_month: int = 12, exp_year: int = 2027
) -> PaymentMethod:
    return PaymentMethod(
        id=id,
        gateway="sandbox",
        token=token,
        brand="visa",
        last4="4242",
        exp_month=exp_month,
        exp_year=exp_year,
    )


def ada() -> Customer:
    return Customer.register(uuid4(), "ada@example.com", "Ada Lovelace", "EUR", JAN)


# Card numbers never enter the ledger


@pytest.mark.parametrize(
    "token",
    [
        "4242424242424242",
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "4222222222222",  # 13-digit Visa test number
        "378282246310005",  # Amex test number
        "6011111111111117",  # Discover test number
    ],
)
def test_a_token_that_is_a_card_number_is_refused(token: str) -> None:
    assert looks_like_card_number(token)
    with pytest.raises(CardNumberNotAllowed, match="card number"):
        method(token=token)


@pytest.mark.parametrize(
    "token", ["tok_visa", "pm_1NqX2Y", "4242424242424241", "424242424242", "ch_4242424242424242"]
)
def test_gateway_tokens_and_numbers_that_fail_luhn_are_accepted(token: str) -> None:
    assert not looks_like_card_number(token)
    assert method(token=token).token == token


def test_the_luhn_check() -> None:
    assert passes_luhn("79927398713")
    assert not passes_luhn("79927398710")
    assert passes_luhn("0")


@pytest.mark.parametrize(
    "fields",
    [
        {"id": ""},
        {"gateway": ""},
        {"token": ""},
        {"last4": "424"},
        {"last4": "42a2"},
        {"exp_month": 0},
        {"exp_month": 13},
        {"exp_year": 1999},
    ],
)
def test_a_payment_method_needs_plausible_details(fields: dict[str, object]) -> None:
    values: dict[str, object] = {
        "id": "pm_1",
        "gateway": "sandbox",
        "token": "tok_visa",
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2027,
    }
    with pytest.raises(InvalidPaymentMethod):
        PaymentMethod(**(values | fields))  # type: ignore[arg-type]


def test_a_card_is_valid_through_the_end_of_its_expiry_month() -> None:
    card = method(exp_month=1, exp_year=2025)
    assert not card.is_expired(datetime(2025, 1, 31, 23, 59, tzinfo=UTC))
    assert card.is_expired(datetime(2025, 2, 1, tzinfo=UTC))


# Contact data


def test_a_customer_registers_with_contact_data_and_a_currency() -> None:
    customer = ada()
    assert (customer.email, customer.name, customer.currency) == (
        "ada@example.com",
        "Ada Lovelace",
        "EUR",
    )
    assert customer.credit_balance == eur(0)
    assert customer.default_payment_method(JAN) is None


@pytest.mark.parametrize("email", ["ada", "ada@example", "ada @example.com", "@example.com", ""])
def test_a_customer_needs_an_email_address(email: str) -> None:
    with pytest.raises(InvalidCustomer, match="not an email address"):
        Customer.register(uuid4(), email, "Ada", "EUR", JAN)
    customer = ada()
    with pytest.raises(InvalidCustomer):
        customer.change_contact(email, "Ada", JAN)
    assert customer.email == "ada@example.com"


def test_a_customer_needs_a_name_and_a_known_currency() -> None:
    with pytest.raises(InvalidCustomer, match="name"):
        Customer.register(uuid4(), "ada@example.com", "  ", "EUR", JAN)
    with pytest.raises(UnknownCurrency):
        Customer.register(uuid4(), "ada@example.com", "Ada", "XXX", JAN)


def test_a_customer_changes_contact_data() -> None:
    customer = ada()
    customer.change_contact("ada@analytical.engine", "Ada King", JAN)
    assert (customer.email, customer.name) == ("ada@analytical.engine", "Ada King")


# Payment methods


def test_the_first_payment_method_becomes_the_default() -> None:
    customer = ada()
    customer.add_payment_method(method("pm_1"), make_default=False, at=JAN)
    customer.add_payment_method(method("pm_2"), make_default=False, at=JAN)
    assert customer.default_payment_method_id == "pm_1"
    assert customer.default_payment_method(JAN) == method("pm_1")
    assert set(customer.payment_methods) == {"pm_1", "pm_2"}


def test_a_new_method_can_be_made_the_default_when_added() -> None:
    customer = ada()
    customer.add_payment_method(method("pm_1"), make_default=False, at=JAN)
    customer.add_payment_method(method("pm_2"), make_default=True, at=JAN)
    assert customer.default_payment_method_id == "pm_2"


def test_the_customer_switches_the_default_method() -> None:
    customer = ada()
    customer.add_payment_method(method("pm_1"), make_default=False, at=JAN)
    customer.add_payment_method(method("pm_2"), make_default=False, at=JAN)
    customer.switch_default_payment_method("pm_2", JAN)
    assert customer.default_payment_method_id == "pm_2"
    with pytest.raises(UnknownPaymentMethod, match="pm_9"):
        customer.switch_default_payment_method("pm_9", JAN)
    assert customer.default_payment_method_id == "pm_2"


def test_an_expired_method_is_refused() -> None:
    customer = ada()
    with pytest.raises(InvalidPaymentMethod, match="expired"):
        customer.add_payment_method(method(exp_month=12, exp_year=2024), make_default=True, at=JAN)
    assert customer.payment_methods == {}


def test_a_method_that_expired_since_cannot_become_or_serve_as_the_default() -> None:
    customer = ada()
    customer.add_payment_method(method("pm_1"), make_default=False, at=JAN)
    customer.add_payment_method(method("pm_old", exp_month=3, exp_year=2025), False, JAN)
    april = datetime(2025, 4, 1, tzinfo=UTC)
    with pytest.raises(InvalidPaymentMethod, match="expired"):
        customer.switch_default_payment_method("pm_old", april)
    customer.switch_default_payment_method("pm_old", JAN)
    assert customer.default_payment_method(JAN) == method("pm_old", exp_month=3, exp_year=2025)
    assert customer.default_payment_method(april) is None


def test_the_same_method_is_not_added_twice() -> None:
    customer = ada()
    customer.add_payment_method(method("pm_1"), make_default=False, at=JAN)
    with pytest.raises(InvalidPaymentMethod, match="already on file"):
        customer.add_payment_method(method("pm_1"), make_default=True, at=JAN)


# Account credit


def test_account_credit_is_added_and_used_but_never_goes_below_zero() -> None:
    customer = ada()
    customer.adjust_credit(eur(500), "downgrade credit", JAN)
    customer.adjust_credit(eur(-200), "applied to invoice", JAN)
    assert customer.credit_balance == eur(300)
    with pytest.raises(InvalidCustomer, match="cannot cover"):
        customer.adjust_credit(eur(-301), "applied to invoice", JAN)
    assert customer.credit_balance == eur(300)
    customer.adjust_credit(eur(-300), "applied to invoice", JAN)
    assert customer.credit_balance == eur(0)


def test_credit_is_in_the_customer_currency() -> None:
    customer = ada()
    with pytest.raises(CurrencyMismatch, match="USD"):
        customer.adjust_credit(Money(500, "USD"), "goodwill", JAN)
    assert customer.credit_balance == eur(0)


def test_a_zero_adjustment_records_nothing() -> None:
    customer = ada()
    customer.collect_events()
    customer.adjust_credit(eur(0), "nothing", JAN)
    assert customer.collect_events() == []


def test_a_new_method_replaces_a_default_that_has_expired() -> None:
    customer = ada()
    customer.add_payment_method(method("pm_old", exp_month=2, exp_year=2025), False, JAN)
    april = datetime(2025, 4, 1, tzinfo=UTC)
    customer.add_payment_method(method("pm_new", exp_year=2030), make_default=False, at=april)
    assert customer.default_payment_method_id == "pm_new"


def test_a_trial_converts_only_on_a_method_on_file_at_its_end() -> None:
    customer = ada()
    february = datetime(2025, 2, 1, tzinfo=UTC)
    customer.add_payment_method(method("pm_1"), make_default=False, at=february)
    assert not customer.can_pay_at(JAN)
    assert customer.can_pay_at(february)
    assert not customer.can_pay_at(datetime(2028, 1, 1, tzinfo=UTC))  # expired by then


def test_switching_to_the_current_default_records_nothing() -> None:
    customer = ada()
    customer.add_payment_method(method("pm_1"), make_default=False, at=JAN)
    pending = len(customer.pending_events)
    customer.switch_default_payment_method("pm_1", JAN)
    assert len(customer.pending_events) == pending


# Tax


def test_a_tax_rate_applies_to_future_invoices_and_is_recorded_only_when_it_changes() -> None:
    customer = ada()
    vat = TaxRate("VAT", Decimal(20), inclusive=False)
    customer.collect_events()
    customer.set_tax_rate(vat, JAN)
    customer.set_tax_rate(TaxRate("VAT", Decimal("20.0"), inclusive=False), JAN)
    assert customer.tax_rate == vat
    [set_rate] = customer.collect_events()
    assert isinstance(set_rate, Customer.TaxRateSet)
    customer.set_tax_rate(None, JAN)
    assert customer.tax_rate is None


def test_a_snapshot_taken_before_tax_rates_and_phones_loads_without_them() -> None:
    customer = ada()
    customer.adjust_credit(eur(500), "goodwill", JAN)
    snapshot = Customer.Snapshot.take(customer)
    dropped = ("tax_rate", "phone", "class_version")
    state = {k: v for k, v in snapshot.state.items() if k not in dropped}
    old = Customer.Snapshot(
        originator_id=snapshot.originator_id,
        originator_version=snapshot.originator_version,
        timestamp=snapshot.timestamp,
        topic=snapshot.topic,
        state=state,
    )
    loaded = old.mutate(None)
    assert isinstance(loaded, Customer)
    assert (loaded.tax_rate, loaded.phone, loaded.credit_balance) == (None, None, eur(500))


def test_a_phone_is_kept_until_changed_and_must_be_e164() -> None:
    customer = Customer.register(uuid4(), "ada@example.com", "Ada", "INR", JAN, "+919876543210")
    customer.change_contact("ada@analytical.engine", "Ada King", JAN)

    assert customer.phone == "+919876543210"
    customer.change_contact("ada@analytical.engine", "Ada King", JAN, "+14155550100")
    assert customer.phone == "+14155550100"
    with pytest.raises(InvalidCustomer):
        customer.change_contact("ada@analytical.engine", "Ada King", JAN, "555-0100")


def test_contact_events_stored_before_phones_existed_still_load() -> None:
    customer = ada()
    customer.change_contact("ada@analytical.engine", "Ada King", JAN)
    ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    stored = []
    for event in customer.collect_events():
        record = ledger.mapper.to_stored_event(event)
        state = ledger.mapper.transcoder.decode(record.state)
        del state["phone"], state["class_version"]  # the shape these events had before
        stored.append(replace(record, state=ledger.mapper.transcoder.encode(state)))

    rebuilt: Any = None
    for record in stored:
        loaded: Any = ledger.mapper.to_domain_event(record)
        rebuilt = loaded.mutate(rebuilt)

    assert isinstance(rebuilt, Customer)
    assert (rebuilt.email, rebuilt.phone) == ("ada@analytical.engine", None)
