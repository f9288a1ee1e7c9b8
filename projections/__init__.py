"""Read models: SQL tables rebuilt from the event sequence, for analysts and the billing
clock. ``runner.Projector`` keeps them current; each module holds one projection."""

from __future__ import annotations

from projections.collections import Collections
from projections.history import TransactionHistory
from projections.journal import Journal
from projections.projection import Projection
from projections.revenue import RevenueStatistics
from projections.subscriptions import CurrentSubscriptions


def all_projections() -> list[Projection]:
    return [
        CurrentSubscriptions(),
        TransactionHistory(),
        RevenueStatistics(),
        Collections(),
        Journal(),
    ]
