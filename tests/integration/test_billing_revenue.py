"""Billing in the projections: coupons and dunning in ``current_subscriptions`` and
``due_work``, and in the revenue statistics (MRR movements, money collected and refunded,
failed and recovered payments), on SQLite and on PostgreSQL.

Each story drives the shop through its commands, the billing clock, the lifecycle steps
of dunning and the payment processor on the sandbox gateway, with the projections
catching up a few events at a time; every figure is worked out by hand in the story; and
each ends with a rebuild from position 0 that must write the same tables.

The shop's catalog: Basic 10 EUR a month (1000 minor units, so MRR 1000). The clock starts
on Fri 31 Jan 2025 at 09:00 UTC, and a period anchored then renews on Feb 28, Mar 31 and
Apr 30 at 09:00.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands import schemas as s
from commands.lifecycle import advance_subscription, end_dunning, retry_payment
from ledger.dunning import DunningPolicy, ExhaustedAction
from ledger.invoices import period_invoice_id
from projections import stats
from projections.database import Database
from projections.stats import Figures, Movements, PlanSubscribers
from projections.values import read_instant, read_int
from tests.integration.conftest import Shop

DOCS = Path(__file__).parents[2] / "docs" / "projections.md"
# Small pages, so that a story's events are projected across many batches: what one
# batch leaves in the tables (open invoices, pending refunds) the next one needs.
BATCH_SIZE = 3
NO_MOVEMENT = Movements(0, 0, 0, 0, 0)


def at(month: int, day: int) -> datetime:
    return datetime(2025, month, day, 9, tzinfo=UTC)


@pytest.fixture(autouse=True)
def small_batches(shop: Shop) -> None:
    shop.projector.batch_size = BATCH_SIZE


def caught_up(shop: Shop) -> Database:
    shop.projector.catch_up()
    return shop.projector.database


def eur(db: Database, first: date, last: date | None = None) -> Figures:
    return stats.figures(db, "EUR", first, last or first)


def payments(figures: Figures) -> tuple[int, int, int, int, int]:
    """(collected, refunded, failed payments, recovered payments, recovered)."""
    f = figures
    return f.collected, f.refunded, f.failed_payments, f.recovered_payments, f.recovered


# The billing columns of current_subscriptions, and how to read each (when not null).
BILLING_COLUMNS: dict[str, Callable[[Any], Any]] = {
    "status": str,
    "mrr": read_int,
    "invoices_in_dunning": read_int,
    "coupon_code": str,
    "percent_off": str,
    "amount_off": read_int,
    "discount_first_period": read_int,
    "discount_last_period": read_int,
    "ended_at": read_instant,
}


def billing_row(db: Database, subscription_id: UUID) -> dict[str, Any]:
    (values,) = db.query(
        f"SELECT {', '.join(BILLING_COLUMNS)} FROM current_subscriptions WHERE subscription_id = ?",
        (str(subscription_id),),
    )
    return {
        column: None if value is None else read(value)
        for (column, read), value in zip(BILLING_COLUMNS.items(), values, strict=True)
    }


def due(db: Database, subscription_id: UUID) -> list[tuple[str, datetime]]:
    rows = db.query(
        "SELECT kind, due_at FROM due_work WHERE subscription_id = ? ORDER BY kind",
        (str(subscription_id),),
    )
    return [(str(kind), read_instant(due_at)) for kind, due_at in rows]


def pending(db: Database) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """What the revenue projection keeps between batches: open invoices (currency, amount
    due) and refunds awaiting their answer (currency, amount)."""
    invoices = db.query("SELECT currency, amount_due FROM revenue_invoices")
    refunds = db.query("SELECT currency, amount FROM revenue_refunds")
    return (
        [(str(c), read_int(a)) for c, a in invoices],
        [(str(c), read_int(a)) for c, a in refunds],
    )


def documented(title: str) -> str:
    """The SQL example under ``**title**`` in docs/projections.md."""
    text = DOCS.read_text()
    found = re.search(re.escape(f"**{title}**") + r".*?```sql\n(.*?)```", text, re.DOTALL)
    assert found is not None, title
    return found.group(1)


def rebuilt_alike(shop: Shop) -> None:
    """A rebuild from position 0, in one big batch, writes what the catch-ups wrote."""
    projector = shop.projector
    projector.catch_up()
    tables = [
        table
        for name in ("subscriptions", "revenue")
        for table in projector.projections[name].tables
    ]

    def dump() -> dict[str, list[tuple[str, ...]]]:
        return {
            table: sorted(
                tuple(map(str, row)) for row in projector.database.query(f"SELECT * FROM {table}")
            )
            for table in tables
        }

    incremental = dump()
    projector.batch_size = 10_000
    projector.rebuild(["subscriptions", "revenue"])
    assert dump() == incremental


def test_a_coupon_lowers_mrr_until_it_ends(shop: Shop) -> None:
    """25% off for two periods, applied on Feb 3 to a Basic subscription paid since Jan
    31: it covers periods 1 and 2 (invoiced 750 on Feb 28 and Mar 31). MRR goes 1000 ->
    750 on Feb 3 (contraction 250) and back to 1000 at the renewal of Apr 30, when the
    discount ends (expansion 250). Collected: 1000 + 750 + 750 + 1000 = 3500."""
    shop.send(
        s.RegisterCoupon,
        code="QUARTER",
        percent_off=Decimal("25"),
        duration="repeating",
        duration_periods=2,
    )
    sub = shop.subscribe(shop.customer())
    shop.pay()
    shop.clock.advance_to(at(2, 3))
    shop.send(s.ApplyCoupon, subscription_id=sub, coupon="QUARTER")
    db = caught_up(shop)
    assert billing_row(db, sub) == {
        "status": "active",
        "mrr": 750,
        "invoices_in_dunning": 0,
        "coupon_code": "QUARTER",
        "percent_off": "25",
        "amount_off": None,
        "discount_first_period": 1,
        "discount_last_period": 2,
        "ended_at": None,
    }
    assert (eur(db, date(2025, 2, 3)).movements, eur(db, date(2025, 2, 3)).mrr) == (
        Movements(0, 0, 250, 0, 0),
        750,
    )

    for month, day in ((2, 28), (3, 31), (4, 30)):
        shop.run_until(at(month, day))
    db = caught_up(shop)
    row = billing_row(db, sub)
    assert (row["mrr"], row["coupon_code"], row["percent_off"]) == (1000, None, None)
    assert (row["discount_first_period"], row["discount_last_period"]) == (None, None)
    assert due(db, sub) == [("renewal", at(5, 31))]
    april_30 = eur(db, date(2025, 4, 30))
    assert (april_30.movements, april_30.mrr, april_30.collected) == (
        Movements(0, 250, 0, 0, 0),
        1000,
        1000,
    )
    whole = eur(db, date(2025, 1, 31), date(2025, 4, 30))
    assert (whole.mrr_at_start, whole.movements, whole.mrr) == (
        0,
        Movements(new=1000, expansion=250, contraction=250, churn=0, reactivation=0),
        1000,
    )
    assert payments(whole) == (3500, 0, 0, 0, 0)
    assert whole.as_json()["collected"] == 3500
    by_month = stats.months(db, "EUR", date(2025, 1, 31), date(2025, 4, 30))
    assert [(f"{m.start:%m}", m.movements, m.collected) for m in by_month] == [
        ("01", Movements(1000, 0, 0, 0, 0), 1000),
        ("02", Movements(0, 0, 250, 0, 0), 750),
        ("03", NO_MOVEMENT, 750),
        ("04", Movements(0, 250, 0, 0, 0), 1000),
    ]
    rows = db.query(documented("Payments by month"))
    assert [(c, m, *map(read_int, rest)) for c, m, *rest in rows] == [
        ("EUR", "2025-01", 1000, 0, 1000, 0, 0, 0),
        ("EUR", "2025-02", 750, 0, 750, 0, 0, 0),
        ("EUR", "2025-03", 750, 0, 750, 0, 0, 0),
        ("EUR", "2025-04", 1000, 0, 1000, 0, 0, 0),
    ]
    rebuilt_alike(shop)


def test_a_failed_renewal_is_past_due_and_still_billed(shop: Shop) -> None:
    """Paid on Jan 31; on Feb 10 the customer makes a card without funds the default; the
    renewal of Feb 28 is declined: one failed payment, the subscription past due, its MRR
    unchanged (past due is still billed), and it still renews on Mar 31."""
    customer = shop.customer()
    sub = shop.subscribe(customer)
    shop.pay()
    shop.clock.advance_to(at(2, 10))
    shop.card(customer, "pm_2", token="tok_chargeDeclinedInsufficientFunds", make_default=True)
    shop.run_until(at(2, 28))
    db = caught_up(shop)
    row = billing_row(db, sub)
    assert (row["status"], row["mrr"], row["invoices_in_dunning"]) == ("past_due", 1000, 1)
    assert due(db, sub) == [("renewal", at(3, 31))]
    february_28 = eur(db, date(2025, 2, 28))
    assert (february_28.movements, february_28.mrr, february_28.paying_customers) == (
        NO_MOVEMENT,
        1000,
        1,
    )
    assert payments(february_28) == (0, 0, 1, 0, 0)
    assert february_28.subscribers == (PlanSubscribers("basic", "past_due", 1, 1000),)
    assert payments(eur(db, date(2025, 1, 31), date(2025, 2, 28))) == (1000, 0, 1, 0, 0)
    # The declined renewal's invoice stays open: its payment may come later.
    assert pending(db) == ([("EUR", 1000)], [])
    rows = db.query(documented("Subscriptions in dunning"))
    assert [(UUID(str(i)), p, read_int(n), read_int(m)) for i, p, n, m in rows] == [
        (sub, "basic", 1, 1000)
    ]
    rebuilt_alike(shop)


def test_a_retry_on_its_day_recovers_the_payment(shop: Shop) -> None:
    """The card's first charge is declined (insufficient funds), the next succeeds: the
    signup's payment fails on Jan 31 and the retry scheduled a day later, on Feb 1, is a
    recovery of 1000. MRR was 1000 from the signup on, past due or not."""
    customer = shop.customer(with_card=False)
    shop.card(customer, token="tok_recoversAfter_1")
    sub = shop.subscribe(customer)
    shop.pay()
    db = caught_up(shop)
    assert billing_row(db, sub)["status"] == "past_due"
    january_31 = eur(db, date(2025, 1, 31))
    assert (january_31.movements, payments(january_31)) == (
        Movements(1000, 0, 0, 0, 0),
        (0, 0, 1, 0, 0),
    )

    shop.clock.advance_to(at(2, 1))
    assert retry_payment(shop.ledger, period_invoice_id(sub, 0), shop.clock.now())
    shop.pay()
    db = caught_up(shop)
    row = billing_row(db, sub)
    assert (row["status"], row["mrr"], row["invoices_in_dunning"]) == ("active", 1000, 0)
    february_1 = eur(db, date(2025, 2, 1))
    assert (february_1.movements, february_1.mrr) == (NO_MOVEMENT, 1000)
    assert payments(february_1) == (1000, 0, 0, 1, 1000)
    assert pending(db) == ([], [])
    rebuilt_alike(shop)


@pytest.mark.parametrize("on_exhausted", list(ExhaustedAction))
def test_dunning_that_runs_out_is_churn(shop: Shop, on_exhausted: ExhaustedAction) -> None:
    """An expired card is not retried: the signup's payment fails on Jan 31 and dunning
    waits 7 days for another card. None comes; on Feb 7 it gives up: the subscription is
    canceled (or left unpaid) and its 1000 of MRR is churn. An unpaid subscription keeps
    renewing, unbilled; a canceled one has nothing due."""
    shop.ledger.dunning_policy = DunningPolicy(on_exhausted=on_exhausted)
    customer = shop.customer(with_card=False)
    shop.card(customer, token="tok_chargeDeclinedExpiredCard")
    sub = shop.subscribe(customer)
    shop.pay()
    invoice_id = period_invoice_id(sub, 0)
    shop.clock.advance_to(at(2, 6))
    assert not end_dunning(shop.ledger, invoice_id, shop.clock.now())
    shop.clock.advance_to(at(2, 7))
    assert end_dunning(shop.ledger, invoice_id, shop.clock.now())
    db = caught_up(shop)

    february_7 = eur(db, date(2025, 2, 7))
    assert (february_7.movements, february_7.churned_customers) == (Movements(0, 0, 0, 1000, 0), 1)
    assert (february_7.mrr, february_7.paying_customers) == (0, 0)
    whole = eur(db, date(2025, 1, 31), date(2025, 2, 7))
    assert payments(whole) == (0, 0, 1, 0, 0)
    assert whole.movements == Movements(1000, 0, 0, 1000, 0)
    assert pending(db) == ([], [])  # the invoice is uncollectible: nothing more to collect
    row = billing_row(db, sub)
    assert (row["mrr"], row["invoices_in_dunning"]) == (0, 0)
    if on_exhausted is ExhaustedAction.CANCEL:
        assert (row["status"], row["ended_at"]) == ("canceled", at(2, 7))
        assert due(db, sub) == []
        assert february_7.subscribers == ()
    else:
        assert (row["status"], row["ended_at"]) == ("unpaid", None)
        assert due(db, sub) == [("renewal", at(2, 28))]
        assert february_7.subscribers == (PlanSubscribers("basic", "unpaid", 1, 0),)
        advance_subscription(shop.ledger, sub, at(2, 28))
        db = caught_up(shop)
        assert due(db, sub) == [("renewal", at(3, 31))]
        february_28 = eur(db, date(2025, 2, 28))
        assert (february_28.movements, payments(february_28)) == (NO_MOVEMENT, (0, 0, 0, 0, 0))
    rebuilt_alike(shop)


def test_refunds_count_when_the_gateway_makes_them(shop: Shop) -> None:
    """A 1000 payment of Jan 31, refunded 400 on Feb 5 and the remaining 600 on Feb 6.
    A refund counts once the gateway made it; MRR is not what was collected, and stays."""
    sub = shop.subscribe(shop.customer())
    shop.pay()
    invoice_id = period_invoice_id(sub, 0)
    shop.clock.advance_to(at(2, 5))
    shop.send(s.RefundInvoice, invoice_id=invoice_id, amount=400, reason="goodwill")
    db = caught_up(shop)
    assert payments(eur(db, date(2025, 2, 5))) == (0, 0, 0, 0, 0)
    assert pending(db) == ([], [("EUR", 400)])
    shop.pay()
    db = caught_up(shop)
    assert payments(eur(db, date(2025, 2, 5))) == (0, 400, 0, 0, 0)
    assert pending(db) == ([], [])

    shop.clock.advance_to(at(2, 6))
    shop.send(s.RefundInvoice, invoice_id=invoice_id)  # the rest: 600
    shop.pay()
    db = caught_up(shop)
    assert payments(eur(db, date(2025, 2, 6))) == (0, 600, 0, 0, 0)
    whole = eur(db, date(2025, 1, 31), date(2025, 2, 6))
    assert payments(whole) == (1000, 1000, 0, 0, 0)
    assert (whole.movements, whole.mrr) == (Movements(1000, 0, 0, 0, 0), 1000)
    rebuilt_alike(shop)
