"""The double-entry journal, on SQLite and on PostgreSQL.

Stories of one customer each, from 1 April 2025 (a monthly period from midnight is then
30 days, so that 3000 EUR earns 100 EUR a day): an invoice paid, taxed, discounted,
prorated by an upgrade, refunded, written off, voided, and account credit from a downgrade
applied to the next invoice. Every account is worked out by hand; after each step every
entry balances and the trial balance adds up to 0, and at the end the tables rebuilt from
scratch equal the ones kept up to date step by step.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from commands import schemas as s
from commands.bootstrap import projection_database
from commands.lifecycle import advance_subscription, end_dunning
from commands.settings import persistence_env
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.invoices import period_invoice_id
from projections.journal import (
    ACCOUNTS_RECEIVABLE,
    BAD_DEBT,
    CASH,
    CUSTOMER_CREDIT,
    DEFERRED_REVENUE,
    DISCOUNTS,
    REFUNDS,
    REVENUE,
    TAX_PAYABLE,
    Journal,
    journal_balanced,
    recognised_revenue,
    trial_balance,
)
from projections.recognition import daily
from projections.runner import Projector
from tests.integration.conftest import Shop

EUR = 100  # minor units in a euro
TABLES = {
    "journal_lines": "entry_id, account",
    "revenue_recognition": "invoice_id, day",
    "journal_requests": "invoice_id, kind, number",
}


def at(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


def on(month: int, day: int) -> date:
    return date(2025, month, day)


class Books:
    """The journal projection alone on the shop's database, brought up to date whenever
    it is read."""

    def __init__(self, ledger: Ledger, database_url: str) -> None:
        database = projection_database(persistence_env(database_url))
        self.projector = Projector(ledger, database, [Journal()])
        self.db = database

    def balances(self, as_of: date) -> dict[str, int]:
        """The accounts that are not 0 at the end of ``as_of``, checking on the way that
        the journal balances."""
        self.projector.catch_up()
        balances = trial_balance(self.db, "EUR", as_of)
        assert sum(balances.values()) == 0
        assert journal_balanced(self.db)
        return {account: amount for account, amount in balances.items() if amount}

    def recognised(self, start: date, end: date | None = None) -> int:
        self.projector.catch_up()
        return recognised_revenue(self.db, "EUR", start, end or start)

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        return {
            table: self.db.query(f"SELECT * FROM {table} ORDER BY {key}")
            for table, key in TABLES.items()
        }

    def assert_rebuilt_alike(self) -> None:
        """Replaying every event at once gives the rows that step-by-step batches gave."""
        self.projector.catch_up()
        kept = self.rows()
        self.projector.rebuild()
        assert self.rows() == kept


@pytest.fixture
def books(ledger: Ledger, database_url: str) -> Iterator[Books]:
    books = Books(ledger, database_url)
    yield books
    books.projector.close()


@pytest.fixture
def store(shop: Shop, clock: SimulatedClock) -> Shop:
    """Duo 2000, Team 3000 and Enterprise 6000 EUR a month; the clock at 1 April."""
    for code, euros in (("duo", 2000), ("team", 3000), ("enterprise", 6000)):
        shop.send(s.RegisterPlan, code=code, name=code.title())
        shop.send(s.AddPrice, plan_code=code, currency="EUR", amount=euros * EUR)
    clock.advance_to(at(4, 1))
    return shop


def test_a_paid_monthly_invoice_earns_its_revenue_day_by_day(store: Shop, books: Books) -> None:
    store.subscribe(store.customer(), "team")
    assert books.balances(on(3, 31)) == {}
    assert books.balances(on(4, 1)) == {
        ACCOUNTS_RECEIVABLE: 3000 * EUR,
        DEFERRED_REVENUE: -2900 * EUR,
        REVENUE: -100 * EUR,
    }

    store.pay()
    assert books.balances(on(4, 1)) == {
        CASH: 3000 * EUR,
        DEFERRED_REVENUE: -2900 * EUR,
        REVENUE: -100 * EUR,
    }
    assert books.balances(on(4, 15)) == {
        CASH: 3000 * EUR,
        DEFERRED_REVENUE: -1500 * EUR,
        REVENUE: -1500 * EUR,
    }
    assert books.balances(on(4, 30)) == {CASH: 3000 * EUR, REVENUE: -3000 * EUR}
    assert [books.recognised(on(4, d)) for d in range(1, 31)] == [100 * EUR] * 30
    assert books.recognised(on(3, 31)) == books.recognised(on(5, 1)) == 0
    assert books.recognised(on(1, 1), on(12, 31)) == 3000 * EUR
    books.assert_rebuilt_alike()


def test_vat_added_on_top_is_owed_to_the_tax_office(store: Shop, books: Books) -> None:
    customer = store.customer()
    store.send(s.SetTaxRate, customer_id=customer, percent=Decimal(20))
    store.subscribe(customer, "team")
    store.pay()

    # 3000 + 20% = 3600 collected, of which 600 is the tax office's.
    assert books.balances(on(4, 1)) == {
        CASH: 3600 * EUR,
        TAX_PAYABLE: -600 * EUR,
        DEFERRED_REVENUE: -2900 * EUR,
        REVENUE: -100 * EUR,
    }
    assert books.balances(on(4, 30)) == {
        CASH: 3600 * EUR,
        TAX_PAYABLE: -600 * EUR,
        REVENUE: -3000 * EUR,
    }
    assert books.recognised(on(4, 1), on(4, 30)) == 3000 * EUR
    books.assert_rebuilt_alike()


def test_vat_included_in_the_price_is_not_revenue(store: Shop, books: Books) -> None:
    customer = store.customer()
    store.send(s.SetTaxRate, customer_id=customer, percent=Decimal(20), inclusive=True)
    store.subscribe(customer, "team")
    store.pay()

    # 3000 holds 3000 x 20/120 = 500 of tax: 2500 of revenue, 83.33... a day, so the
    # running sum rounds to 83.33, 83.34, 83.33, and again.
    assert books.balances(on(4, 30)) == {
        CASH: 3000 * EUR,
        TAX_PAYABLE: -500 * EUR,
        REVENUE: -2500 * EUR,
    }
    days = [books.recognised(on(4, d)) for d in range(1, 31)]
    assert days == [8333, 8334, 8333] * 10
    assert books.balances(on(4, 3)) == {
        CASH: 3000 * EUR,
        TAX_PAYABLE: -500 * EUR,
        DEFERRED_REVENUE: -2250 * EUR,
        REVENUE: -250 * EUR,
    }
    books.assert_rebuilt_alike()


def test_a_coupon_halves_revenue_and_shows_as_discounts(store: Shop, books: Books) -> None:
    store.send(s.RegisterCoupon, code="HALF", percent_off=Decimal(50))
    store.subscribe(store.customer(), "team", coupon="HALF")
    store.pay()

    # 1500 collected and deferred; each day earns 100 of service less 50 of discount.
    assert books.balances(on(4, 1)) == {
        CASH: 1500 * EUR,
        DEFERRED_REVENUE: -1450 * EUR,
        REVENUE: -100 * EUR,
        DISCOUNTS: 50 * EUR,
    }
    assert books.balances(on(4, 30)) == {
        CASH: 1500 * EUR,
        REVENUE: -3000 * EUR,
        DISCOUNTS: 1500 * EUR,
    }
    assert [books.recognised(on(4, d)) for d in range(1, 31)] == [50 * EUR] * 30
    books.assert_rebuilt_alike()


def test_an_upgrade_mid_period_is_earned_over_the_rest_of_it(
    store: Shop, clock: SimulatedClock, books: Books
) -> None:
    subscription = store.subscribe(store.customer(), "team")
    store.pay()
    clock.advance_to(at(4, 16))
    store.send(s.ChangePlan, subscription_id=subscription, plan_code="enterprise", when="now")
    assert books.balances(on(4, 15)) == {
        CASH: 3000 * EUR,
        DEFERRED_REVENUE: -1500 * EUR,
        REVENUE: -1500 * EUR,
    }
    store.pay()

    # Half the period left: 1500 of Team credited, 3000 of Enterprise charged, 1500 paid.
    # From 16 April each day earns 100 of Team, -100 of its credit and 200 of Enterprise.
    assert books.balances(on(4, 16)) == {
        CASH: 4500 * EUR,
        DEFERRED_REVENUE: -2800 * EUR,
        REVENUE: -1700 * EUR,
    }
    assert books.recognised(on(4, 15)) == 100 * EUR
    assert [books.recognised(on(4, d)) for d in range(16, 31)] == [200 * EUR] * 15
    assert books.balances(on(4, 30)) == {CASH: 4500 * EUR, REVENUE: -4500 * EUR}
    books.assert_rebuilt_alike()


def test_downgrade_credit_is_applied_to_the_renewal_and_returned_by_its_void(
    store: Shop, ledger: Ledger, clock: SimulatedClock, books: Books
) -> None:
    customer = store.customer()
    subscription = store.subscribe(customer, "team")
    store.pay()
    clock.advance_to(at(4, 16))
    store.send(s.ChangePlan, subscription_id=subscription, plan_code="duo", when="now")

    # Half of Team (1500) credited, half of Duo (1000) charged: 500 owed to the customer,
    # a credit note paid as account balance.
    assert books.balances(on(4, 16)) == {
        CASH: 3000 * EUR,
        REFUNDS: 500 * EUR,
        CUSTOMER_CREDIT: -500 * EUR,
        DEFERRED_REVENUE: -1400 * EUR,
        REVENUE: -1600 * EUR,
    }

    store.card(customer, "pm_2", token="tok_chargeDeclined", make_default=True)
    clock.advance_to(at(5, 1))
    advance_subscription(ledger, subscription, clock.now())
    store.pay()
    # Duo's 2000 for May, 500 of it paid with the credit, the 1500 due declined. May has
    # 31 days: 2000 / 31 = 64.516... rounds to 64.52 on 1 May.
    assert books.balances(on(5, 1)) == {
        CASH: 3000 * EUR,
        ACCOUNTS_RECEIVABLE: 1500 * EUR,
        REFUNDS: 500 * EUR,
        DEFERRED_REVENUE: -2000 * EUR + 6452,
        REVENUE: -3000 * EUR - 6452,
    }

    renewal = period_invoice_id(subscription, 1)
    store.send(s.VoidInvoice, invoice_id=renewal)
    # Nothing of May is owed or earned; the credit is the customer's again.
    assert books.balances(on(5, 31)) == {
        CASH: 3000 * EUR,
        REFUNDS: 500 * EUR,
        CUSTOMER_CREDIT: -500 * EUR,
        REVENUE: -3000 * EUR,
    }
    assert books.recognised(on(5, 1), on(5, 31)) == 0
    books.assert_rebuilt_alike()


def test_a_refund_gives_cash_back(store: Shop, clock: SimulatedClock, books: Books) -> None:
    subscription = store.subscribe(store.customer(), "team")
    store.pay()
    clock.advance_to(at(4, 10))
    invoice = period_invoice_id(subscription, 0)
    store.send(s.RefundInvoice, invoice_id=invoice, amount=1000 * EUR, reason="goodwill")
    # Requested, not yet refunded: nothing moves.
    assert books.balances(on(4, 10)) == {
        CASH: 3000 * EUR,
        DEFERRED_REVENUE: -2000 * EUR,
        REVENUE: -1000 * EUR,
    }

    store.pay()
    assert books.balances(on(4, 30)) == {
        CASH: 2000 * EUR,
        REFUNDS: 1000 * EUR,
        REVENUE: -3000 * EUR,
    }
    books.assert_rebuilt_alike()


def test_an_invoice_never_paid_is_written_off_as_bad_debt(
    store: Shop, ledger: Ledger, clock: SimulatedClock, books: Books
) -> None:
    # No payment method: the first attempt fails at once, and dunning waits 7 days.
    subscription = store.subscribe(store.customer(with_card=False), "team")
    assert books.balances(on(4, 1)) == {
        ACCOUNTS_RECEIVABLE: 3000 * EUR,
        DEFERRED_REVENUE: -2900 * EUR,
        REVENUE: -100 * EUR,
    }

    clock.advance_to(at(4, 8))
    assert end_dunning(ledger, period_invoice_id(subscription, 0), clock.now())
    assert books.balances(on(4, 8)) == {
        BAD_DEBT: 3000 * EUR,
        DEFERRED_REVENUE: -2200 * EUR,
        REVENUE: -800 * EUR,
    }
    books.assert_rebuilt_alike()


def test_a_void_invoice_leaves_nothing_behind(store: Shop, books: Books) -> None:
    subscription = store.subscribe(store.customer(with_card=False), "team")
    assert books.balances(on(4, 1))[ACCOUNTS_RECEIVABLE] == 3000 * EUR

    store.send(s.VoidInvoice, invoice_id=period_invoice_id(subscription, 0))
    assert books.balances(on(4, 1)) == {}
    assert books.balances(on(4, 30)) == {}
    assert books.recognised(on(4, 1), on(4, 30)) == 0
    assert books.rows()["revenue_recognition"] == []
    books.assert_rebuilt_alike()


def test_a_day_earns_the_part_of_the_service_period_in_it() -> None:
    # Noon to noon three days later: half a day, two whole days, half a day.
    assert daily(300, at(4, 1, 12), at(4, 4, 12)) == [
        (on(4, 1), 50),
        (on(4, 2), 100),
        (on(4, 3), 100),
        (on(4, 4), 50),
    ]
    # An empty period is earned on its day.
    assert daily(-70, at(4, 1, 12), at(4, 1, 12)) == [(on(4, 1), -70)]
