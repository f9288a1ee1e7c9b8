"""``invoices``, ``payment_attempts``, ``credit_notes``: every invoice and its collection
(each payment attempt and its answer, each refund as a credit note); ``due_collections``:
what the billing clock must do next for an invoice in dunning, retry it or give up.

Invoice events after ``Issued`` name only the invoice, and a customer's new default
payment method makes a retry of their failing invoices due at once: a batch loads the
invoices its events touch and the open ones of customers whose default changed, applies
the events in memory, then writes each touched row once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

from ledger.customers import Customer
from ledger.invoices import Invoice, InvoiceStatus, invoice_number
from projections.database import (
    Database,
    Params,
    Transaction,
    chunked,
    placeholders,
    select_in,
)
from projections.projection import Positioned, Projection
from projections.values import instant, read_instant, read_int, read_uuid

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

INVOICE_EVENTS: frozenset[type] = frozenset(
    {
        Invoice.Issued,
        Invoice.PaymentRequested,
        Invoice.PaymentProcessing,
        Invoice.PaymentSucceeded,
        Invoice.PaymentFailed,
        Invoice.MarkedUncollectible,
        Invoice.Voided,
        Invoice.RefundRequested,
        Invoice.RefundSucceeded,
        Invoice.RefundFailed,
    }
)
# The events that may give a customer a new default payment method.
DEFAULT_METHOD_EVENTS: frozenset[type] = frozenset(
    {Customer.PaymentMethodAdded, Customer.DefaultPaymentMethodSwitched}
)
_OPEN = InvoiceStatus.OPEN.value


def ids_to_load(
    events: Sequence[Positioned], created: type[Any], kinds: Iterable[type]
) -> list[str]:
    """The ids (as text) of the aggregates that events of ``kinds`` touch but that the
    batch did not create with a ``created`` event: their state so far is in the tables."""
    wanted = frozenset(kinds)
    made = {e.originator_id for _, e in events if isinstance(e, created)}
    touched = {e.originator_id for _, e in events if type(e) in wanted}
    return [str(key) for key in touched - made]


@dataclass
class InvoiceRow:
    """An invoice as its events leave it (amounts in minor units of ``currency``)."""

    invoice_id: UUID
    number: str
    customer_id: UUID
    subscription_id: UUID
    period_index: int | None
    reason: str
    currency: str
    subtotal: int
    discount: int
    tax: int
    total: int
    credit_applied: int
    amount_due: int
    status: str
    issued_at: datetime
    paid_at: datetime | None
    attempts: int
    failures: int
    last_decline_code: str | None
    last_failed_method_id: str | None
    # The method of the attempt awaiting its answer; None when none is.
    pending_method_id: str | None
    next_retry_at: datetime | None
    dunning_ends_at: datetime | None
    # Since when the customer's default method is one this invoice has not tried.
    new_method_at: datetime | None
    refunded: int
    updated_at: datetime

    def default_method_changed(self, method_id: str, at: datetime) -> None:
        """The customer's default payment method became ``method_id`` at ``at``: unless
        this invoice is trying it or last failed with it, a retry may go at once."""
        tried = self.pending_method_id or self.last_failed_method_id
        if method_id == tried:
            self.new_method_at = None
        elif self.new_method_at is None:
            self.new_method_at = at

    def due(self) -> tuple[str, datetime] | None:
        """(kind, instant) of what the billing clock must do next, as ``Invoice.retry``
        and ``Invoice.dunning_ran_out`` decide it: the earliest of a retry with a new
        payment method, the scheduled retry, or else the end of dunning."""
        if self.status != _OPEN or self.failures == 0 or self.pending_method_id is not None:
            return None
        candidates: list[tuple[str, datetime]] = []
        if self.new_method_at is not None:
            candidates.append(("payment_retry", self.new_method_at))
        if self.next_retry_at is not None:
            candidates.append(("payment_retry", self.next_retry_at))
        elif self.dunning_ends_at is not None:
            candidates.append(("dunning_end", self.dunning_ends_at))
        return min(candidates, key=lambda candidate: candidate[1], default=None)


@dataclass
class AttemptRow:
    """A payment attempt: ``pending`` until the gateway answers. One that found no usable
    payment method failed without a request (no method, no gateway)."""

    invoice_id: UUID
    attempt: int
    payment_method_id: str | None
    gateway: str | None
    amount: int
    currency: str
    requested_at: datetime
    outcome: str
    code: str | None
    reference: str | None
    answered_at: datetime | None


@dataclass
class CreditNoteRow:
    """A refund of part or all of a payment: ``requested``, then ``refunded`` or
    ``failed`` once the gateway answers."""

    invoice_id: UUID
    number: int
    amount: int
    currency: str
    reason: str
    requested_at: datetime
    status: str
    reference: str | None
    code: str | None
    answered_at: datetime | None


R = TypeVar("R", bound="DataclassInstance")
# Readers of a column's value from either backend, by the type of the row's field.
_READERS: dict[str, Callable[[Any], Any]] = {
    "UUID": read_uuid,
    "datetime": read_instant,
    "int": read_int,
    "str": str,
}


def _param(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return instant(value)
    return value


class _Table(Generic[R]):
    """A table whose columns are the fields of a row class, read and upserted whole
    (one class per table, instead of a reader and a writer per column of each)."""

    def __init__(self, name: str, row: type[R], key: tuple[str, ...]) -> None:
        self.row = row
        self.columns = tuple(f.name for f in fields(row))
        self.readers = [_READERS[str(f.type).removesuffix(" | None")] for f in fields(row)]
        self.select = f"SELECT {', '.join(self.columns)} FROM {name}"
        self.insert = f"INSERT INTO {name} ({', '.join(self.columns)})"
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c not in key)
        self.on_conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"

    def read(self, values: Sequence[Any]) -> R:
        return self.row(
            *(
                None if value is None else read(value)
                for read, value in zip(self.readers, values, strict=True)
            )
        )

    def load(self, tx: Transaction, column: str, keys: Sequence[str]) -> list[R]:
        return [self.read(values) for values in select_in(tx, self.select, column, keys)]

    def query(self, db: Database, where: str, params: Params) -> list[R]:
        return [self.read(values) for values in db.query(f"{self.select} WHERE {where}", params)]

    def save(self, tx: Transaction, rows: Iterable[R]) -> None:
        params = [tuple(_param(getattr(row, c)) for c in self.columns) for row in rows]
        tx.insert_rows(self.insert, params, self.on_conflict)


INVOICES = _Table("invoices", InvoiceRow, ("invoice_id",))
ATTEMPTS = _Table("payment_attempts", AttemptRow, ("invoice_id", "attempt"))
CREDIT_NOTES = _Table("credit_notes", CreditNoteRow, ("invoice_id", "number"))


def _issued(event: Invoice.Issued) -> InvoiceRow:
    paid = not event.amount_due
    return InvoiceRow(
        invoice_id=event.originator_id,
        number=invoice_number(event.originator_id),
        customer_id=event.customer_id,
        subscription_id=event.subscription_id,
        period_index=event.period_index,
        reason=event.reason,
        currency=event.total.currency,
        subtotal=event.subtotal.amount,
        discount=event.discount.amount,
        tax=event.tax.amount,
        total=event.total.amount,
        credit_applied=event.credit_applied.amount,
        amount_due=event.amount_due.amount,
        status=InvoiceStatus.PAID.value if paid else _OPEN,
        issued_at=event.timestamp,
        paid_at=event.timestamp if paid else None,
        attempts=0,
        failures=0,
        last_decline_code=None,
        last_failed_method_id=None,
        pending_method_id=None,
        next_retry_at=None,
        dunning_ends_at=None,
        new_method_at=None,
        refunded=0,
        updated_at=event.timestamp,
    )


_PAYMENT_ANSWERS = (Invoice.PaymentProcessing, Invoice.PaymentSucceeded, Invoice.PaymentFailed)
_REFUND_ANSWERS = (Invoice.RefundSucceeded, Invoice.RefundFailed)


def _answered(events: Sequence[Positioned], answers: tuple[type[Any], ...]) -> list[str]:
    """The invoices (ids as text) that the batch has an answer of ``answers`` for."""
    return list({str(e.originator_id) for _, e in events if isinstance(e, answers)})


def _new_default(event: Any) -> str | None:
    """The payment method that became the customer's default with ``event``, if any."""
    if isinstance(event, Customer.DefaultPaymentMethodSwitched):
        return event.payment_method_id
    if isinstance(event, Customer.PaymentMethodAdded) and event.is_default:
        return event.method.id
    return None


