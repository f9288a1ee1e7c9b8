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
run stops there without moving its position: the next run asks again, so a charge whose
fate is unknown is never sent again under a new key.

A charge the gateway settles later (``Pending``) is recorded as processing; the
gateway's webhook records its outcome (``invoice.settle_payment``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
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
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.customers import Customer
from ledger.invoices import Invoice, PaymentRequest
from projections.database import Database
from projections.values import read_int

POSITIONS_TABLE = """
CREATE TABLE IF NOT EXISTS follower_positions (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
)"""
TOPICS = [get_topic(Invoice.PaymentRequested), get_topic(Invoice.RefundRequested)]


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
        with database.transaction(exclusive=True) as tx:
            tx.execute(POSITIONS_TABLE)
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
        """Carries out every request recorded so far; returns what happened."""
        report = ProcessorReport()
        position = self.position()
        while True:
            page = self.ledger.recorder.select_notifications(position + 1, page_size, topics=TOPICS)
            events = [self.ledger.mapper.to_domain_event(n) for n in page]
            try:
                payments = [e for e in events if isinstance(e, Invoice.PaymentRequested)]
                self._charge(payments, report)
                for event in events:
                    if isinstance(event, Invoice.RefundRequested):
                        self._refund(event, report)
            except GatewayUnavailable:
                # The position stays before this page: the next run asks the gateway again.
                report.unresolved += 1
                self._recovering = True
                return report
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
        """Charges a page's payment requests that still await an answer, then records
        the answers in one transaction."""
        invoices = loaded(self.ledger, Invoice, (event.originator_id for event in events))
        waiting: list[tuple[Invoice, PaymentRequest]] = []
        for event in events:
            invoice = invoices[event.originator_id]
            pending = invoice.pending
            awaited = pending is not None and pending.attempt == event.request.attempt
            if awaited and invoice.processing_reference is None:
                waiting.append((invoice, event.request))
        report.skipped += len(events) - len(waiting)
        customers = loaded(self.ledger, Customer, (invoice.customer_id for invoice, _ in waiting))
        answers: list[Answer] = []
        try:
            for invoice, request in waiting:
                customer = customers[invoice.customer_id]
                method = customer.payment_methods[request.payment_method_id]
                charge = ChargeRequest(
                    request.idempotency_key,
                    method.token,
                    request.amount,
                    invoice.number,
                    customer_reference=method.customer_reference,
                    email=customer.email,
                )
                outcome = self._send(request.gateway, charge)
                answers.append((invoice.id, request.attempt, outcome))
        except GatewayUnavailable:
            # The answers got before the gateway became unreachable are kept.
            self._record_charges(answers, invoices, customers, report)
            raise
        self._record_charges(answers, invoices, customers, report)

    def _record_charges(
        self,
        answers: list[Answer],
        invoices: dict[UUID, Invoice],
        customers: dict[UUID, Customer],
        report: ProcessorReport,
    ) -> None:
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

    def _refund(self, event: Invoice.RefundRequested, report: ProcessorReport) -> None:
        request = event.request
        invoice = self.ledger.invoice(event.originator_id)
        if request.number not in invoice.pending_refunds:
            report.skipped += 1
            return
        refund = RefundRequest(request.idempotency_key, request.charge_reference, request.amount)
        outcome = self._send(request.gateway, refund)
        if isinstance(outcome, Pending):  # a gateway that breaks its contract: money moved
            outcome = Succeeded(outcome.reference, outcome.amount)
        if record_refund(self.ledger, invoice.id, request.number, outcome, self.clock.now()):
            if isinstance(outcome, Succeeded):
                report.refunded += 1
            else:
                report.refunds_failed += 1
        else:
            report.skipped += 1

    def _send(
        self, gateway_name: str, request: ChargeRequest | RefundRequest
    ) -> Succeeded | Declined | Pending:
        """The gateway's final answer to a request, asking it first while recovering;
        raises ``GatewayUnavailable`` when its fate cannot be told."""
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
        if self._recovering and (found := find()) is not None:
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
