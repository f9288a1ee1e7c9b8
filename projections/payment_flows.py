"""The revenue projection's payment flows: money collected and refunded, payments failed
and recovered by dunning, per currency, from the invoices' events.

A ``PaymentSucceeded`` names only its attempt, and a ``RefundSucceeded`` only its number:
what they collected or returned was set when the invoice was issued (every attempt asks
for its amount due, ``Invoice.request_payment``) and when the refund was requested. So
the projection keeps, in tables of its own, the open invoices with an amount due
(``revenue_invoices``) and the refunds awaiting their answer (``revenue_refunds``); a row
goes once its invoice is settled (paid, uncollectible or void) or its refund answered,
so both stay as small as the work in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from ledger.invoices import Invoice
from projections.database import Transaction, chunked, placeholders, select_in
from projections.projection import Positioned
from projections.values import read_int, read_uuid

FLOWS = ("collected", "refunded", "failed_payments", "recovered_payments", "recovered")
TABLES = ("revenue_invoices", "revenue_refunds")
SCHEMA = (
    """CREATE TABLE revenue_invoices (
            invoice_id UUID PRIMARY KEY,
            currency TEXT NOT NULL,
            amount_due BIGINT NOT NULL
        )""",
    """CREATE TABLE revenue_refunds (
            invoice_id UUID NOT NULL,
            number INTEGER NOT NULL,
            currency TEXT NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (invoice_id, number)
        )""",
)
EVENTS: frozenset[type] = frozenset(
    {
        Invoice.Issued,
        Invoice.PaymentSucceeded,
        Invoice.PaymentFailed,
        Invoice.MarkedUncollectible,
        Invoice.Voided,
        Invoice.RefundRequested,
        Invoice.RefundSucceeded,
        Invoice.RefundFailed,
    }
)
_COLLECTION = (
    Invoice.PaymentSucceeded,
    Invoice.PaymentFailed,
    Invoice.MarkedUncollectible,
    Invoice.Voided,
)
_ANSWERED = (Invoice.RefundSucceeded, Invoice.RefundFailed)

Amount = tuple[str, int]  # (currency, minor units), as the tables keep it
RefundKey = tuple[UUID, int]  # (invoice, refund number)


class PaymentFlows:
    """The open invoices and pending refunds that one batch of events touches."""

    def __init__(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        issued = {e.originator_id for _, e in events if isinstance(e, Invoice.Issued)}
        collecting = {e.originator_id for _, e in events if isinstance(e, _COLLECTION)} - issued
        answered = {e.originator_id for _, e in events if isinstance(e, _ANSWERED)}
        self._stored_invoices: dict[UUID, Amount] = {
            read_uuid(invoice_id): (currency, read_int(amount))
            for invoice_id, currency, amount in select_in(
                tx,
                "SELECT invoice_id, currency, amount_due FROM revenue_invoices",
                "invoice_id",
                [str(key) for key in collecting],
            )
        }
        self._stored_refunds: dict[RefundKey, Amount] = {
            (read_uuid(invoice_id), read_int(number)): (currency, read_int(amount))
            for invoice_id, number, currency, amount in select_in(
                tx,
                "SELECT invoice_id, number, currency, amount FROM revenue_refunds",
                "invoice_id",
                [str(key) for key in answered],
            )
        }
        self.invoices = dict(self._stored_invoices)
        self.refunds = dict(self._stored_refunds)

    def apply(self, event: Any) -> tuple[str, list[tuple[str, int]]]:
        """The currency of one of ``EVENTS``, and the flows it books."""
        invoice_id = event.originator_id
        if isinstance(event, Invoice.Issued):
            if event.amount_due:
                self.invoices[invoice_id] = (event.amount_due.currency, event.amount_due.amount)
            return event.amount_due.currency, []
        if isinstance(event, Invoice.RefundRequested):
            refund = event.request.amount
            self.refunds[invoice_id, event.request.number] = (refund.currency, refund.amount)
            return refund.currency, []
        if isinstance(event, _ANSWERED):
            currency, amount = self.refunds.pop((invoice_id, event.number))
            refunded = isinstance(event, Invoice.RefundSucceeded)
            return currency, [("refunded", amount)] if refunded else []
        if isinstance(event, Invoice.PaymentFailed):
            currency, _ = self.invoices[invoice_id]
            return currency, [("failed_payments", 1)]
        currency, amount = self.invoices.pop(invoice_id)
        if not isinstance(event, Invoice.PaymentSucceeded):
            return currency, []  # uncollectible or void: nothing more to collect
        if event.attempt == 1:
            return currency, [("collected", amount)]
        # A later attempt that succeeds is a dunning recovery.
        return currency, [("collected", amount), ("recovered_payments", 1), ("recovered", amount)]

    def write(self, tx: Transaction) -> None:
        """Stores the invoices and refunds still open, forgets the settled and answered."""
        settled = [str(key) for key in self._stored_invoices.keys() - self.invoices.keys()]
        for chunk in chunked(settled):
            tx.execute(
                f"DELETE FROM revenue_invoices WHERE invoice_id IN ({placeholders(len(chunk))})",
                chunk,
            )
        tx.insert_rows(
            "INSERT INTO revenue_invoices (invoice_id, currency, amount_due)",
            [
                (str(key), *self.invoices[key])
                for key in self.invoices.keys() - self._stored_invoices.keys()
            ],
        )
        for invoice_id, number in self._stored_refunds.keys() - self.refunds.keys():
            tx.execute(
                "DELETE FROM revenue_refunds WHERE invoice_id = ? AND number = ?",
                (str(invoice_id), number),
            )
        tx.insert_rows(
            "INSERT INTO revenue_refunds (invoice_id, number, currency, amount)",
            [
                (str(invoice_id), number, *self.refunds[invoice_id, number])
                for invoice_id, number in self.refunds.keys() - self._stored_refunds.keys()
            ],
        )