class _Batch:
    """The rows that a batch of events touches: loaded once, changed in memory, written
    once."""

    def __init__(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        self.invoices = {row.invoice_id: row for row in _stored_invoices(tx, events)}
        self.stored = frozenset(self.invoices)
        self.of_customer: defaultdict[UUID, list[InvoiceRow]] = defaultdict(list)
        for row in self.invoices.values():
            self.of_customer[row.customer_id].append(row)
        # Only requests still awaiting their answer can be answered.
        self.attempts = {
            (row.invoice_id, row.attempt): row
            for row in ATTEMPTS.load(tx, "invoice_id", _answered(events, _PAYMENT_ANSWERS))
            if row.outcome in ("pending", "processing")
        }
        self.notes = {
            (row.invoice_id, row.number): row
            for row in CREDIT_NOTES.load(tx, "invoice_id", _answered(events, _REFUND_ANSWERS))
            if row.status == "requested"
        }
        self.touched: set[UUID] = set()

    def apply(self, event: Any) -> None:
        if type(event) in DEFAULT_METHOD_EVENTS:
            method_id = _new_default(event)
            if method_id is None:
                return
            for row in self.of_customer[event.originator_id]:
                if row.status == _OPEN:
                    row.default_method_changed(method_id, event.timestamp)
                    self.touched.add(row.invoice_id)
            return
        if isinstance(event, Invoice.Issued):
            row = self.invoices[event.originator_id] = _issued(event)
            self.of_customer[row.customer_id].append(row)
        else:
            row = self.invoices[event.originator_id]
            self._collect(row, event)
        row.updated_at = event.timestamp
        self.touched.add(row.invoice_id)

    def _collect(self, row: InvoiceRow, event: Any) -> None:
        """The effect of an invoice event after ``Issued``, as ``Invoice`` applies it."""
        at = event.timestamp
        if isinstance(event, Invoice.PaymentRequested):
            request = event.request
            row.attempts = request.attempt
            row.pending_method_id = request.payment_method_id
            row.new_method_at = None
            self.attempts[(row.invoice_id, request.attempt)] = AttemptRow(
                row.invoice_id,
                request.attempt,
                request.payment_method_id,
                request.gateway,
                request.amount.amount,
                request.amount.currency,
                at,
                "pending",
                None,
                None,
                None,
            )
        elif isinstance(event, Invoice.PaymentProcessing):
            attempt = self.attempts[(row.invoice_id, event.attempt)]
            attempt.outcome, attempt.reference = "processing", event.reference
        elif isinstance(event, Invoice.PaymentSucceeded):
            row.status, row.paid_at = InvoiceStatus.PAID.value, at
            row.pending_method_id = row.next_retry_at = None
            attempt = self.attempts[(row.invoice_id, event.attempt)]
            attempt.outcome, attempt.reference = "succeeded", event.reference
            attempt.answered_at = at
        elif isinstance(event, Invoice.PaymentFailed):
            self._failed(row, event)
        elif isinstance(event, Invoice.MarkedUncollectible):
            row.status, row.next_retry_at = InvoiceStatus.UNCOLLECTIBLE.value, None
        elif isinstance(event, Invoice.Voided):
            row.status, row.next_retry_at = InvoiceStatus.VOID.value, None
        elif isinstance(event, Invoice.RefundRequested):
            refund = event.request
            self.notes[(row.invoice_id, refund.number)] = CreditNoteRow(
                row.invoice_id,
                refund.number,
                refund.amount.amount,
                refund.amount.currency,
                event.reason,
                at,
                "requested",
                None,
                None,
                None,
            )
        else:
            note = self.notes[(row.invoice_id, event.number)]
            note.answered_at = at
            if isinstance(event, Invoice.RefundSucceeded):
                note.status, note.reference = "refunded", event.reference
                row.refunded += note.amount
            else:
                note.status, note.code = "failed", event.code

    def _failed(self, row: InvoiceRow, event: Invoice.PaymentFailed) -> None:
        at = event.timestamp
        row.attempts = event.attempt
        row.failures += 1
        row.last_decline_code = event.code
        row.last_failed_method_id = event.payment_method_id
        row.pending_method_id = None
        row.next_retry_at, row.dunning_ends_at = event.next_retry_at, event.dunning_ends_at
        key = (row.invoice_id, event.attempt)
        if event.payment_method_id is None:
            # No usable method: the attempt failed without a request (and no default
            # method set since the last one counts: it could not be charged either).
            row.new_method_at = None
            self.attempts[key] = AttemptRow(
                row.invoice_id,
                event.attempt,
                None,
                None,
                row.amount_due,
                row.currency,
                at,
                "failed",
                event.code,
                None,
                at,
            )
        else:
            attempt = self.attempts[key]
            attempt.outcome, attempt.code, attempt.answered_at = "failed", event.code, at

    def save(self, tx: Transaction) -> None:
        rows = [self.invoices[invoice_id] for invoice_id in self.touched]
        INVOICES.save(tx, rows)
        ATTEMPTS.save(tx, self.attempts.values())
        CREDIT_NOTES.save(tx, self.notes.values())
        for chunk in chunked([str(invoice_id) for invoice_id in self.touched & self.stored]):
            tx.execute(
                f"DELETE FROM due_collections WHERE invoice_id IN ({placeholders(len(chunk))})",
                chunk,
            )
        due = []
        for row in rows:
            if (step := row.due()) is not None:
                kind, at = step
                due.append(
                    (
                        str(row.invoice_id),
                        kind,
                        instant(at),
                        str(row.customer_id),
                        str(row.subscription_id),
                    )
                )
        tx.insert_rows(
            "INSERT INTO due_collections (invoice_id, kind, due_at, customer_id, subscription_id)",
            due,
        )


def _stored_invoices(tx: Transaction, events: Sequence[Positioned]) -> list[InvoiceRow]:
    """The stored invoices the batch's events touch, and the open ones of the customers
    whose default payment method the batch changes."""
    rows = INVOICES.load(tx, "invoice_id", ids_to_load(events, Invoice.Issued, INVOICE_EVENTS))
    customers = list({str(e.originator_id) for _, e in events if _new_default(e) is not None})
    for chunk in chunked(customers):
        rows += [
            INVOICES.read(values)
            for values in tx.query(
                f"{INVOICES.select} WHERE status = ? "
                f"AND customer_id IN ({placeholders(len(chunk))})",
                [_OPEN, *chunk],
            )
        ]
    return rows


class Collections(Projection):
    name = "collections"
    version = 1
    tables = ("invoices", "payment_attempts", "credit_notes", "due_collections")
    schema = (
        """CREATE TABLE invoices (
            invoice_id UUID PRIMARY KEY,
            number TEXT NOT NULL,
            customer_id UUID NOT NULL,
            subscription_id UUID NOT NULL,
            period_index INTEGER,
            reason TEXT NOT NULL,
            currency TEXT NOT NULL,
            subtotal BIGINT NOT NULL,
            discount BIGINT NOT NULL,
            tax BIGINT NOT NULL,
            total BIGINT NOT NULL,
            credit_applied BIGINT NOT NULL,
            amount_due BIGINT NOT NULL,
            status TEXT NOT NULL,
            issued_at TIMESTAMPTZ NOT NULL,
            paid_at TIMESTAMPTZ,
            attempts INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            last_decline_code TEXT,
            last_failed_method_id TEXT,
            pending_method_id TEXT,
            next_retry_at TIMESTAMPTZ,
            dunning_ends_at TIMESTAMPTZ,
            new_method_at TIMESTAMPTZ,
            refunded BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )""",
        "CREATE INDEX invoices_customer ON invoices (customer_id, status)",
        """CREATE TABLE payment_attempts (
            invoice_id UUID NOT NULL,
            attempt INTEGER NOT NULL,
            payment_method_id TEXT,
            gateway TEXT,
            amount BIGINT NOT NULL,
            currency TEXT NOT NULL,
            requested_at TIMESTAMPTZ NOT NULL,
            outcome TEXT NOT NULL,
            code TEXT,
            reference TEXT,
            answered_at TIMESTAMPTZ,
            PRIMARY KEY (invoice_id, attempt)
        )""",
        """CREATE TABLE credit_notes (
            invoice_id UUID NOT NULL,
            number INTEGER NOT NULL,
            amount BIGINT NOT NULL,
            currency TEXT NOT NULL,
            reason TEXT NOT NULL,
            requested_at TIMESTAMPTZ NOT NULL,
            status TEXT NOT NULL,
            reference TEXT,
            code TEXT,
            answered_at TIMESTAMPTZ,
            PRIMARY KEY (invoice_id, number)
        )""",
        """CREATE TABLE due_collections (
            invoice_id UUID PRIMARY KEY,
            kind TEXT NOT NULL,
            due_at TIMESTAMPTZ NOT NULL,
            customer_id UUID NOT NULL,
            subscription_id UUID NOT NULL
        )""",
        "CREATE INDEX due_collections_due_at ON due_collections (due_at)",
    )
    handles = INVOICE_EVENTS | DEFAULT_METHOD_EVENTS

    def process(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        batch = _Batch(tx, events)
        for _, event in events:
            batch.apply(event)
        batch.save(tx)


def invoices_of(db: Database, customer_id: UUID) -> list[InvoiceRow]:
    """The customer's invoices, in the order they were issued."""
    return INVOICES.query(db, "customer_id = ? ORDER BY issued_at, number", (str(customer_id),))


def attempts_of(db: Database, invoice_id: UUID) -> list[AttemptRow]:
    """The invoice's payment attempts, first to last."""
    return ATTEMPTS.query(db, "invoice_id = ? ORDER BY attempt", (str(invoice_id),))


def credit_notes_of(db: Database, invoice_id: UUID) -> list[CreditNoteRow]:
    """The invoice's credit notes (refunds), first to last."""
    return CREDIT_NOTES.query(db, "invoice_id = ? ORDER BY number", (str(invoice_id),))
