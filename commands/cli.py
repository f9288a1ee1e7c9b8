"""The ``subledger`` command line: parse, call one function, format the answer."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import psycopg
import typer
from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from commands.bootstrap import bootstrap
from commands.demo import DemoReport, run_demo
from commands.dispatch import handle
from commands.handlers import subscription_view
from commands.schemas import parse_command
from commands.settings import (
    DEFAULT_DEMO_DATABASE_URL,
    InvalidDatabaseUrl,
    configured_database_url,
    sqlite_path,
)
from ledger.application import Ledger
from ledger.catalog import Plan
from ledger.clock import SystemClock
from ledger.errors import DomainError
from ledger.money import Money

app = typer.Typer(
    help="subledger: an event-sourced subscription ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SUBLEDGER_DATABASE_URL",
        help="sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host:port/db",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fail(code: str, message: str, exit_code: int = 1) -> typer.Exit:
    _print_json({"error": code, "message": message})
    return typer.Exit(exit_code)


@contextmanager
def _ledger(database_url: str | None) -> Iterator[Ledger]:
    """The ledger, with a clear error (exit 2) for a URL or a database we cannot use."""
    try:
        with bootstrap(database_url) as ledger:
            yield ledger
    except InvalidDatabaseUrl as error:
        raise _fail("invalid_database_url", str(error), 2) from None
    except (PersistenceError, psycopg.Error, sqlite3.Error, OSError) as error:
        raise _fail("database_error", f"cannot use the database: {error}", 2) from None


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="Customers who sign up.")] = 300,
    months: Annotated[int, typer.Option(min=1, max=120, help="Months to simulate.")] = 12,
    seed: Annotated[int, typer.Option(help="Same seed, same ledger.")] = 7,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Simulate a subscription business on a fresh ledger and summarise it.

    Without --database-url (or SUBLEDGER_DATABASE_URL, in the environment or .env) it
    starts from a new, empty SQLite file, .subledger/demo.db. A database given
    explicitly must be empty.
    """
    url = database_url or configured_database_url()
    if url is None:
        url = DEFAULT_DEMO_DATABASE_URL
        Path(sqlite_path(url) or "").unlink(missing_ok=True)
    with _ledger(url) as ledger:
        if ledger.recorder.max_notification_id():
            raise _fail("database_not_empty", f"the demo needs an empty database, not {url}", 2)
        if as_json:
            report = run_demo(ledger, customers, months, seed)
            _print_json(report.as_json() | {"database_url": url})
            return
        with Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("days"),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
        ) as progress:
            task = progress.add_task("days", total=None)
            report = run_demo(
                ledger,
                customers,
                months,
                seed,
                on_day=lambda day, days: progress.update(task, completed=day, total=days),
            )
        _show_demo(report, url)


def _counts(title: str, key: str, values: dict[str, Any], column: str = "count") -> None:
    table = Table(title=title)
    table.add_column(key)
    table.add_column(column, justify="right")
    for name, value in values.items():
        table.add_row(name, str(value))
    console.print(table)


def _show_demo(report: DemoReport, url: str) -> None:
    summary = Table(title="subledger demo", show_header=False)
    summary.add_row("simulated", f"{report.started:%Y-%m-%d} to {report.ended:%Y-%m-%d}")
    summary.add_row("customers", str(report.customers))
    summary.add_row("commands handled", str(report.commands))
    summary.add_row(
        "delivered twice",
        f"{report.redeliveries} (events added by them: {report.redelivery_events})",
    )
    summary.add_row("events stored", str(report.events))
    summary.add_row("database", url)
    console.print(summary)

    _counts("Subscriptions", "status", report.subscriptions_by_status)
    _counts("Live by plan", "plan", report.subscriptions_by_plan)
    mrr = {currency: Money(amount, currency) for currency, amount in report.mrr.items()}
    _counts("MRR at the end", "currency", mrr, column="MRR")
    _counts("Events by type", "event", report.events_by_type)
    if report.rejections:
        _counts("Refused commands", "code", dict(sorted(report.rejections.items())))
    console.print(f"Explore it: .venv/bin/subledger catalog --database-url {url}", soft_wrap=True)


@app.command()
def send(
    command: Annotated[str, typer.Argument(help="The command as JSON, or - to read stdin.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Send one command, e.g. '{"type": "pause_subscription", "command_id": "c1", ...}'.

    Prints the answer as JSON; a refused command prints {"error": code, "message": ...}
    and exits with 1 (2 for an invalid command).
    """
    raw = sys.stdin.read() if command == "-" else command
    try:
        parsed = parse_command(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'command'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise _fail("invalid_command", problems, 2) from None
    with _ledger(database_url) as ledger:
        try:
            result = handle(parsed, ledger, SystemClock())
        except DomainError as refusal:
            raise _fail(refusal.code, str(refusal)) from None
    _print_json(result)


@app.command()
def catalog(database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """List every plan and its prices (archived ones marked)."""
    with _ledger(database_url) as ledger:
        plans = [_plan_view(plan) for plan in ledger.plans()]
    if as_json:
        _print_json(plans)
        return
    table = Table(title="Catalog")
    for column in ("plan", "name", "price id", "price", "interval", "trial days", "state"):
        table.add_column(column)
    for plan in plans:
        state = "archived" if plan["archived"] else "active"
        if not plan["prices"]:
            table.add_row(plan["plan"], plan["name"], "-", "-", "-", "-", state)
        for price in plan["prices"]:
            table.add_row(
                plan["plan"],
                plan["name"],
                price["price_id"],
                str(Money(price["amount"], price["currency"])),
                price["interval"],
                str(price["trial_days"]),
                "archived" if price["archived"] else "active",
            )
    console.print(table)


def _plan_view(plan: Plan) -> dict[str, Any]:
    return {
        "plan": plan.code,
        "name": plan.name,
        "description": plan.description,
        "features": plan.features,
        "archived": plan.archived,
        "prices": [
            {
                "price_id": price.id,
                "amount": price.amount.amount,
                "currency": price.currency,
                "interval": str(price.interval),
                "trial_days": price.trial_days,
                "archived": plan.archived or price.id in plan.archived_price_ids,
            }
            for price in plan.prices.values()
        ],
    }


@app.command()
def subscription(
    subscription_id: Annotated[UUID, typer.Argument(help="The subscription's id.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Show one subscription as last stored, as JSON.

    Due transitions (trial end, renewals, scheduled cancels) are stored when the next
    command for it, or the billing clock, runs.
    """
    with _ledger(database_url) as ledger:
        try:
            sub = ledger.subscription(subscription_id)
        except DomainError as refusal:
            raise _fail(refusal.code, str(refusal)) from None
    _print_json(subscription_view(sub))
