"""Commands are validated at the edge: what a service sends must be exactly right."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from commands.schemas import AddPrice, CancelSubscription, parse_command


@pytest.mark.parametrize("amount", ['"1999"', "19.99", "1999.0", "true", "-1"])
def test_an_amount_is_a_non_negative_integer_of_minor_units(amount: str) -> None:
    raw = '{"type": "add_price", "command_id": "p", "plan_code": "pro", "currency": "EUR", '
    with pytest.raises(ValidationError):
        parse_command(raw + f'"amount": {amount}}}')
    assert isinstance(parse_command(raw + '"amount": 1999}'), AddPrice)


def test_a_cancel_on_a_date_needs_the_date_and_only_then() -> None:
    sub = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(ValidationError, match="cancel_at"):
        CancelSubscription(command_id="c", subscription_id=sub, when="date")
    with pytest.raises(ValidationError, match="cancel_at"):
        parse_command(
            '{"type": "cancel_subscription", "command_id": "c", "subscription_id": "' + sub + '", '
            '"when": "now", "cancel_at": "2030-01-01T00:00:00Z"}'
        )


def test_unknown_types_and_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        parse_command('{"type": "refund_everything", "command_id": "x"}')
    with pytest.raises(ValidationError):
        parse_command('{"type": "archive_plan", "command_id": "x", "plan_code": "a", "extra": 1}')
    with pytest.raises(ValidationError):
        parse_command('{"type": "archive_plan", "command_id": "", "plan_code": "a"}')
