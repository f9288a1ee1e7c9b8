"""An auditor replays Ann's account as it stood at several instants of her story: a trial,
its conversion, a renewal, an upgrade, a partial refund, a cancellation at period end; and
sees none of Bob's, who shops at the same time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate
from typer.testing import CliRunner

from commands import schemas as s
from commands.accounts import subscription_view
from commands.audit import chain_recorder
from commands.audit_replay import Replay, replay, stored_timestamp
from commands.cli import app
from tests.integration.conftest import Shop


@dataclass(frozen=True)
class Story:
    ann: UUID
    bob: UUID
    subscription: UUID


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


def tell(shop: Shop) -> Story:
    """Ann signs up on 31 Jan 09:00 to Basic (10 EUR a month) with a 14-day trial; Bob to
    Pro, paid at once. Ann's trial converts on 14 Feb 09:00 (paid at 10:00), renews on
    14 Mar, upgrades to Pro on 28 Mar (17 of 31 days left: 1097 - 548 = 549), gets 3 EUR
    of her first invoice back on 29 Mar, and on 30 Mar cancels at the period end, 14 Apr."""
    ann = shop.customer()
    sub = shop.subscribe(ann, "basic", trial_days=14)
    bob = shop.send(s.RegisterCustomer, email="bob@example.com", name="Bob", currency="EUR")
    bob_id = UUID(bob["customer_id"])
    shop.card(bob_id)
    shop.subscribe(bob_id, "pro", trial_days=0)
    shop.pay()
    shop.run_until(at(2, 14, 10))
    shop.run_until(at(3, 14, 10))
    shop.clock.advance_to(at(3, 28, 9))
    shop.send(s.ChangePlan, subscription_id=sub, plan_code="pro")
    shop.pay()
    shop.clock.advance_to(at(3, 29, 9))
    first = replay(shop.ledger, ann).invoices[0]
    shop.send(s.RefundInvoice, invoice_id=first.id, amount=300, reason="goodwill")
    shop.pay()
    shop.clock.advance_to(at(3, 30, 9))
    shop.send(s.CancelSubscription, subscription_id=sub, when="period_end")
    shop.run_until(at(4, 14, 10))
    # Bob goes on after Ann has left.
    shop.run_until(at(4, 20))
    return Story(ann, bob_id, sub)


def states(account: Replay) -> dict[str, Any]:
    """What the test compares: the customer, each subscription (status, plan, period end,
    scheduled cancel) and each invoice (reason, status, total, paid, refunded)."""
    return {
        "customer": None if account.customer is None else account.customer.name,
        "subscriptions": [
            (sub.status.value, sub.price.plan_code, sub.period.end, sub.cancel_at)
            for sub in account.subscriptions
        ],
        "invoices": [
            (
                i.reason,
                i.status.value,
                i.total.amount,
                i.amount_paid.amount,
                i.refunded.amount,
            )
            for i in account.invoices
        ],
    }


TRIAL_END, RENEWAL, END = at(2, 14, 9), at(3, 14, 9), at(4, 14, 9)
CONVERSION = ("trial_conversion", "paid", 1000, 1000, 0)
RENEWED = ("renewal", "paid", 1000, 1000, 0)
UPGRADE = ("plan_change", "paid", 549, 549, 0)

# Ann's account as it stood at each instant, worked out by hand from the story.
AS_OF: dict[datetime, dict[str, Any]] = {
    at(1, 30): {"customer": None, "subscriptions": [], "invoices": []},
    at(2, 1): {
        "customer": "Ann",
        "subscriptions": [("trialing", "basic", TRIAL_END, None)],
        "invoices": [],
    },
    # The trial ended and its invoice is issued, but not paid until 10:00.
    at(2, 14, 9, 30): {
        "customer": "Ann",
        "subscriptions": [("active", "basic", RENEWAL, None)],
        "invoices": [("trial_conversion", "open", 1000, 0, 0)],
    },
    at(2, 20): {
        "customer": "Ann",
        "subscriptions": [("active", "basic", RENEWAL, None)],
        "invoices": [CONVERSION],
    },
    at(3, 20): {
        "customer": "Ann",
        "subscriptions": [("active", "basic", END, None)],
        "invoices": [CONVERSION, RENEWED],
    },
    at(3, 29, 12): {
        "customer": "Ann",
        "subscriptions": [("active", "pro", END, None)],
        "invoices": [("trial_conversion", "paid", 1000, 1000, 300), RENEWED, UPGRADE],
    },
    at(3, 31): {
        "customer": "Ann",
        "subscriptions": [("active", "pro", END, END)],
        "invoices": [("trial_conversion", "paid", 1000, 1000, 300), RENEWED, UPGRADE],
    },
    at(4, 20): {
        "customer": "Ann",
        "subscriptions": [("canceled", "pro", END, None)],
        "invoices": [("trial_conversion", "paid", 1000, 1000, 300), RENEWED, UPGRADE],
    },
}


def test_the_account_as_of_each_instant_is_what_the_ledger_knew_then(shop: Shop) -> None:
    story = tell(shop)
    for instant, expected in AS_OF.items():
        assert states(replay(shop.ledger, story.ann, instant)) == expected, instant


def test_the_time_read_from_a_stored_event_without_decoding_it_is_its_timestamp(
    shop: Shop,
) -> None:
    story = tell(shop)
    rows = chain_recorder(shop.ledger).select_account(story.ann)
    assert rows
    for _, row in rows:
        event = cast(Aggregate.Event, shop.ledger.mapper.to_domain_event(row))
        assert stored_timestamp(row.state) == event.timestamp


def test_the_events_up_to_an_instant_are_the_accounts_in_sequence_order(shop: Shop) -> None:
    story = tell(shop)
    account = replay(shop.ledger, story.ann, at(2, 14, 9, 30))
    assert [e.type for e in account.events] == [
        "Customer.Registered",
        "Customer.PaymentMethodAdded",
        "Subscription.Started",
        "Subscription.TrialEnded",
        "Invoice.Issued",
        "Invoice.PaymentRequested",
    ]
    positions = [e.position for e in account.events]
    assert positions == sorted(positions)
    assert all(e.timestamp <= at(2, 14, 9, 30) for e in account.events)
    assert account.stored == len(replay(shop.ledger, story.ann).events) == 19


def test_before_the_customer_existed_there_is_nothing_yet(shop: Shop) -> None:
    story = tell(shop)
    account = replay(shop.ledger, story.ann, at(1, 31, 8, 59))
    assert (account.events, account.customer, account.subscriptions) == ([], None, [])
    assert account.stored == 19


def test_another_customers_events_never_appear(shop: Shop) -> None:
    story = tell(shop)
    account = replay(shop.ledger, story.ann)
    mine = {story.ann, story.subscription, *(i.id for i in account.invoices)}
    assert {e.aggregate_id for e in account.events} == mine
    assert story.bob not in {e.aggregate_id for e in account.events}
    assert [sub.customer_id for sub in replay(shop.ledger, story.bob).subscriptions] == [story.bob]


def test_without_an_instant_the_replay_is_the_current_state(shop: Shop) -> None:
    story = tell(shop)
    account = replay(shop.ledger, story.ann)
    [sub] = account.subscriptions
    assert subscription_view(sub) == subscription_view(shop.ledger.subscription(story.subscription))
    view = account.as_json()
    # No gateway token, in the customer's state or in the events.
    assert "tok_pm_1" not in json.dumps(view)
    assert view["customer"]["payment_methods"][0]["last4"] == "4242"
    assert view["events"][0]["fields"]["name"] == "Ann"


runner = CliRunner()


def test_the_cli_replays_an_account_as_of_an_instant(shop: Shop, database_url: str) -> None:
    story = tell(shop)
    args = ["audit", "replay", str(story.ann), "--database-url", database_url]
    result = runner.invoke(app, [*args, "--as-of", "2025-02-20T00:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["as_of"] == "2025-02-20T00:00:00+00:00"
    assert [s["status"] for s in answer["subscriptions"]] == ["active"]
    assert [i["status"] for i in answer["invoices"]] == ["paid"]
    table = runner.invoke(app, [*args, "--as-of", "2025-03-31"])
    assert table.exit_code == 0, table.output
    assert "Subscription.PlanChanged" in table.stdout
    assert "Subscription.Canceled" not in table.stdout  # on 14 Apr: later


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--as-of", "yesterday"], "invalid_instant"),
        ([], "not_found"),
    ],
)
def test_the_cli_refuses_a_bad_instant_and_an_unknown_customer(
    sqlite_url: str, arguments: list[str], error: str
) -> None:
    unknown = "00000000-0000-0000-0000-000000000001"
    result = runner.invoke(
        app, ["audit", "replay", unknown, *arguments, "--json", "--database-url", sqlite_url]
    )
    assert result.exit_code != 0
    assert json.loads(result.stdout)["error"] == error


def test_once_erased_the_customer_reads_erased_at_every_instant(shop: Shop) -> None:
    story = tell(shop)
    shop.send(s.EraseCustomer, customer_id=story.ann)
    before = replay(shop.ledger, story.ann, at(2, 1)).as_json()
    assert (before["customer"]["name"], before["customer"]["email"]) == ("erased", "erased")
    assert before["events"][0]["fields"]["name"] == "erased"
    # The money is all there.
    assert (
        states(replay(shop.ledger, story.ann, at(4, 20)))["invoices"]
        == AS_OF[at(4, 20)]["invoices"]
    )
    assert replay(shop.ledger, story.ann).events[-1].type == "Customer.Erased"
