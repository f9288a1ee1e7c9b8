"""Commands are validated at the edge: what a service sends must be exactly right."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest
from pydantic import ValidationError

from commands.schemas import (
    AddPrice,
    CancelSubscription,
    RefundInvoice,
    RegisterCoupon,
    SetTaxRate,
    StartSubscription,
    parse_command,
)

ID = "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize("amount", ['"1999"', "19.99", "1999.0", "true", "-1"])
def test_an_amount_is_a_non_negative_integer_of_minor_units(amount: str) -> None:
    raw = '{"type": "plan.add_price", "command_id": "p", "plan_code": "pro", "currency": "EUR", '
    with pytest.raises(ValidationError):
        parse_command(raw + f'"amount": {amount}}}')
    assert isinstance(parse_command(raw + '"amount": 1999}'), AddPrice)


def test_a_cancel_is_now_at_period_end_or_at_an_instant_with_its_offset() -> None:
    raw = '{"type": "subscription.cancel", "command_id": "c", "subscription_id": "' + ID + '", '
    cancel = parse_command(raw + '"when": "2030-01-01T00:00:00Z"}')
    assert isinstance(cancel, CancelSubscription)
    assert cancel.when == datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_command(raw + '"when": "now"}') == CancelSubscription(
        command_id="c", subscription_id=UUID(ID), when="now"
    )
    for when in ('"2030-01-01T00:00:00"', '"tomorrow"', '"date"'):
        with pytest.raises(ValidationError, match="when"):
            parse_command(raw + f'"when": {when}}}')


def test_unknown_types_and_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse_command('{"type": "refund_everything", "command_id": "x"}')
    with pytest.raises(ValidationError):
        parse_command('{"type": "plan.archive", "command_id": "x", "plan_code": "a", "extra": 1}')
    with pytest.raises(ValidationError):
        parse_command('{"type": "plan.archive", "command_id": "", "plan_code": "a"}')


def coupon(fields: str) -> RegisterCoupon:
    command = parse_command(
        '{"type": "coupon.create", "command_id": "c", "code": "SPRING", ' + fields + "}"
    )
    assert isinstance(command, RegisterCoupon)
    return command


def test_a_coupon_takes_an_exact_percentage_or_an_amount_with_its_currency() -> None:
    assert coupon('"percent_off": 12.5').percent_off == Decimal("12.5")
    assert coupon('"percent_off": "33.33"').percent_off == Decimal("33.33")
    flat = coupon('"amount_off": 500, "currency": "EUR", "duration": "forever"')
    assert (flat.amount_off, flat.currency, flat.duration) == (500, "EUR", "forever")


@pytest.mark.parametrize(
    "fields",
    [
        "",  # neither
        '"percent_off": 10, "amount_off": 500, "currency": "EUR"',  # both
        '"amount_off": 500',  # an amount without its currency
        '"percent_off": 10, "currency": "EUR"',  # a currency without an amount
        '"amount_off": "500", "currency": "EUR"',  # not an integer of minor units
        '"amount_off": 5.5, "currency": "EUR"',
        '"amount_off": 0, "currency": "EUR"',
        '"percent_off": 101',
        '"percent_off": "12.34567"',
        '"percent_off": 10, "duration": "twice"',
        '"percent_off": 10, "duration": "repeating", "duration_periods": 0',
        '"percent_off": 10, "expires_at": "2030-01-01T00:00:00"',  # no time zone
    ],
)
def test_a_coupon_that_cannot_be_read_one_way_is_refused(fields: str) -> None:
    with pytest.raises(ValidationError):
        coupon(fields)


def test_a_coupon_code_is_what_a_customer_can_type() -> None:
    start = StartSubscription(command_id="s", customer_id=ID, plan_code="pro", coupon="SPRING-25")
    assert start.coupon == "SPRING-25"
    with pytest.raises(ValidationError):
        StartSubscription(command_id="s", customer_id=ID, plan_code="pro", coupon="25 %")


def test_a_tax_rate_is_an_exact_percent_added_unless_said_included() -> None:
    rate = SetTaxRate(command_id="t", customer_id=ID, percent=Decimal("8.875"))
    assert (rate.name, rate.percent, rate.inclusive) == ("VAT", Decimal("8.875"), False)
    with pytest.raises(ValidationError):
        SetTaxRate(command_id="t", customer_id=ID, percent=Decimal("8.87512"))


@pytest.mark.parametrize("amount", ["0", "-100", '"100"', "1.5"])
def test_a_refund_amount_is_a_positive_integer_of_minor_units(amount: str) -> None:
    raw = '{"type": "invoice.refund", "command_id": "r", "invoice_id": "' + ID + '"'
    everything_left = parse_command(raw + "}")
    assert isinstance(everything_left, RefundInvoice)
    assert everything_left.amount is None
    with pytest.raises(ValidationError):
        parse_command(raw + f', "amount": {amount}}}')
