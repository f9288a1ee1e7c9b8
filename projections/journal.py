"""The double-entry journal: what invoices, payments, refunds and account credit do to the
accounts an accountant keeps, with each invoice's revenue recognised day by day over the
service it pays for (``projections.recognition``).

``journal_lines`` holds the entries that events post, one row per account of an entry
(debit or credit, in minor units), each entry balanced. ``revenue_recognition`` holds,
per invoice and UTC day, the revenue that day earns: written when the invoice is issued
(its service periods are known then) and removed if it is voided; each row stands for an
entry moving that amount from deferred revenue to revenue. Revenue is recognised net of
tax and discounts; the discount's share of each day is kept beside it, so that revenue
reads gross with ``discounts`` as its contra account (see docs/metrics.md#journal).

Later events name only their invoice: a payment's amount is remembered from its request
(``journal_requests``), and a void or write-off reads what the invoice's entries left on
its accounts from ``journal_lines``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from ledger.billing import PLAN_CHANGE_CREDIT
from ledger.customers import Customer
from ledger.invoices import Invoice
from ledger.money import Money
from projections.database import Database, Params, Transaction, chunked, placeholders, select_in
from projections.projection import Positioned, Projection
from projections.recognition import recognition
from projections.values import instant, read_int, read_uuid

ACCOUNTS_RECEIVABLE = "accounts_receivable"
CASH = "cash"
CUSTOMER_CREDIT = "customer_credit"
DEFERRED_REVENUE = "deferred_revenue"
TAX_PAYABLE = "tax_payable"
REVENUE = "revenue"
DISCOUNTS = "discounts"
REFUNDS = "refunds"
BAD_DEBT = "bad_debt"
ACCOUNTS = (
    ACCOUNTS_RECEIVABLE,
    CASH,
    CUSTOMER_CREDIT,
    DEFERRED_REVENUE,
    TAX_PAYABLE,
    REVENUE,
    DISCOUNTS,
    REFUNDS,
    BAD_DEBT,
)

# Credit given for a plan change (its reason begins with ``PLAN_CHANGE_CREDIT``) is the
# only adjustment posted from the customer's events; credit applied to an invoice, and
# given back when it is voided, is posted from the invoice's own events.


@dataclass(frozen=True, slots=True)
class Entry:
    """One balanced journal entry: an amount per account, debits positive."""

    entry_id: str
    invoice_id: UUID | None
    posted_at: datetime
    currency: str
    memo: str
    amounts: dict[str, int]

    def rows(self) -> list[Params]:
        """Its ``journal_lines`` rows; an account the entry leaves unchanged has none."""
        day = self.posted_at.astimezone(UTC).date().isoformat()
        invoice = None if self.invoice_id is None else str(self.invoice_id)
        return [
            (
                self.entry_id,
                invoice,
                instant(self.posted_at),
                day,
                account,
                self.currency,
                max(amount, 0),
                max(-amount, 0),
                self.memo,
            )
            for account, amount in self.amounts.items()
            if amount
        ]


def _transfer(debit: str, credit: str, amount: Money) -> dict[str, int]:
    return {debit: amount.amount, credit: -amount.amount}


@dataclass
class Balance:
    """What an invoice's entries have left on each account, debits positive."""

    currency: str
    amounts: Counter[str] = field(default_factory=Counter)


RequestKey = tuple[UUID, str, int]  # (invoice, "payment" or "refund", attempt or number)


