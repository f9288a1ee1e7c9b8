"""What happens on its own as time passes and as gateways answer: trials end, periods
renew and are invoiced, scheduled cancels take effect, payment outcomes are recorded,
dunning retries and gives up. The billing clock and the payment processor call these.

Each step is keyed by the aggregates' own state (a period renews once, an attempt's
outcome is recorded once), so running one twice, or after a crash, applies nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from commands.accounts import Account, account_of, current_subscription, save_retrying
from gateways.port import Declined, Pending, Succeeded
from ledger import billing
from ledger.application import Ledger
from ledger.customers import Customer
from ledger.dunning import DunningPolicy
from ledger.errors import InvoiceNotOpen, NoRetryDue, PaymentInFlight
from ledger.invoices import Invoice
from ledger.subscriptions import Subscription

A = TypeVar("A", bound=Aggregate)


def advance_subscription(ledger: Ledger, subscription_id: UUID, now: datetime) -> Subscription:
    """Applies, bills and stores every transition of the subscription due by ``now``."""

    def attempt() -> tuple[Subscription, tuple[Aggregate, ...]]:
        account = current_subscription(ledger, subscription_id, now)
        return account.sub, account.changed()

    return save_retrying(ledger, f"subscription {subscription_id}", attempt)


def _on_invoice(
    ledger: Ledger,
    invoice_id: UUID,
    now: datetime,
    act: Callable[[Invoice, Account, datetime], bool],
) -> bool:
    """Acts on an invoice together with its subscription, brought up to ``now`` first so
    that both histories stay in time order; saves both; returns what ``act`` returned."""

    def attempt() -> tuple[bool, tuple[Aggregate, ...]]:
        invoice = ledger.invoice(invoice_id)
        account = current_subscription(ledger, invoice.subscription_id, now)
        done = act(invoice, account, max(account.at, invoice.modified_on))
        # The invoice first: its answer comes before what it does to the subscription.
        return done, (invoice, *account.changed())

    return save_retrying(ledger, f"invoice {invoice_id}", attempt)


def record_answer(
    invoice: Invoice,
    account: Account,
    attempt: int,
    outcome: Succeeded | Declined,
    at: datetime,
    policy: DunningPolicy,
) -> bool:
    """Records a gateway's final answer to ``attempt`` on the invoice and its account."""
    if isinstance(outcome, Succeeded):
        return billing.record_payment_success(invoice, account.sub, attempt, outcome.reference, at)
    return billing.record_payment_failure(
        invoice, account.sub, attempt, outcome.code, outcome.message, at, policy
    )


Answer = tuple[UUID, int, Succeeded | Declined | Pending]  # invoice, attempt, gateway's answer


def record_charges(
    ledger: Ledger,
    answers: Sequence[Answer],
    now: datetime,
    invoices: Mapping[UUID, Invoice],
    customers: Mapping[UUID, Customer],
) -> list[bool]:
    """``record_charge`` for many answers in one transaction, with the invoices and
    customers the caller loaded; on a conflict with a concurrent writer (they changed
    since), each answer is recorded alone on fresh state.

    A first attempt that succeeds, and an attempt the gateway settles later, change the
    invoice alone (its subscription was never past due for it, or is not yet), so only
    the other answers load their subscriptions."""

    def invoice_alone(answer: Answer) -> bool:
        invoice_id, _, outcome = answer
        first_success = isinstance(outcome, Succeeded) and invoices[invoice_id].failures == 0
        return first_success or isinstance(outcome, Pending)

    involved = [invoices[a[0]].subscription_id for a in answers if not invoice_alone(a)]
    subs = loaded(ledger, Subscription, involved)
    missing = {sub.customer_id for sub in subs.values()} - set(customers)
    customers = {**customers, **loaded(ledger, Customer, missing)}
    accounts: dict[UUID, Account] = {}
    changed: dict[UUID, Aggregate] = {}
    recorded = []
    for answer in answers:
        invoice_id, attempt, outcome = answer
        invoice = invoices[invoice_id]
        if invoice_alone(answer):
            at = max(now, invoice.modified_on)
            if isinstance(outcome, Pending):
                recorded.append(invoice.record_processing(attempt, outcome.reference, at))
            else:
                assert isinstance(outcome, Succeeded)
                recorded.append(invoice.record_success(attempt, outcome.reference, at))
            changed[invoice.id] = invoice
            continue
        assert not isinstance(outcome, Pending)  # always the invoice alone
        sub = subs[invoice.subscription_id]
        account = accounts.get(sub.id) or account_of(ledger, sub, customers[sub.customer_id], now)
        accounts[sub.id] = account
        at = max(account.at, invoice.modified_on)
        recorded.append(
            record_answer(invoice, account, attempt, outcome, at, ledger.dunning_policy)
        )
        # The invoice first: its answer comes before what it does to the subscription.
        for aggregate in (invoice, *account.changed()):
            changed[aggregate.id] = aggregate
    try:
        ledger.save(*changed.values())
    except IntegrityError:
        return [record_charge(ledger, *answer, now) for answer in answers]
    return recorded


