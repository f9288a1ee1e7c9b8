"""A batch of commands in one transaction answers each exactly as one by one would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from commands import schemas as s
from commands.accounts import derived_id
from commands.dispatch import handle, handle_batch
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from ledger.errors import CommandIdReused, CurrencyMismatch, DomainError, NotFound
from ledger.invoices import period_invoice_id

SUB = derived_id("subscription", "signup")


def catalog_and_customer() -> list[s.Command]:
    customer = derived_id("customer", "ann")
    return [
        s.RegisterPlan(command_id="plan", code="basic", name="Basic"),
        s.AddPrice(command_id="price", plan_code="basic", currency="EUR", amount=1000),
        s.RegisterCustomer(command_id="ann", email="a@example.com", name="Ann", currency="EUR"),
        s.AddPaymentMethod(
            command_id="card",
            customer_id=customer,
            payment_method_id="pm_1",
            token="tok_visa",
            last4="4242",
            exp_month=12,
            exp_year=2030,
        ),
        s.StartSubscription(command_id="signup", customer_id=customer, plan_code="basic"),
    ]


def test_later_commands_see_earlier_ones_and_a_refusal_spoils_nothing(
    ledger: Ledger, clock: SimulatedClock
) -> None:
    customer = derived_id("customer", "ann")
    batch = [
        *catalog_and_customer(),
        s.ChangePlan(command_id="to-nope", subscription_id=SUB, plan_code="nope"),
        s.StartSubscription(
            command_id="usd", customer_id=customer, plan_code="basic", currency="USD"
        ),
        s.PauseSubscription(command_id="pause", subscription_id=SUB),
        s.RegisterCustomer(command_id="ann", email="a@example.com", name="Ann", currency="EUR"),
        s.RegisterCustomer(command_id="ann", email="b@example.com", name="Ann", currency="EUR"),
    ]
    answers = handle_batch(batch, ledger, clock)
    assert answers[2] == {"customer_id": str(customer)}
    assert isinstance(answers[5], NotFound)
    assert isinstance(answers[6], CurrencyMismatch)
    assert isinstance(answers[7], dict)
    assert answers[7]["status"] == "paused"
    assert answers[8] == answers[2]  # the same command again, in the same batch
    assert isinstance(answers[9], CommandIdReused)
    counts = ledger.event_counts_by_type()
    assert counts["Subscription.Started"] == 1
    assert counts["Subscription.Paused"] == 1
    assert counts["CommandRecord.Handled"] == 6
    # The final refusal is recorded; "not found" is not: it may succeed later.
    assert counts["CommandRecord.Rejected"] == 1
    # Answered again later, one by one, each gets the same answer.
    assert handle(batch[7], ledger, clock) == answers[7]


def test_a_command_refused_half_way_leaves_no_trace(ledger: Ledger, clock: SimulatedClock) -> None:
    """Brought up to date (renewed and invoiced), then refused: none of it is saved, and
    the next command of the batch renews the subscription itself, once."""
    handle_batch(catalog_and_customer(), ledger, clock)
    clock.advance(timedelta(days=40))
    refused = s.ChangePlan(command_id="to-nope", subscription_id=SUB, plan_code="nope")
    [answer] = handle_batch([refused], ledger, clock)
    assert isinstance(answer, NotFound)
    assert ledger.event_counts_by_type()["Subscription.Renewed"] == 0
    pause = s.PauseSubscription(command_id="pause", subscription_id=SUB)
    answers = handle_batch([refused, pause], ledger, clock)
    assert isinstance(answers[0], NotFound)
    assert isinstance(answers[1], dict)
    assert answers[1]["period_index"] == 1
    assert ledger.event_counts_by_type()["Subscription.Renewed"] == 1


class JumpingClock(SimulatedClock):
    """Jumps ``by`` after ``calls`` readings: the later commands of a batch act later."""

    def __init__(self, start: datetime, calls: int, by: timedelta) -> None:
        super().__init__(start)
        self.calls, self.by = calls, by

    def now(self) -> datetime:
        self.calls -= 1
        if self.calls == -1:
            self.advance(self.by)
        return super().now()


def test_a_refused_command_never_changes_what_earlier_ones_left(ledger: Ledger) -> None:
    """The subscription, started earlier in the batch, is renewed by a command that is
    then refused: the next command must renew it (and invoice the renewal) itself."""
    setup = catalog_and_customer()
    clock = JumpingClock(datetime(2025, 1, 31, 9, tzinfo=UTC), len(setup), timedelta(days=40))
    refused = s.ChangePlan(command_id="to-nope", subscription_id=SUB, plan_code="nope")
    pause = s.PauseSubscription(command_id="pause", subscription_id=SUB)
    answers = handle_batch([*setup, refused, pause], ledger, clock)
    assert isinstance(answers[-2], NotFound)
    assert isinstance(answers[-1], dict)
    assert answers[-1]["period_index"] == 1
    assert [i["reason"] for i in answers[-1]["invoices"]] == ["renewal"]
    assert ledger.invoice(period_invoice_id(SUB, 1)).total.amount == 1000


def test_an_error_leaves_that_command_unanswered_and_the_others_saved(
    ledger: Ledger, clock: SimulatedClock, monkeypatch: Any
) -> None:
    from commands import handlers

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setitem(handlers.HANDLERS, s.RevokeCancel, broken)
    batch = [*catalog_and_customer(), s.RevokeCancel(command_id="bug", subscription_id=SUB)]
    answers = handle_batch(batch, ledger, clock)
    assert isinstance(answers[-1], RuntimeError)
    assert all(isinstance(a, dict) for a in answers[:-1])
    assert ledger.command_record("bug") is None
    assert ledger.command_record("signup") is not None


class MeddlingClock(SimulatedClock):
    """A clock through which another writer acts while the batch is being decided."""

    def __init__(self, start: datetime, meddle: Callable[[], object]) -> None:
        super().__init__(start)
        self.meddle: Callable[[], object] | None = meddle

    def now(self) -> datetime:
        if self.meddle is not None:
            meddle, self.meddle = self.meddle, None
            meddle()
        return super().now()


def test_a_concurrent_write_sends_the_batch_one_by_one(
    ledger: Ledger, clock: SimulatedClock
) -> None:
    handle_batch(catalog_and_customer(), ledger, clock)
    pause = s.PauseSubscription(command_id="pause", subscription_id=SUB)
    cancel = s.CancelSubscription(command_id="cancel", subscription_id=SUB, when="period_end")
    meddler = MeddlingClock(clock.now(), lambda: handle(cancel, ledger, clock))
    [answer] = handle_batch([pause], ledger, meddler)
    assert isinstance(answer, dict)
    assert answer["status"] == "paused"
    assert answer["cancel_at"] is not None  # decided again, after the other writer's cancel
    sub = ledger.subscription(SUB)
    assert sub.status.value == "paused"
    assert sub.cancel_at is not None


def test_what_a_command_only_read_is_shared_until_one_changes_it(
    ledger: Ledger, clock: SimulatedClock
) -> None:
    """A refused revoke reads the subscription and leaves it as stored (shared with the
    next commands); a quote then changes it in memory: the pause after must not see that."""
    handle_batch(
        [
            *catalog_and_customer(),
            s.RegisterPlan(command_id="pro", code="pro", name="Pro"),
            s.AddPrice(command_id="pro-eur", plan_code="pro", currency="EUR", amount=2000),
        ],
        ledger,
        clock,
    )
    answers = handle_batch(
        [
            s.RevokeCancel(command_id="revoke", subscription_id=SUB),
            s.PreviewQuote(command_id="quote", subscription_id=SUB, plan_code="pro"),
            s.PauseSubscription(command_id="pause", subscription_id=SUB),
        ],
        ledger,
        clock,
    )
    assert isinstance(answers[0], DomainError)
    assert isinstance(answers[1], dict)
    assert answers[1]["subscription"]["plan_code"] == "pro"
    assert isinstance(answers[2], dict)
    assert (answers[2]["plan_code"], answers[2]["status"]) == ("basic", "paused")
    assert ledger.subscription(SUB).price.plan_code == "basic"
    assert ledger.event_counts_by_type()["Subscription.PlanChanged"] == 0