class _Batch:
    """The entries, schedules and requests of one batch of events, over the state that
    earlier batches left: the balances of the invoices it voids or writes off, and the
    requests it answers."""

    def __init__(self, balances: dict[UUID, Balance], requests: dict[RequestKey, Money]) -> None:
        self.balances = balances
        self.requests = requests
        self.entries: list[Entry] = []
        self.schedules: dict[UUID, list[Params]] = {}
        # Invoices voided in the batch: their stored recognition goes.
        self.unscheduled: list[UUID] = []

    def post(self, entry: Entry) -> None:
        self.entries.append(entry)
        if entry.invoice_id is not None:
            balance = self.balances.setdefault(entry.invoice_id, Balance(entry.currency))
            balance.amounts.update(entry.amounts)

    def post_on_invoice(
        self, event: Any, name: str, memo: str, currency: str, amounts: dict[str, int]
    ) -> None:
        invoice_id = event.originator_id
        self.post(
            Entry(f"{invoice_id}:{name}", invoice_id, event.timestamp, currency, memo, amounts)
        )

    def issued(self, event: Invoice.Issued) -> None:
        currency = event.total.currency
        self.post_on_invoice(
            event,
            "issued",
            "invoice issued",
            currency,
            {
                ACCOUNTS_RECEIVABLE: event.total.amount,
                DEFERRED_REVENUE: -(event.total - event.tax).amount,
                TAX_PAYABLE: -event.tax.amount,
            },
        )
        if event.credit_applied:
            self.post_on_invoice(
                event,
                "credit_applied",
                "account credit applied",
                currency,
                _transfer(CUSTOMER_CREDIT, ACCOUNTS_RECEIVABLE, event.credit_applied),
            )
        invoice = str(event.originator_id)
        self.schedules[event.originator_id] = [
            (invoice, day.isoformat(), currency, earned, discount)
            for day, (earned, discount) in recognition(event).items()
        ]

    def payment_requested(self, event: Invoice.PaymentRequested) -> None:
        request = event.request
        self.requests[(event.originator_id, "payment", request.attempt)] = request.amount

    def payment_succeeded(self, event: Invoice.PaymentSucceeded) -> None:
        amount = self.requests.pop((event.originator_id, "payment", event.attempt))
        self.post_on_invoice(
            event,
            f"payment:{event.attempt}",
            f"payment {event.reference}",
            amount.currency,
            _transfer(CASH, ACCOUNTS_RECEIVABLE, amount),
        )

    def payment_failed(self, event: Invoice.PaymentFailed) -> None:
        # An attempt without a payment method fails without a request.
        self.requests.pop((event.originator_id, "payment", event.attempt), None)

    def refund_requested(self, event: Invoice.RefundRequested) -> None:
        request = event.request
        self.requests[(event.originator_id, "refund", request.number)] = request.amount

    def refund_succeeded(self, event: Invoice.RefundSucceeded) -> None:
        amount = self.requests.pop((event.originator_id, "refund", event.number))
        self.post_on_invoice(
            event,
            f"refund:{event.number}",
            f"refund {event.reference}",
            amount.currency,
            _transfer(REFUNDS, CASH, amount),
        )

    def refund_failed(self, event: Invoice.RefundFailed) -> None:
        self.requests.pop((event.originator_id, "refund", event.number))

    def marked_uncollectible(self, event: Invoice.MarkedUncollectible) -> None:
        balance = self.balances[event.originator_id]
        owed = Money(balance.amounts[ACCOUNTS_RECEIVABLE], balance.currency)
        self.post_on_invoice(
            event,
            "uncollectible",
            "written off as bad debt",
            balance.currency,
            _transfer(BAD_DEBT, ACCOUNTS_RECEIVABLE, owed),
        )

    def voided(self, event: Invoice.Voided) -> None:
        """Reverses what the invoice's entries posted (an open invoice has only its issue
        and the credit applied to it, which goes back to the customer's balance), and
        drops its recognition: a void invoice never earned anything."""
        balance = self.balances[event.originator_id]
        reversal = {account: -amount for account, amount in balance.amounts.items()}
        self.post_on_invoice(event, "void", "invoice voided", balance.currency, reversal)
        self.schedules.pop(event.originator_id, None)
        self.unscheduled.append(event.originator_id)

    def credit_adjusted(self, event: Customer.CreditAdjusted) -> None:
        """Account credit for a plan change made now is a credit note: service the
        customer paid for and will not use, given back as balance instead of cash."""
        if event.amount.amount <= 0 or not event.reason.startswith(PLAN_CHANGE_CREDIT):
            return
        self.post(
            Entry(
                f"{event.originator_id}:credit:{event.originator_version}",
                None,
                event.timestamp,
                event.amount.currency,
                event.reason,
                _transfer(REFUNDS, CUSTOMER_CREDIT, event.amount),
            )
        )