def record_charge(
    ledger: Ledger,
    invoice_id: UUID,
    attempt: int,
    outcome: Succeeded | Declined | Pending,
    now: datetime,
) -> bool:
    """Records a gateway's answer to a payment attempt (or that it settles it later);
    False if it was recorded already."""

    def act(invoice: Invoice, account: Account, at: datetime) -> bool:
        if isinstance(outcome, Pending):
            return invoice.record_processing(attempt, outcome.reference, at)
        return record_answer(invoice, account, attempt, outcome, at, ledger.dunning_policy)

    return _on_invoice(ledger, invoice_id, now, act)


def loaded(ledger: Ledger, kind: type[A], ids: Iterable[UUID]) -> dict[UUID, A]:
    """The aggregates of ``kind`` among ``ids``, loaded together."""
    return {i: a for i, a in ledger.load_many(ids).items() if isinstance(a, kind)}


def record_refund(
    ledger: Ledger, invoice_id: UUID, number: int, outcome: Succeeded | Declined, now: datetime
) -> bool:
    """Records a gateway's answer to a refund; False if it was recorded already."""

    def act(invoice: Invoice, account: Account, at: datetime) -> bool:
        if isinstance(outcome, Succeeded):
            return invoice.record_refund(number, outcome.reference, at)
        return invoice.record_refund_failure(number, outcome.code, outcome.message, at)

    return _on_invoice(ledger, invoice_id, now, act)


def retry_payment(ledger: Ledger, invoice_id: UUID, now: datetime) -> bool:
    """Requests a dunning retry if one is due (its day, or a new default payment
    method); False when none is (already retried, paid, or not due). A retry that finds
    nothing to try with once dunning has run out (the new card expired meanwhile, say)
    gives up instead, so that the invoice never waits for ever."""
    policy = ledger.dunning_policy

    def act(invoice: Invoice, account: Account, at: datetime) -> bool:
        try:
            billing.collect(invoice, account.sub, account.customer, at, policy, retry=True)
        except NoRetryDue:
            if not invoice.dunning_ran_out(at):
                return False
            billing.give_up(invoice, account.sub, at, policy)
        except (InvoiceNotOpen, PaymentInFlight):
            return False
        return True

    return _on_invoice(ledger, invoice_id, now, act)


def end_dunning(ledger: Ledger, invoice_id: UUID, now: datetime) -> bool:
    """Gives up on an invoice whose dunning ran out; False if it has not (or was paid)."""

    def act(invoice: Invoice, account: Account, at: datetime) -> bool:
        if not invoice.dunning_ran_out(at):
            return False
        billing.give_up(invoice, account.sub, at, ledger.dunning_policy)
        return True

    return _on_invoice(ledger, invoice_id, now, act)


def advance_many(ledger: Ledger, subscription_ids: Sequence[UUID], now: datetime) -> None:
    """``advance_subscription`` for many subscriptions in one transaction: loaded in two
    queries, saved in one. A concurrent writer on any of them makes the whole batch
    conflict; then each is done alone (and done once: see ``advance_subscription``)."""
    subs = loaded(ledger, Subscription, subscription_ids)
    customers = loaded(ledger, Customer, (sub.customer_id for sub in subs.values()))
    changed: dict[UUID, Aggregate] = {}
    for sub in subs.values():
        for aggregate in account_of(ledger, sub, customers[sub.customer_id], now).changed():
            changed[aggregate.id] = aggregate
    try:
        ledger.save(*changed.values())
    except IntegrityError:
        for subscription_id in subscription_ids:
            advance_subscription(ledger, subscription_id, now)
