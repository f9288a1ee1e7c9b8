"""Whose account an aggregate's events belong to: the customer's, for the customer, its
subscriptions and its invoices; no one's for the catalog, coupons and bookkeeping.

The recorders store it with each event (``account_id``, covered by the audit chain), so
that an account's whole history is one indexed read of stored history: what an auditor's
replay needs, without projections. ``Ledger`` sets ``recording`` around each save.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.customers import Customer
from ledger.invoices import Invoice
from ledger.subscriptions import Subscription

# The account of each aggregate being saved, by aggregate id, in this thread or task.
_accounts: ContextVar[Mapping[UUID, UUID] | None] = ContextVar("accounts", default=None)


def account_of(aggregate: object) -> UUID | None:
    if isinstance(aggregate, Customer):
        return aggregate.id
    if isinstance(aggregate, Subscription | Invoice):
        return aggregate.customer_id
    return None


@contextmanager
def recording(aggregates: Iterable[object]) -> Iterator[None]:
    """Within the block, ``account(originator_id)`` tells each saved event's account."""
    accounts = {
        a.id: owner
        for a in aggregates
        if isinstance(a, Aggregate) and (owner := account_of(a)) is not None
    }
    token = _accounts.set(accounts)
    try:
        yield
    finally:
        _accounts.reset(token)


def account(originator_id: UUID) -> UUID | None:
    """The account of an event being recorded (None: no customer's, or not saved through
    ``recording``)."""
    accounts = _accounts.get()
    return None if accounts is None else accounts.get(originator_id)