_HANDLERS: dict[type, Callable[[_Batch, Any], None]] = {
    Invoice.Issued: _Batch.issued,
    Invoice.PaymentRequested: _Batch.payment_requested,
    Invoice.PaymentSucceeded: _Batch.payment_succeeded,
    Invoice.PaymentFailed: _Batch.payment_failed,
    Invoice.RefundRequested: _Batch.refund_requested,
    Invoice.RefundSucceeded: _Batch.refund_succeeded,
    Invoice.RefundFailed: _Batch.refund_failed,
    Invoice.MarkedUncollectible: _Batch.marked_uncollectible,
    Invoice.Voided: _Batch.voided,
    Customer.CreditAdjusted: _Batch.credit_adjusted,
}
_REQUEST_EVENTS = frozenset(
    {
        Invoice.PaymentRequested,
        Invoice.PaymentSucceeded,
        Invoice.PaymentFailed,
        Invoice.RefundRequested,
        Invoice.RefundSucceeded,
        Invoice.RefundFailed,
    }
)
_LINE_COLUMNS = "entry_id, invoice_id, posted_at, day, account, currency, debit, credit, memo"
_REQUEST_COLUMNS = "invoice_id, kind, number, currency, amount"


class Journal(Projection):
    name = "journal"
    version = 1
    tables = ("journal_lines", "revenue_recognition", "journal_requests")
    schema = (
        """CREATE TABLE journal_lines (
            entry_id TEXT NOT NULL,
            invoice_id UUID,
            posted_at TIMESTAMPTZ NOT NULL,
            day DATE NOT NULL,
            account TEXT NOT NULL,
            currency TEXT NOT NULL,
            debit BIGINT NOT NULL,
            credit BIGINT NOT NULL,
            memo TEXT NOT NULL,
            PRIMARY KEY (entry_id, account)
        )""",
        "CREATE INDEX journal_lines_invoice ON journal_lines (invoice_id)",
        "CREATE INDEX journal_lines_day ON journal_lines (currency, day)",
        """CREATE TABLE revenue_recognition (
            invoice_id UUID NOT NULL,
            day DATE NOT NULL,
            currency TEXT NOT NULL,
            amount BIGINT NOT NULL,
            discount BIGINT NOT NULL,
            PRIMARY KEY (invoice_id, day)
        )""",
        "CREATE INDEX revenue_recognition_day ON revenue_recognition (currency, day)",
        """CREATE TABLE journal_requests (
            invoice_id UUID NOT NULL,
            kind TEXT NOT NULL,
            number INTEGER NOT NULL,
            currency TEXT NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (invoice_id, kind, number)
        )""",
    )
    handles = frozenset(_HANDLERS)

    def process(self, tx: Transaction, events: Sequence[Positioned]) -> None:
        asked = list({str(e.originator_id) for _, e in events if type(e) in _REQUEST_EVENTS})
        batch = _Batch(_balances(tx, events), _requests(tx, asked))
        for _, event in events:
            _HANDLERS[type(event)](batch, event)
        tx.insert_rows(
            f"INSERT INTO journal_lines ({_LINE_COLUMNS})",
            [row for entry in batch.entries for row in entry.rows()],
        )
        _delete(tx, "revenue_recognition", [str(key) for key in batch.unscheduled])
        tx.insert_rows(
            "INSERT INTO revenue_recognition (invoice_id, day, currency, amount, discount)",
            [row for rows in batch.schedules.values() for row in rows],
        )
        _delete(tx, "journal_requests", asked)
        tx.insert_rows(
            f"INSERT INTO journal_requests ({_REQUEST_COLUMNS})",
            [
                (str(invoice_id), kind, number, amount.currency, amount.amount)
                for (invoice_id, kind, number), amount in batch.requests.items()
            ],
        )


