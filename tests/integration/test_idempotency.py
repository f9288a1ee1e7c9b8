"""A command id is applied once: sent twice, from two threads at once, or after a restart."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from commands import schemas as s
from commands.bootstrap import bootstrap
from commands.dispatch import handle
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.errors import CommandIdReused
from tests.integration.conftest import Shop


def test_the_same_command_twice_yields_one_set_of_events(shop: Shop, ledger: Ledger) -> None:
    customer_id = shop.customer()
    command = s.StartSubscription(command_id="start-1", customer_id=customer_id, plan_code="pro")
    first = handle(command, ledger, shop.clock)
    events = ledger.event_counts_by_type()
    shop.clock.advance(timedelta(hours=1))
    assert handle(command, ledger, shop.clock) == first
    assert ledger.event_counts_by_type() == events


def test_a_redelivered_command_that_would_now_be_refused_returns_its_first_answer(
    shop: Shop, ledger: Ledger
) -> None:
    sub = shop.send(s.StartSubscription, customer_id=shop.customer(), plan_code="basic")
    cancel = s.CancelSubscription(
        command_id="cancel-1", subscription_id=sub["subscription_id"], when="now"
    )
    first = handle(cancel, ledger, shop.clock)
    assert handle(cancel, ledger, shop.clock) == first


def test_a_reused_command_id_with_other_content_is_refused(shop: Shop, ledger: Ledger) -> None:
    shop.send(s.RegisterPlan, command_id="plan-x", code="gold", name="Gold")
    with pytest.raises(CommandIdReused, match="plan-x"):
        shop.send(s.RegisterPlan, command_id="plan-x", code="silver", name="Silver")


@pytest.mark.parametrize(
    ("make", "recorded"),
    [
        pytest.param(
            lambda c: s.StartSubscription(command_id="race", customer_id=c, plan_code="basic"),
            ["Subscription.Started", "Invoice.Issued", "Invoice.PaymentRequested"],
            id="create",
        ),
        pytest.param(
            lambda c: s.AddPaymentMethod(
                command_id="race",
                customer_id=c,
                payment_method_id="pm_r",
                token="tok_r",
                last4="1111",
                exp_month=1,
                exp_year=2031,
            ),
            ["Customer.PaymentMethodAdded"],
            id="change",
        ),
    ],
)
def test_the_same_command_from_two_threads_at_once_applies_once(
    shop: Shop, ledger: Ledger, make: Any, recorded: list[str]
) -> None:
    command = make(shop.customer())
    before = ledger.event_counts_by_type()
    start = threading.Barrier(2)

    def deliver() -> dict[str, Any]:
        start.wait()
        return handle(command, ledger, shop.clock)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: deliver(), range(2)))
    assert answers[0] == answers[1]
    # The events of one delivery and one command record, whichever thread won.
    assert ledger.event_counts_by_type() - before == Counter([*recorded, "CommandRecord.Handled"])


def test_concurrent_different_commands_on_one_subscription_all_apply(
    shop: Shop, ledger: Ledger
) -> None:
    sub_id = UUID(
        shop.send(s.StartSubscription, customer_id=shop.customer(), plan_code="basic")[
            "subscription_id"
        ]
    )
    commands = [
        s.PauseSubscription(command_id="pause", subscription_id=sub_id),
        s.CancelSubscription(command_id="cancel", subscription_id=sub_id, when="period_end"),
    ]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda c: handle(c, ledger, shop.clock), commands))
    sub = ledger.subscription(sub_id)
    assert sub.status.value == "paused"
    assert sub.cancel_at is not None


def test_a_command_id_is_remembered_across_restarts(
    database_url: str, clock: SimulatedClock
) -> None:
    command = s.RegisterCustomer(command_id="c-1", email="a@example.com", name="A", currency="EUR")
    with bootstrap(database_url) as ledger:
        first = handle(command, ledger, clock)
    with bootstrap(database_url) as ledger:
        assert handle(command, ledger, clock) == first
        assert ledger.event_counts_by_type()["Customer.Registered"] == 1


def test_two_ledger_processes_racing_with_one_command_apply_it_once(
    database_url: str, clock: SimulatedClock
) -> None:
    """Two workers, each with its own ledger (own connections), get the same message."""
    command = s.RegisterCustomer(command_id="dup", email="r@example.com", name="R", currency="EUR")
    workers = [bootstrap(database_url), bootstrap(database_url)]
    start = threading.Barrier(2)

    def deliver(ledger: Ledger) -> dict[str, Any]:
        start.wait()
        return handle(command, ledger, clock)

    try:
        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(deliver, workers)
        assert first == second
        assert workers[0].event_counts_by_type() == {
            "Customer.Registered": 1,
            "CommandRecord.Handled": 1,
        }
    finally:
        for ledger in workers:
            ledger.close()
