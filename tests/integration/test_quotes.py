"""Quotes: what a prospect or a customer would pay, by the rules that bill, and nothing
recorded. Catalog: Basic 10 EUR a month, Pro 20 EUR a month with a 14-day trial; the clock
starts on Fri 31 Jan 2025 09:00 UTC (a period of 28 days to 28 Feb)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from commands import schemas as s
from commands.quotes import quote_change, quote_signup
from ledger.errors import CouponNotApplicable, NotFound
from ledger.invoices import change_invoice_id
from tests.integration.conftest import Shop
from tests.integration.test_cli import run


def stored(shop: Shop) -> int:
    return shop.ledger.recorder.max_notification_id() or 0


def figures(invoice: dict[str, Any]) -> tuple[int, ...]:
    return tuple(
        invoice[key]["amount"] for key in ("subtotal", "discount", "tax", "total", "amount_due")
    )


def test_a_prospect_sees_the_first_invoice_with_the_coupon_and_nothing_is_stored(
    shop: Shop,
) -> None:
    shop.send(s.RegisterCoupon, code="HALF", percent_off=Decimal(50), duration="once")
    before = stored(shop)
    quote = quote_signup(
        shop.ledger, "basic", "month", shop.clock.now(), currency="EUR", coupon="HALF"
    )
    [invoice] = quote["invoices"]
    assert figures(invoice) == (1000, 500, 0, 500, 500)
    assert (invoice["status"], invoice["reason"], invoice["invoice_id"]) == ("open", "signup", None)
    assert quote["subscription"]["mrr"] == {"amount": 500, "currency": "EUR"}
    assert (quote["subscription"]["customer_id"], quote["recorded"]) == (None, False)
    assert stored(shop) == before  # not even the coupon's redemption


def test_a_trial_shows_the_invoice_due_at_its_end(shop: Shop) -> None:
    quote = quote_signup(shop.ledger, "pro", "month", shop.clock.now(), currency="EUR")
    [invoice] = quote["invoices"]
    assert invoice["reason"] == "trial_conversion"
    assert figures(invoice) == (2000, 0, 0, 2000, 2000)
    start = (shop.clock.now() + timedelta(days=14)).date().isoformat()
    assert invoice["lines"][0]["description"].startswith(f"pro (month), {start}")


def test_a_customer_quote_has_their_tax_and_credit(shop: Shop) -> None:
    ann = shop.customer()
    shop.send(s.SetTaxRate, customer_id=ann, percent=Decimal(20))
    quote = quote_signup(shop.ledger, "basic", "month", shop.clock.now(), customer_id=ann)
    [invoice] = quote["invoices"]
    assert figures(invoice) == (1000, 0, 200, 1200, 1200)


def test_the_quote_of_an_upgrade_is_what_is_then_invoiced(shop: Shop) -> None:
    ann = shop.customer()
    sub_id = shop.subscribe(ann, "basic", trial_days=0)
    shop.pay()
    shop.clock.advance(timedelta(days=14))  # half of the 28 days left: -500 + 1000
    before = stored(shop)
    quote = quote_change(shop.ledger, sub_id, "pro", shop.clock.now())
    [quoted] = quote["invoices"]
    assert figures(quoted) == (500, 0, 0, 500, 500)
    assert stored(shop) == before
    result = shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro")
    [invoice] = result["invoices"]
    assert figures(invoice) == figures(quoted)
    assert invoice["invoice_id"] == str(
        change_invoice_id(sub_id, shop.ledger.subscription(sub_id).version)
    )


def test_the_quote_of_a_downgrade_now_shows_the_credit(shop: Shop) -> None:
    ann = shop.customer()
    sub_id = shop.subscribe(ann, "pro", trial_days=0)
    shop.pay()
    shop.clock.advance(timedelta(days=14))  # 2000 * 14/28 - 1000 * 14/28 = 500
    quote = quote_change(shop.ledger, sub_id, "basic", shop.clock.now(), when="now")
    assert quote["invoices"] == []
    assert quote["credited"] == {"amount": 500, "currency": "EUR"}
    assert shop.ledger.customer(ann).credit_balance.amount == 0


def test_a_quote_refuses_what_a_signup_would(shop: Shop) -> None:
    shop.send(s.RegisterCoupon, code="PROONLY", percent_off=Decimal(10), plan_codes=["pro"])
    now = shop.clock.now()
    with pytest.raises(CouponNotApplicable):
        quote_signup(shop.ledger, "basic", "month", now, currency="EUR", coupon="PROONLY")
    with pytest.raises(NotFound):
        quote_signup(shop.ledger, "gold", "month", now, currency="EUR")


def test_the_cli_quotes_a_signup_and_refuses_bad_input(shop: Shop, database_url: str) -> None:
    code, answer = run(
        "quote", "--plan", "basic", "--currency", "EUR", "--database-url", database_url
    )
    assert code == 0
    assert figures(answer["invoices"][0]) == (1000, 0, 0, 1000, 1000)
    code, answer = run("quote", "--plan", "basic", "--database-url", database_url)
    assert (code, answer["error"]) == (2, "invalid_quote")
    code, answer = run(
        "quote", "--plan", "gold", "--currency", "EUR", "--database-url", database_url
    )
    assert (code, answer["error"]) == (1, "not_found")
