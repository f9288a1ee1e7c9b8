"""The billing clock: does what has fallen due, so that nobody has to.

Each tick brings the projections up to date, then reads ``due_work`` (trial ends,
renewals, scheduled plan changes, cancels and resumes) and ``due_collections`` (dunning
retries, retries after a new payment method, dunning that ran out) and applies each item
through ``commands.lifecycle``: renewals in batches (a few queries and one transaction
per batch), the rarer collection items one by one. Every item is keyed by the
aggregates' own state (a period is invoiced under (subscription, period number), a
retry under (invoice, attempt)), so two clocks at once, or a clock run twice, do each
thing once.

``subledger serve`` ticks it against the system clock; the demo and the tests tick it
against a simulated one.
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.lifecycle import advance_many, end_dunning, retry_payment
from ledger import collector
from ledger.application import Ledger
from ledger.clock import Clock
from projections.runner import Projector
from projections.values import instant, read_uuid


@dataclass
class TickReport:
    subscriptions: int = 0  # subscriptions brought up to date (renewed, converted, ...)
    retries: int = 0  # payment retries requested
    gave_up: int = 0  # invoices whose dunning ran out

    @property
    def total(self) -> int:
        return self.subscriptions + self.retries + self.gave_up


class BillingClock:
    def __init__(
        self, ledger: Ledger, projector: Projector, clock: Clock, batch_size: int = 500
    ) -> None:
        self.ledger = ledger
        self.batch_size = batch_size
        self.projector = projector
        self.clock = clock

    def tick(self) -> TickReport:
        """Applies everything due by now; returns what it did."""
        now = self.clock.now()
        self.projector.catch_up()
        db = self.projector.database
        report = TickReport()
        due = db.query(
            "SELECT DISTINCT subscription_id FROM due_work WHERE due_at <= ?", (instant(now),)
        )
        ids = [read_uuid(subscription_id) for (subscription_id,) in due]
        for start in range(0, len(ids), self.batch_size):
            # A batch's aggregates and events all live until it is saved: the cyclic
            # collector would only scan them again and again (a tenth of a billing run).
            with collector.paused():
                advance_many(self.ledger, ids[start : start + self.batch_size], now)
        report.subscriptions = len(ids)
        collections = db.query(
            "SELECT invoice_id, kind FROM due_collections WHERE due_at <= ? ORDER BY due_at",
            (instant(now),),
        )
        for invoice_id, kind in collections:
            if kind == "payment_retry":
                report.retries += retry_payment(self.ledger, read_uuid(invoice_id), now)
            else:
                report.gave_up += end_dunning(self.ledger, read_uuid(invoice_id), now)
        return report
