"""Rich tables for what the projections answer: revenue figures, histories, positions."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from rich.console import Console
from rich.table import Table

from ledger.money import Money
from projections.history import HistoryLine
from projections.runner import Status
from projections.stats import Figures
from projections.suggestions import AnnualPlan, Suggestion


def _money(amount: int | Fraction | None, currency: str) -> str:
    return "n/a" if amount is None else str(Money(round(amount), currency))


def _percent(rate: Fraction | None) -> str:
    return "n/a" if rate is None else f"{float(rate) * 100:.2f}%"


def _per_currency(
    console: Console, figures: Sequence[Figures], title: str, rows: list[tuple[str, list[str]]]
) -> None:
    """A table of one column per currency, a row per (label, value in each currency)."""
    table = Table(title=title)
    table.add_column("")
    for f in figures:
        table.add_column(f.currency, justify="right")
    for label, values in rows:
        table.add_row(label, *values)
    console.print(table)


def headline(console: Console, figures: Sequence[Figures], title: str) -> None:
    """One column per currency: the levels at the end of the range and the rates over it."""
    rows: list[tuple[str, list[str]]] = [
        ("MRR", [_money(f.mrr, f.currency) for f in figures]),
        ("ARR", [_money(f.arr, f.currency) for f in figures]),
        ("paying customers", [str(f.paying_customers) for f in figures]),
        ("customers", [str(f.customers) for f in figures]),
        ("ARPU", [_money(f.arpu, f.currency) for f in figures]),
        ("LTV", [_money(f.ltv, f.currency) for f in figures]),
        ("customer churn rate", [_percent(f.customer_churn_rate) for f in figures]),
        ("revenue churn rate", [_percent(f.revenue_churn_rate) for f in figures]),
        ("net revenue retention", [_percent(f.net_revenue_retention) for f in figures]),
        ("trials started", [str(f.trials_started) for f in figures]),
        ("trial conversion", [_percent(f.trial_conversion_rate) for f in figures]),
    ]
    _per_currency(console, figures, title, rows)


def movements(console: Console, figures: Sequence[Figures], title: str) -> None:
    """The MRR bridge: MRR at the start, each movement, MRR at the end."""
    table = Table(title=title)
    table.add_column("")
    for f in figures:
        table.add_column(f.currency, justify="right")

    def row(label: str, amounts: list[int], sign: str = "") -> None:
        table.add_row(
            label,
            *(f"{sign}{_money(a, f.currency)}" for a, f in zip(amounts, figures, strict=True)),
        )

    row("MRR at start", [f.mrr_at_start for f in figures])
    row("new", [f.movements.new for f in figures], "+")
    row("expansion", [f.movements.expansion for f in figures], "+")
    row("contraction", [f.movements.contraction for f in figures], "-")
    row("churn", [f.movements.churn for f in figures], "-")
    row("reactivation", [f.movements.reactivation for f in figures], "+")
    row("MRR at end", [f.mrr for f in figures])
    console.print(table)


def payments(console: Console, figures: Sequence[Figures], title: str) -> None:
    """Money collected and refunded over the range, and how payments fared in dunning."""
    rows: list[tuple[str, list[str]]] = [
        ("collected", [_money(f.collected, f.currency) for f in figures]),
        ("refunded", [_money(f.refunded, f.currency) for f in figures]),
        ("failed payments", [str(f.failed_payments) for f in figures]),
        ("recovered payments", [str(f.recovered_payments) for f in figures]),
        ("recovered", [_money(f.recovered, f.currency) for f in figures]),
    ]
    _per_currency(console, figures, title, rows)


def subscribers(console: Console, figures: Sequence[Figures]) -> None:
    table = Table(title="Subscribers by plan and status, at the end")
    for column in ("currency", "plan", "status", "subscribers", "MRR"):
        table.add_column(column, justify="right" if column in ("subscribers", "MRR") else "left")
    for f in figures:
        for line in f.subscribers:
            table.add_row(
                f.currency,
                line.plan_code,
                line.status,
                str(line.subscribers),
                _money(line.mrr, f.currency),
            )
    console.print(table)


def months(console: Console, currency: str, figures: Sequence[Figures]) -> None:
    table = Table(title=f"By month, {currency}")
    table.add_column("month", no_wrap=True)
    columns = ("MRR at end", "new", "expansion", "contraction", "churn", "reactivation")
    for column in (*columns, "paying", "customer churn", "collected", "refunded"):
        table.add_column(column, justify="right", overflow="fold")
    for f in figures:
        m = f.movements
        table.add_row(
            f"{f.start:%Y-%m}",
            _money(f.mrr, currency),
            *(_money(a, currency) for a in (m.new, m.expansion, m.contraction, m.churn)),
            _money(m.reactivation, currency),
            str(f.paying_customers),
            _percent(f.customer_churn_rate),
            _money(f.collected, currency),
            _money(f.refunded, currency),
        )
    console.print(table)


def history(console: Console, customer: str, lines: Sequence[HistoryLine]) -> None:
    table = Table(title=f"History of customer {customer}")
    table.add_column("when", no_wrap=True)
    table.add_column("what", no_wrap=True)
    table.add_column("amount", justify="right", no_wrap=True)
    table.add_column("details", overflow="fold")
    for line in lines:
        amount = (
            ""
            if line.amount is None or line.currency is None
            else _money(line.amount, line.currency)
        )
        table.add_row(f"{line.occurred_at:%Y-%m-%d %H:%M}", line.kind, amount, line.description)
    console.print(table)


def positions(console: Console, statuses: Sequence[Status]) -> None:
    table = Table(title="Projections")
    for column in ("projection", "version", "position", "head", "lag", "state"):
        table.add_column(column, justify="left" if column in ("projection", "state") else "right")
    for s in statuses:
        stored = "-" if s.stored_version is None else str(s.stored_version)
        version = str(s.version) if stored == str(s.version) else f"{stored} -> {s.version}"
        table.add_row(s.name, version, str(s.position), str(s.head), str(s.lag), s.state)
    console.print(table)


def suggestions(console: Console, found: Sequence[Suggestion]) -> None:
    table = Table(title="Plan suggestions")
    for column in ("kind", "customer", "subscription", "since", "price", "offer"):
        table.add_column(column, overflow="fold")
    for s in found:
        table.add_row(
            str(s.kind),
            str(s.customer_id),
            str(s.subscription_id),
            f"{s.since:%Y-%m-%d}",
            s.price.id,
            _offer(s),
        )
    console.print(table)


def _offer(s: Suggestion) -> str:
    currency = s.price.currency
    if isinstance(s, AnnualPlan):
        saving = _money(s.annual.saving.amount, currency)
        return f"{s.annual.price_id}, saves {saving} ({s.paid_in_a_row} paid in a row)"
    change = "cancel" if s.to_price_id is None else f"downgrade to {s.to_price_id}"
    risk = _money(s.mrr_at_risk.amount, currency)
    offer = f"stay: {change} on {s.effective_at:%Y-%m-%d}, {risk} MRR at risk"
    if s.annual is not None:
        offer += f"; or {s.annual.price_id}, saves {_money(s.annual.saving.amount, currency)}"
    return offer