def _balances(tx: Transaction, events: Sequence[Positioned]) -> dict[UUID, Balance]:
    """What the stored entries of the invoices the batch voids or writes off left on
    their accounts."""
    ending = (Invoice.Voided, Invoice.MarkedUncollectible)
    wanted = list({str(e.originator_id) for _, e in events if isinstance(e, ending)})
    select = "SELECT invoice_id, account, currency, debit, credit FROM journal_lines"
    balances: dict[UUID, Balance] = {}
    for invoice_id, account, currency, debit, credit in select_in(tx, select, "invoice_id", wanted):
        balance = balances.setdefault(read_uuid(invoice_id), Balance(currency))
        balance.amounts[account] += read_int(debit) - read_int(credit)
    return balances


def _requests(tx: Transaction, invoice_ids: list[str]) -> dict[RequestKey, Money]:
    """The unanswered payment and refund requests of these invoices."""
    select = f"SELECT {_REQUEST_COLUMNS} FROM journal_requests"
    return {
        (read_uuid(invoice_id), kind, read_int(number)): Money(read_int(amount), currency)
        for invoice_id, kind, number, currency, amount in select_in(
            tx, select, "invoice_id", invoice_ids
        )
    }


def _delete(tx: Transaction, table: str, invoice_ids: list[str]) -> None:
    for chunk in chunked(invoice_ids):
        tx.execute(f"DELETE FROM {table} WHERE invoice_id IN ({placeholders(len(chunk))})", chunk)


# Reading


def trial_balance(db: Database, currency: str, as_of: date) -> dict[str, int]:
    """Every account's balance at the end of the UTC day ``as_of``, debits positive: the
    entries posted up to that day and the revenue recognised up to it. They add up to 0."""
    balances = dict.fromkeys(ACCOUNTS, 0)
    day = as_of.isoformat()
    for account, balance in db.query(
        "SELECT account, SUM(debit) - SUM(credit) FROM journal_lines "
        "WHERE currency = ? AND day <= ? GROUP BY account",
        (currency, day),
    ):
        balances[account] += read_int(balance)
    ((earned, discount),) = db.query(
        "SELECT SUM(amount), SUM(discount) FROM revenue_recognition "
        "WHERE currency = ? AND day <= ?",
        (currency, day),
    )
    balances[DEFERRED_REVENUE] += read_int(earned)
    balances[DISCOUNTS] += read_int(discount)
    balances[REVENUE] -= read_int(earned) + read_int(discount)
    return balances


def journal_balanced(db: Database) -> bool:
    """Whether every entry's debits equal its credits, and each invoice's recognition
    releases exactly the deferred revenue its entries credited (so that the day-by-day
    entries, each balanced by construction, leave nothing deferred once its service has
    been delivered)."""
    unbalanced = db.query(
        "SELECT entry_id FROM journal_lines GROUP BY entry_id, currency "
        "HAVING SUM(debit) <> SUM(credit)"
    )
    unreleased = db.query(
        "SELECT invoice_id FROM ("
        "  SELECT invoice_id, credit - debit AS deferred FROM journal_lines WHERE account = ?"
        "  UNION ALL SELECT invoice_id, -amount FROM revenue_recognition"
        ") AS movements GROUP BY invoice_id HAVING SUM(deferred) <> 0",
        (DEFERRED_REVENUE,),
    )
    return not unbalanced and not unreleased


def recognised_revenue(db: Database, currency: str, start: date, end: date) -> int:
    """The revenue recognised from ``start`` to ``end`` (UTC days, both included), net of
    tax and discounts, in minor units."""
    ((earned,),) = db.query(
        "SELECT SUM(amount) FROM revenue_recognition WHERE currency = ? AND day >= ? AND day <= ?",
        (currency, start.isoformat(), end.isoformat()),
    )
    return read_int(earned)
