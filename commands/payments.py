"""The payment processor: follows the event sequence and carries out each payment and
refund request through the gateway it names, then records the gateway's answer.

Its position in the sequence is kept in ``follower_positions``, moved by compare-and-set
after each page. A crash at any point is safe:

- before the gateway call: the request is still after the position, and is sent again;
- after the call, before the answer is recorded: on restart the processor first asks the
  gateway what became of the request's idempotency key, and records that;
- after recording, before the position moved: the invoice shows the answer, so the
  request is skipped without calling the gateway.

Every request is sent with its own idempotency key (``<invoice>:payment:<attempt>``), so
even a gateway called twice charges once. An error that leaves the outcome unknown (a
timeout, a 5xx) is retried with the same key; if it persists, the gateway is asked by
key, and only a charge it has no record of is recorded as a (soft) failure, which
dunning retries later with a new attempt. When even that question gets no answer, the
request is set aside (``payments_unresolved``) and asked about first at every run until
the gateway answers: a charge whose fate is unknown is never sent under a new key, and
one gateway's outage holds back neither the others nor the position.

A charge the gateway settles later (``Pending``) is recorded as processing; the
gateway's webhook records its outcome (``invoice.settle_payment``), and should none come,
the processor asks the gateway again every ``PROCESSING_RECHECK``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from uuid import UUID

from eventsourcing.utils import get_topic

from commands.lifecycle import Answer, loaded, record_charges, record_refund
from gateways.port import (
    ChargeRequest,
    Declined,
    Gateways,
    GatewayUnavailable,
    Pending,
    RefundRequest,
    RetryableError,
    Succeeded,
    UnknownGateway,
)
from ledger import collector
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.customers import Customer
from ledger.invoices import Invoice, PaymentRequest, payment_key, refund_key
from ledger.invoices import RefundRequest as InvoiceRefund
from projections.database import Database
from projections.values import read_int, read_uuid

UNRESOLVED = "payments_unresolved"
UNRESOLVED_TABLE = f"""
CREATE TABLE IF NOT EXISTS {UNRESOLVED} (
    idempotency_key TEXT PRIMARY KEY,
    invoice_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('charge', 'refund', 'processing')),
    number INTEGER NOT NULL,
    due_at BIGINT NOT NULL
)"""
# How long a charge the gateway settles later waits before it is asked about again, in
# case its webhook never comes (lost, not configured).
PROCESSING_RECHECK = timedelta(minutes=15)
POSITIONS_TABLE = """
CREATE TABLE IF NOT EXISTS follower_positions (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
)"""
TOPICS = [get_topic(Invoice.PaymentRequested), get_topic(Invoice.RefundRequested)]


def _awaits(invoice: Invoice, attempt: int) -> bool:
    """The invoice still awaits the gateway's answer to ``attempt``."""
    pending = invoice.pending
    awaited = pending is not None and pending.attempt == attempt
    return awaited and invoice.processing_reference is None


def backoff(attempt: int, retry_after: float | None) -> None:
    """Waits before sending a request again: what the gateway asked, else 0.2 s doubling."""
    time.sleep(min(retry_after if retry_after is not None else 0.2 * 2**attempt, 5.0))


@dataclass
class ProcessorReport:
    charged: int = 0
    declined: int = 0
    refunded: int = 0
    refunds_failed: int = 0
    skipped: int = 0  # answered already (a restart, or another processor)
    processing: int = 0  # accepted by the gateway, settled later by its webhook
    unresolved: int = 0  # the gateway could not tell what became of it: asked again later


class PositionMoved(Exception):
    """Another processor moved the shared position: start again from where it is."""


