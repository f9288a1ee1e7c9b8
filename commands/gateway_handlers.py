"""Handlers of what gateways tell by webhook: a late answer to a charge they settle
later, refunds (ours, or made in their dashboard), disputes. Each is idempotent by the
gateway's own ids, on top of the command id the receiver derives from the event id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from commands import schemas as s
from commands.accounts import Outcome, current_subscription, invoice_view
from commands.lifecycle import record_answer
from gateways.port import Declined, Succeeded
from ledger.application import Ledger
from ledger.money import Money


def settle_payment(cmd: s.SettlePayment, ledger: Ledger, now: datetime) -> Outcome:
    invoice = ledger.invoice(cmd.invoice_id)
    account = current_subscription(ledger, invoice.subscription_id, now)
    outcome: Succeeded | Declined
    if cmd.outcome == "succeeded":
        asked = invoice.pending.amount if invoice.pending else Money.zero(invoice.currency)
        outcome = Succeeded(cmd.reference, asked)
    else:
        outcome = Declined(cmd.code, cmd.message or cmd.code, cmd.reference)
    at = max(account.at, invoice.modified_on)
    done = record_answer(invoice, account, cmd.attempt, outcome, at, ledger.dunning_policy)
    # The invoice first: its answer comes before what it does to the subscription.
    return Outcome(invoice_view(invoice) | {"recorded": done}, (invoice, *account.changed()))


def record_gateway_refund(cmd: s.RecordGatewayRefund, ledger: Ledger, now: datetime) -> Outcome:
    invoice = ledger.invoice(cmd.invoice_id)
    at = max(now, invoice.modified_on)
    amount = Money(cmd.amount, cmd.currency)
    # Ours, named by our key; or, when the gateway echoes no key, ours of that amount.
    number = cmd.refund_number or invoice.pending_refund_of(amount)
    done = number is not None and invoice.record_refund(number, cmd.reference, at)
    if not done and cmd.reference not in invoice.refund_references:
        # Not one of ours awaiting its answer (made in the dashboard, or ours recorded as
        # failed though the gateway did it): the money went back all the same.
        done = invoice.record_gateway_refund(cmd.reference, amount, cmd.reason, at)
    return Outcome(invoice_view(invoice) | {"recorded": done}, (invoice,))


def record_dispute(cmd: s.RecordDispute, ledger: Ledger, now: datetime) -> Outcome:
    invoice = ledger.invoice(cmd.invoice_id)
    at = max(now, invoice.modified_on)
    amount = Money(cmd.amount, cmd.currency)
    if cmd.status == "opened":
        done = invoice.open_dispute(cmd.reference, amount, cmd.reason, at)
    else:
        won = cmd.status == "won"
        done = invoice.close_dispute(cmd.reference, won, amount, cmd.reason, at)
    result = invoice_view(invoice) | {"recorded": done, "dispute": invoice.disputes[cmd.reference]}
    return Outcome(result, (invoice,))


GATEWAY_HANDLERS: dict[type[s.Command], Callable[[Any, Ledger, datetime], Outcome]] = {
    s.SettlePayment: settle_payment,
    s.RecordGatewayRefund: record_gateway_refund,
    s.RecordDispute: record_dispute,
}