class PaymentProcessor:
    name = "payments"

    def __init__(
        self,
        ledger: Ledger,
        gateways: Gateways,
        database: Database,
        clock: Clock,
        tries: int = 3,
        wait: Callable[[int, float | None], None] = backoff,
    ) -> None:
        self.ledger = ledger
        self.gateways = gateways
        self.database = database
        self.clock = clock
        self.tries = tries
        self.wait = wait
        # Requests after the stored position may have reached a gateway before a crash:
        # until they are done, each one asks the gateway before charging.
        self._recovering = True
        self._deferred: dict[str, str] = {}  # payments_unresolved: the kind of each key
        with database.transaction(exclusive=True) as tx:
            tx.execute(POSITIONS_TABLE)
            tx.execute(UNRESOLVED_TABLE)
            if not tx.query("SELECT 1 FROM follower_positions WHERE name = ?", (self.name,)):
                tx.execute(
                    "INSERT INTO follower_positions (name, position) VALUES (?, 0)", (self.name,)
                )

    def position(self) -> int:
        rows = self.database.query(
            "SELECT position FROM follower_positions WHERE name = ?", (self.name,)
        )
        return read_int(rows[0][0])

    def run(self, page_size: int = 500) -> ProcessorReport:
        """Carries out every request recorded so far, and those left unresolved by
        earlier runs; returns what happened."""
        report = ProcessorReport()
        self._resolve_deferred(report)
        position = self.position()
        while True:
            page = self.ledger.recorder.select_notifications(position + 1, page_size, topics=TOPICS)
            # A page's invoices and customers live until it is recorded: not worth the
            # cyclic collector's scans (as a billing batch).
            with collector.paused():
                events = self.ledger.decode(page)
                requested = [e for e in events if isinstance(e, Invoice.PaymentRequested)]
                self._charge(requested, report)
                for event in events:
                    if isinstance(event, Invoice.RefundRequested):
                        self._refund(event.originator_id, event.request, report, self._recovering)
            if page:
                try:
                    self._move(position, page[-1].id)
                except PositionMoved:
                    position = self.position()
                    continue
                position = page[-1].id
            if len(page) < page_size:
                break
        self._recovering = False
        report.unresolved = sum(kind != "processing" for kind in self._deferred.values())
        return report

    def _move(self, expected: int, position: int) -> None:
        with self.database.transaction() as tx:
            moved = tx.execute(
                "UPDATE follower_positions SET position = ? WHERE name = ? AND position = ?",
                (position, self.name, expected),
            )
        if moved != 1:
            raise PositionMoved(self.name)

    def _charge(self, events: list[Invoice.PaymentRequested], report: ProcessorReport) -> None:
        """Charges a page's payment requests that still await an answer."""
        invoices = loaded(self.ledger, Invoice, (event.originator_id for event in events))
        waiting = [
            (invoices[e.originator_id], e.request)
            for e in events
            if _awaits(invoices[e.originator_id], e.request.attempt)
        ]
        report.skipped += len(events) - len(waiting)
        self._charge_waiting(waiting, invoices, report, ask_first=self._recovering)

    def _charge_waiting(
        self,
        waiting: list[tuple[Invoice, PaymentRequest]],
        invoices: dict[UUID, Invoice],
        report: ProcessorReport,
        ask_first: bool,
    ) -> None:
        """Sends each charge, then records the answers in one transaction; a charge whose
        fate the gateway cannot tell is deferred to the next run."""
        customers = loaded(self.ledger, Customer, (invoice.customer_id for invoice, _ in waiting))
        answers: list[Answer] = []
        for invoice, request in waiting:
            customer = customers[invoice.customer_id]
            method = customer.payment_methods[request.payment_method_id]
            charge = ChargeRequest(
                request.idempotency_key,
                method.token,
                request.amount,
                invoice.number,
                customer_reference=method.customer_reference,
                # An erased customer's contact is gone: the gateway gets none.
                email="" if customer.erased else customer.email,
                phone=customer.phone,
            )
            try:
                outcome = self._send(request.gateway, charge, ask_first)
            except GatewayUnavailable:
                self._defer(
                    request.idempotency_key, invoice.id, "charge", request.attempt, self.clock.now()
                )
                continue
            answers.append((invoice.id, request.attempt, outcome))
        now = self.clock.now()
        recorded = record_charges(self.ledger, answers, now, invoices, customers)
        for (_, _, outcome), done in zip(answers, recorded, strict=True):
            if not done:
                report.skipped += 1
            elif isinstance(outcome, Succeeded):
                report.charged += 1
            elif isinstance(outcome, Pending):
                report.processing += 1
            else:
                report.declined += 1
        for invoice_id, attempt, outcome in answers:
            key = payment_key(invoice_id, attempt)
            if isinstance(outcome, Pending):
                # Asked again later, should its webhook never come.
                self._defer(key, invoice_id, "processing", attempt, now + PROCESSING_RECHECK)
            else:
                self._undefer([key])

    def _refund(
        self, invoice_id: UUID, request: InvoiceRefund, report: ProcessorReport, ask_first: bool
    ) -> None:
        invoice = self.ledger.invoice(invoice_id)
        if request.number not in invoice.pending_refunds:
            report.skipped += 1
            self._undefer([request.idempotency_key])
            return
        refund = RefundRequest(request.idempotency_key, request.charge_reference, request.amount)
        try:
            outcome = self._send(request.gateway, refund, ask_first)
        except GatewayUnavailable:
            self._defer(
                request.idempotency_key, invoice.id, "refund", request.number, self.clock.now()
            )
            return
        if isinstance(outcome, Pending):  # a gateway that breaks its contract: money moved
            outcome = Succeeded(outcome.reference, outcome.amount)
        if record_refund(self.ledger, invoice.id, request.number, outcome, self.clock.now()):
            if isinstance(outcome, Succeeded):
                report.refunded += 1
            else:
                report.refunds_failed += 1
        else:
            report.skipped += 1
        self._undefer([request.idempotency_key])

    # Requests whose fate a gateway could not tell: kept aside, so that one gateway's
    # outage holds back neither the others nor the position, and asked about first at
    # every run until the gateway answers.

    def _defer(self, key: str, invoice_id: UUID, kind: str, number: int, due: datetime) -> None:
        self._deferred[key] = kind
        with self.database.transaction() as tx:
            tx.execute(
                f"INSERT INTO {UNRESOLVED} (idempotency_key, invoice_id, kind, number, due_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (idempotency_key)"
                " DO UPDATE SET kind = excluded.kind, due_at = excluded.due_at",
                (key, str(invoice_id), kind, number, int(due.timestamp())),
            )

    def _undefer(self, keys: Iterable[str]) -> None:
        # Only keys set aside cost a statement: the common case is none.
        answered = [key for key in keys if key in self._deferred]
        if not answered:
            return
        with self.database.transaction() as tx:
            for key in answered:
                tx.execute(f"DELETE FROM {UNRESOLVED} WHERE idempotency_key = ?", (key,))
        for key in answered:
            del self._deferred[key]

    def _resolve_deferred(self, report: ProcessorReport) -> None:
        rows = self.database.query(
            f"SELECT idempotency_key, invoice_id, kind, number, due_at FROM {UNRESOLVED}"
        )
        self._deferred = {str(key): str(kind) for key, _, kind, *_ in rows}
        now = int(self.clock.now().timestamp())
        deferred = [
            (read_uuid(invoice_id), kind, read_int(n))
            for _, invoice_id, kind, n, due_at in rows
            if read_int(due_at) <= now
        ]
        invoices = loaded(self.ledger, Invoice, (invoice_id for invoice_id, _, _ in deferred))
        waiting = []
        for invoice_id, kind, number in deferred:
            invoice = invoices[invoice_id]
            if kind == "refund":
                refund = invoice.pending_refunds.get(number)
                if refund is None:
                    self._undefer([refund_key(invoice_id, number)])
                else:
                    self._refund(invoice_id, refund, report, ask_first=True)
            elif (
                (pending := invoice.pending) is not None
                and pending.attempt == number
                and (kind == "processing" or invoice.processing_reference is None)
            ):
                waiting.append((invoice, pending))
            else:  # answered since (a webhook, another processor)
                self._undefer([payment_key(invoice_id, number)])
        self._charge_waiting(waiting, invoices, report, ask_first=True)

    def _send(
        self, gateway_name: str, request: ChargeRequest | RefundRequest, ask_first: bool
    ) -> Succeeded | Declined | Pending:
        """The gateway's final answer to a request, asking it first when it may have
        been sent before; raises ``GatewayUnavailable`` when its fate cannot be told."""
        try:
            gateway = self.gateways[gateway_name]
        except UnknownGateway as error:
            # Not a hard decline: dunning retries once the gateway is configured.
            return Declined("gateway_not_configured", str(error))
        key = request.idempotency_key
        if isinstance(request, ChargeRequest):
            send, find = partial(gateway.charge, request), partial(gateway.find_charge, request)
        else:
            send, find = partial(gateway.refund, request), partial(gateway.find_refund, request)
        if ask_first and (found := find()) is not None:
            return found
        last = RetryableError("not_sent", key)
        for attempt in range(self.tries):
            outcome = send()
            if not isinstance(outcome, RetryableError):
                return outcome
            last = outcome
            if attempt + 1 < self.tries:
                self.wait(attempt, outcome.retry_after)
        # The outcome is still unknown: only the gateway's own record can tell.
        found = find()
        return found if found is not None else Declined(last.code, last.message)
