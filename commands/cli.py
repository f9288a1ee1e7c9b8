"""The ``subledger`` command line: parse, call one function, format the answer."""

from __future__ import annotations

import json
import shlex
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any
from uuid import UUID, uuid4

import psycopg
import redis
import typer
import uvicorn
from eventsourcing.persistence import PersistenceError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from commands import reports
from commands.accounts import subscription_view
from commands.api_keys import KeyStore, Role, UnknownKey
from commands.audit import Anchor, NoChain, anchor, chain_recorder, verify
from commands.audit_export import export
from commands.audit_replay import Replay, replay
from commands.bootstrap import bootstrap, projector, webhook_verifiers
from commands.bus import GroupLost, answer_directly
from commands.bus_app import asyncapi_document
from commands.client import request
from commands.dashboard import snapshot
from commands.demo import DemoReport, project, run_demo
from commands.gateway_webhooks import GatewayWebhooks
from commands.http_api import ApiServices
from commands.http_app import http_app
from commands.node import Ticker, TickSummary, run_node
from commands.quotes import preview_quote
from commands.schemas import COMMAND_TYPES, PreviewQuote
from commands.settings import (
    DEFAULT_DEMO_DATABASE_URL,
    InvalidDatabaseUrl,
    Settings,
    configured_database_url,
    sqlite_path,
)
from commands.streams import Streams
from commands.webhook_deliveries import AttemptView, DeliveryStore
from commands.webhook_handlers import webhook_endpoint
from commands.webhook_signing import WebhookSigningKeyMissing, endpoint_secret
from commands.webhooks import EndpointStatus, webhook_status
from ledger.application import Ledger
from ledger.catalog import Plan
from ledger.clock import SystemClock
from ledger.errors import DomainError
from ledger.money import Money
from projections import stats as revenue
from projections.history import customer_history
from projections.runner import Progress as Advance
from projections.runner import Projector, UnknownProjection, VersionConflict
from projections.suggestions import SuggestionKind, suggestions

app = typer.Typer(
    help="subledger: an event-sourced subscription ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
projections_app = typer.Typer(
    help="Read models (SQL tables) kept from the event sequence: positions, rebuilds.",
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")
webhooks_app = typer.Typer(
    help="Outbound webhooks: how deliveries to each endpoint stand, signing secrets.",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")
audit_app = typer.Typer(
    help="For auditors: prove the stored events unaltered (the hash chain), anchor its head; "
    "replay an account as of an instant; export events with their hashes.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(
    help="API keys for the HTTP API, by role: analyst, auditor, service or admin.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
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
DAY = {"formats": ["%Y-%m-%d"], "show_default": False, "metavar": "YYYY-MM-DD"}


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
    except ValidationError as error:
        raise _fail("invalid_settings", str(error), 2) from None
    except (PersistenceError, psycopg.Error, sqlite3.Error, OSError) as error:
        raise _fail("database_error", f"cannot use the database: {error}", 2) from None


@contextmanager
def _projector(database_url: str | None) -> Iterator[Projector]:
    """The projections over the ledger, with the same errors as ``_ledger``."""
    with _ledger(database_url) as ledger, projector(ledger, database_url) as projections:
        try:
            yield projections
        except VersionConflict as error:
            raise _fail("projection_version_conflict", str(error), 2) from None


@contextmanager
def _progress(label: str, unit: str) -> Iterator[Advance]:
    """A progress bar on stderr, and the callback that moves it (done, total)."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


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
    with _ledger(url) as ledger, projector(ledger, url) as projections:
        if ledger.recorder.max_notification_id():
            raise _fail("database_not_empty", f"the demo needs an empty database, not {url}", 2)
        if as_json:
            report = run_demo(ledger, projections, customers, months, seed)
            project(report, projections)
            _print_json(report.as_json() | {"database_url": url})
            return
        with _progress("simulating", "days") as advance:
            report = run_demo(ledger, projections, customers, months, seed, on_day=advance)
        with _progress("projecting", "events") as advance:
            project(report, projections, advance)
        _show_demo(report, url)
        # Beside the demo's SQLite file, or in .subledger/ for a server database.
        page = Path(sqlite_path(url) or ".subledger/demo.db").with_name("dashboard.html")
        page.write_text(snapshot(projections.database), encoding="utf-8")
        console.print(
            f"Dashboard snapshot: open file://{page.resolve()} in a browser (no server needed).",
            soft_wrap=True,
        )


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
    _counts("Events by type", "event", report.events_by_type)
    if report.rejections:
        _counts("Refused commands", "code", dict(sorted(report.rejections.items())))
    whole = list(report.revenue.values())
    reports.movements(console, whole, f"MRR movements, {report.started:%Y-%m-%d} to the end")
    _show_billing(report)
    recent = list(report.recent.values())
    if recent:
        last = recent[0]
        reports.headline(console, recent, f"Revenue, {last.start} to {last.end} (last 30 days)")
    for command in ("stats", "projections status", "catalog", "audit verify"):
        console.print(
            f"Explore it: .venv/bin/subledger {command} --database-url {shlex.quote(url)}",
            soft_wrap=True,
        )


def _show_billing(report: DemoReport) -> None:
    billing = Table(title="Billed and collected over the demo")
    billing.add_column("")
    for currency in report.revenue:
        billing.add_column(currency, justify="right")
    figures = list(report.revenue.values())
    for label, minor in (("collected", "collected"), ("refunded", "refunded")):
        billing.add_row(label, *(str(Money(getattr(f, minor), f.currency)) for f in figures))
    billing.add_row("failed payments", *(str(f.failed_payments) for f in figures))
    billing.add_row("recovered by dunning", *(str(f.recovered_payments) for f in figures))
    console.print(billing)
    verdict = "balances" if report.journal_balanced else "DOES NOT BALANCE"
    console.print(f"Double-entry journal: every entry {verdict}.")


@app.command()
def send(
    command_type: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. subscription.start")],
    fields: Annotated[
        str,
        typer.Option("--json", help="The command's fields as a JSON object, or - for stdin."),
    ] = "{}",
    direct: Annotated[
        bool, typer.Option(help="Handle it in this process, on the database: no bus.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the reply.")] = 30,
    database_url: DatabaseUrl = None,
) -> None:
    """Send one command over the bus (or --direct) and print its reply, e.g.
    send subscription.pause --json '{"subscription_id": "..."}'.

    A fresh command_id is added unless the JSON has one. Exits with 0 when accepted, 1
    when rejected, 3 when no worker replied in time.
    """
    text = sys.stdin.read() if fields == "-" else fields
    try:
        payload = json.loads(text)
    except ValueError as error:
        raise _fail("invalid_json", f"--json is not JSON: {error}", 2) from None
    if not isinstance(payload, dict):
        raise _fail("invalid_json", "--json is a JSON object of the command's fields", 2)
    if payload.get("type", command_type) != command_type:
        raise _fail("invalid_json", f"--json names type {payload['type']!r}, not {command_type}", 2)
    payload = {"type": command_type, "command_id": uuid4().hex} | payload
    settings = Settings()
    if direct:
        with _ledger(database_url) as ledger:
            raw = json.dumps(payload).encode()
            streams = Streams(settings.bus_prefix)
            reply = answer_directly(raw, ledger, SystemClock(), streams).model_dump(mode="json")
    else:
        reply = _over_the_bus(payload, settings, timeout)
    _print_json(reply)
    if reply["status"] != "accepted":
        raise typer.Exit(1)


def _over_the_bus(payload: dict[str, Any], settings: Settings, timeout: float) -> Any:
    try:
        return request(payload, settings.redis_url, Streams(settings.bus_prefix), timeout)
    except redis.RedisError as error:
        raise _fail(
            "bus_unreachable", f"cannot use Redis at {settings.redis_url}: {error}", 2
        ) from None
    except TimeoutError:
        raise _fail(
            "no_reply", f"no reply within {timeout:g}s: is a worker running (subledger serve)?", 3
        ) from None


@app.command()
def schema(
    command_type: Annotated[
        str | None,
        typer.Argument(metavar="[TYPE]", help="One command type, e.g. subscription.start."),
    ] = None,
) -> None:
    """Print the JSON schema of every command type (or of one), as the bus validates it."""
    if command_type is None:
        _print_json({kind: model.model_json_schema() for kind, model in COMMAND_TYPES.items()})
        return
    if command_type not in COMMAND_TYPES:
        raise _fail(
            "unknown_type", f"no command type {command_type!r}: {', '.join(COMMAND_TYPES)}", 2
        )
    _print_json(COMMAND_TYPES[command_type].model_json_schema())


@app.command()
def asyncapi() -> None:
    """Print the bus's AsyncAPI document (docs/asyncapi.json holds the same)."""
    _print_json(asyncapi_document())


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


@app.command()
def quote(
    plan: Annotated[str, typer.Option(help="The plan to sign up to or change to.")],
    interval: Annotated[
        str | None, typer.Option(help="Billing interval (default: month, or the current one).")
    ] = None,
    customer: Annotated[
        UUID | None, typer.Option(help="A customer (their tax rate and credit apply).")
    ] = None,
    currency: Annotated[
        str | None, typer.Option(help="A prospect's currency (without --customer).")
    ] = None,
    coupon: Annotated[str | None, typer.Option(help="A coupon code to redeem.")] = None,
    trial_days: Annotated[int | None, typer.Option(min=0, help="A per-signup trial.")] = None,
    subscription_id: Annotated[
        UUID | None,
        typer.Option("--subscription", help="Quote a plan change of this subscription."),
    ] = None,
    when: Annotated[
        str | None, typer.Option(help="For a change: now or period_end (default: by rule).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Preview what a signup or a plan change would invoice, recording nothing.

    A signup with a trial shows the invoice due at the trial's end.
    """
    try:
        query = PreviewQuote(
            command_id="cli",
            plan_code=plan,
            interval=interval,
            customer_id=customer,
            currency=currency,
            coupon=coupon,
            trial_days=trial_days,
            subscription_id=subscription_id,
            when=when,
        )
    except ValidationError as error:
        problems = "; ".join(str(problem["msg"]) for problem in error.errors())
        raise _fail("invalid_quote", problems, 2) from None
    with _ledger(database_url) as ledger:
        try:
            answer = preview_quote(query, ledger, SystemClock().now())
        except DomainError as refusal:
            raise _fail(refusal.code, str(refusal)) from None
    _print_json(answer)


@app.command()
def serve(
    once: Annotated[bool, typer.Option(help="Run one tick of the periodic work and stop.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Run a production node until SIGTERM: the bus worker (commands from Redis), and every
    SUBLEDGER_SERVE_INTERVAL seconds the projections, the billing clock, the payment
    processor, the integration-event outbox and the outbound webhooks, and hourly the plan
    suggestions' integration events, against the system clock."""
    settings = Settings()
    clock = SystemClock()

    def report(summary: TickSummary) -> None:
        errors.print(f"{clock.now():%Y-%m-%d %H:%M:%S} {summary.line()}")

    with _projector(database_url) as projections:
        if once:
            report(Ticker(projections, clock, settings).tick())
            return
        with _group_kept():
            run_node(projections, clock, settings, on_tick=report)


@app.command()
def worker(database_url: DatabaseUrl = None) -> None:
    """Run only a bus worker until SIGTERM; several can run side by side (each process is
    a consumer of the group under its own name)."""
    with _projector(database_url) as projections, _group_kept():
        run_node(projections, SystemClock(), Settings(), ticks=False)


@app.command()
def http(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve HTTP until interrupted: the API (/plans, /pricing and /quote for anyone; for
    analysts /stats, /customers, /subscriptions, /suggestions and the /dashboard (a browser
    signs in at /login); for auditors /customers/{id}/history and /audit/*; for services
    /commands: see subledger keys and docs/http.md), the payment providers' webhooks at
    POST /webhooks/{stripe,paypal,razorpay,authorizenet} (each needs its webhook secret
    set: see the README), a health check at /health, the API's OpenAPI at /docs."""
    verifiers = webhook_verifiers()
    if not verifiers:
        errors.print("no provider's webhook secret is set: every webhook will be answered 404")
    with _projector(database_url) as projections:
        projections.setup()  # webhooks find charges in the collections' tables
        keys = KeyStore(projections.database)
        keys.setup()
        clock = SystemClock()
        receiver = GatewayWebhooks(
            projections.ledger, clock, verifiers, projections.database, projections.catch_up
        )
        api = ApiServices(
            projections.ledger, clock, projections.database, projections.catch_up, keys
        )
        uvicorn.run(http_app(receiver, api), host=host, port=port, log_level="info")


@contextmanager
def _keys(database_url: str | None) -> Iterator[KeyStore]:
    with _projector(database_url) as projections:
        keys = KeyStore(projections.database)
        keys.setup()
        yield keys


@keys_app.command("create")
def keys_create(
    role: Annotated[Role, typer.Option(help="What the key may do (admin: everything).")],
    label: Annotated[str, typer.Option(help="Whose key, or what for.")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it: this once only (only its SHA-256 is stored)."""
    with _keys(database_url) as keys:
        key, secret = keys.create(role, label, datetime.now(UTC))
    _print_json(key.as_json() | {"key": secret})
    errors.print("keep the key now: it cannot be shown again")


@keys_app.command("list")
def keys_list(database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """Every API key: id, role, label, when created and revoked (no secret)."""
    with _keys(database_url) as keys:
        found = keys.all_keys()
    if as_json:
        _print_json([key.as_json() for key in found])
        return
    table = Table(title="API keys")
    for column in ("key id", "role", "label", "created", "revoked"):
        table.add_column(column)
    for key in found:
        revoked = "-" if key.revoked_at is None else f"{key.revoked_at:%Y-%m-%d %H:%M}"
        table.add_row(key.key_id, key.role, key.label, f"{key.created_at:%Y-%m-%d %H:%M}", revoked)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (subledger keys list).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an API key: every request with it is refused from now on."""
    with _keys(database_url) as keys:
        try:
            key = keys.revoke(key_id, datetime.now(UTC))
        except UnknownKey as error:
            raise _fail("not_found", str(error)) from None
    _print_json(key.as_json())


@contextmanager
def _group_kept() -> Iterator[None]:
    """A worker that lost its consumer group fails (exit 1), for its supervisor to see."""
    try:
        yield
    except GroupLost as error:
        raise _fail("group_lost", f"{error}: restart the worker to create it again") from None


@app.command()
def stats(
    start: Annotated[
        datetime | None,
        typer.Option("--from", help="First day (default: 30 days up to --to).", **DAY),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option("--to", help="Last day (default: the last day with revenue events).", **DAY),
    ] = None,
    currency: Annotated[
        str | None, typer.Option(help="One currency (default: each one).", show_default=False)
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Revenue figures: MRR, ARR, MRR movements, churn, ARPU, LTV, NRR, trials, and
    money collected, refunded, failed and recovered payments.

    Levels (MRR, customers) are at the end of --to; movements, payments and rates are
    over --from to --to, both days included (UTC). Brings the projections up to date
    first. Amounts in JSON are in minor units; docs/metrics.md defines every figure.
    """
    with _projector(database_url) as projections:
        projections.catch_up()
        db = projections.database
        try:
            to_day = end.date() if end else revenue.last_day(db)
        except revenue.NoRevenueData as error:
            raise _fail("no_data", str(error)) from None
        from_day = start.date() if start else to_day - timedelta(days=revenue.DEFAULT_DAYS - 1)
        if to_day < from_day:
            raise _fail("invalid_range", f"--to {to_day} is before --from {from_day}", 2)
        known = revenue.currencies(db)
        chosen = [currency.upper()] if currency else known
        if currency and currency.upper() not in known:
            raise _fail("unknown_currency", f"no revenue in {currency}; there is: {known}", 2)
        figures = [revenue.figures(db, c, from_day, to_day) for c in chosen]
        by_month = {c: revenue.months(db, c, from_day, to_day) for c in chosen}
    if as_json:
        _print_json(
            {
                "from": from_day.isoformat(),
                "to": to_day.isoformat(),
                "currencies": {
                    f.currency: f.as_json()
                    | {
                        "months": [
                            m.as_json() | {"month": f"{m.start:%Y-%m}"}
                            for m in by_month[f.currency]
                        ]
                    }
                    for f in figures
                },
            }
        )
        return
    reports.headline(console, figures, f"Revenue, {from_day} to {to_day}")
    reports.movements(console, figures, f"MRR movements, {from_day} to {to_day}")
    reports.payments(console, figures, f"Payments, {from_day} to {to_day}")
    reports.subscribers(console, figures)
    for c, month_figures in by_month.items():
        reports.months(console, c, month_figures)


@app.command()
def dashboard(
    out: Annotated[Path, typer.Option(help="The HTML file to write.")],
    currency: Annotated[
        str | None, typer.Option(help="Currency (default: the first with revenue).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the revenue dashboard of the last 12 months as one static HTML file, which
    opens in a browser without a server or internet. Brings the projections up to date first.
    """
    with _projector(database_url) as projections:
        projections.catch_up()
        try:
            page = snapshot(projections.database, currency.upper() if currency else None)
        except revenue.NoRevenueData as error:
            raise _fail("no_data", str(error)) from None
    out.write_text(page, encoding="utf-8")
    console.print(f"Dashboard written to {out}: open file://{out.resolve()} in a browser.")


@app.command()
def history(
    customer_id: Annotated[UUID, typer.Argument(help="The customer's id.")],
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """A customer's transaction history, in order.

    Signups, trials, plan changes (with proration), renewals, pauses, cancellations and
    payment methods. Brings the projections up to date first.
    """
    with _projector(database_url) as projections:
        projections.catch_up()
        lines = customer_history(projections.database, customer_id)
    if not lines:
        raise _fail("not_found", f"no customer {customer_id}")
    if as_json:
        _print_json(
            {"customer_id": str(customer_id), "history": [line.as_json() for line in lines]}
        )
        return
    reports.history(console, str(customer_id), lines)


@app.command("suggestions")
def suggestions_list(
    kind: Annotated[
        SuggestionKind | None, typer.Option(help="One kind (default: both).", show_default=False)
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Customers for whom another plan fits better, for marketing: monthly subscribers who
    paid 6 period invoices or more in a row (the annual plan and its saving), and those
    whose cancel or downgrade is scheduled (a retention offer, the MRR at risk).

    Customers by id (this is the internal list; analysts over HTTP see pseudonyms).
    Amounts in JSON are in minor units. Brings the projections up to date first.
    """
    with _projector(database_url) as projections:
        projections.catch_up()
        found = suggestions(
            projections.database, projections.ledger.plans(), SystemClock().now(), kind
        )
    if as_json:
        _print_json({"suggestions": [s.as_json() for s in found]})
        return
    reports.suggestions(console, found)


@projections_app.command("status")
def projections_status(database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """Each projection's position in the event sequence, its lag and its state."""
    with _projector(database_url) as projections:
        statuses = projections.status()
    if as_json:
        _print_json([s.as_json() for s in statuses])
        return
    reports.positions(console, statuses)


@projections_app.command("catch-up")
def projections_catch_up(database_url: DatabaseUrl = None) -> None:
    """Project every event stored since the last catch-up (what stats and history do first)."""
    with _projector(database_url) as projections:
        with _progress("projecting", "events") as advance:
            read = projections.catch_up(advance)
        statuses = projections.status()
    errors.print(f"projected {read:,} new events")
    reports.positions(console, statuses)


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[
        str | None,
        typer.Argument(
            help="subscriptions, history or revenue (default: all).", show_default=False
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Drop a projection's tables (all projections by default) and replay every event."""
    with _projector(database_url) as projections:
        began = perf_counter()
        try:
            with _progress("rebuilding", "events") as advance:
                read = projections.rebuild([name] if name else [], advance)
        except UnknownProjection as error:
            raise _fail("unknown_projection", str(error), 2) from None
        seconds = perf_counter() - began
        statuses = projections.status()
    rate = f"{read / seconds:,.0f} events/s" if seconds else ""
    errors.print(f"rebuilt {name or 'every projection'}: {read:,} events in {seconds:.1f} s {rate}")
    reports.positions(console, statuses)


@webhooks_app.command("status")
def webhooks_status(
    endpoint: Annotated[
        UUID | None, typer.Option("--endpoint", help="List this endpoint's recent attempts.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many recent attempts.")] = 50,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Each webhook endpoint: its URL, deliveries delivered, pending and failed, the
    oldest pending one and the last error; with --endpoint, its latest attempts."""
    with _projector(database_url) as projections:
        statuses = webhook_status(projections.ledger, projections.database)
        chosen = [s for s in statuses if s.endpoint.endpoint_id == endpoint]
        if endpoint is not None and not chosen:
            raise _fail("not_found", f"no webhook endpoint {endpoint}")
        store = DeliveryStore(projections.database)
        attempts = store.recent_attempts(endpoint, limit) if endpoint else []
    if as_json:
        shown = chosen or statuses
        _print_json(
            [s.as_json() for s in shown]
            if endpoint is None
            else shown[0].as_json() | {"attempts": [a.as_json() for a in attempts]}
        )
        return
    _show_endpoints(chosen or statuses)
    if endpoint is not None:
        _show_attempts(attempts)


_COUNTS = ("delivered", "pending", "failed")


def _show_endpoints(statuses: list[EndpointStatus]) -> None:
    table = Table(title="Webhook endpoints")
    for column in ("endpoint", "url", "events", "state", "delivered", "pending", "failed"):
        table.add_column(column, justify="right" if column in _COUNTS else "left")
    table.add_column("oldest pending")
    table.add_column("last error")
    for s in statuses:
        e, c = s.endpoint, s.counts
        table.add_row(
            str(e.endpoint_id),
            e.url,
            ", ".join(e.event_types),
            "enabled" if e.enabled else "disabled",
            str(c.delivered),
            str(c.pending),
            str(c.failed),
            f"{c.oldest_pending:%Y-%m-%d %H:%M:%S}" if c.oldest_pending else "-",
            f"{s.last_error[0]:%Y-%m-%d %H:%M:%S} {s.last_error[1]}" if s.last_error else "-",
        )
    console.print(table)


def _show_attempts(attempts: list[AttemptView]) -> None:
    table = Table(title="Recent attempts, newest first")
    for column in ("at", "event", "type", "customer", "attempt", "answer", "ms", "delivery"):
        table.add_column(column)
    for a in attempts:
        state = a.delivery_status
        if a.next_attempt_at is not None:
            state += f", next {a.next_attempt_at:%Y-%m-%d %H:%M:%S}"
        table.add_row(
            f"{a.attempted_at:%Y-%m-%d %H:%M:%S}",
            a.event_id,
            a.event_type,
            a.ordering_key,
            str(a.attempt),
            a.error or str(a.status_code),
            str(a.duration_ms),
            state,
        )
    console.print(table)


@webhooks_app.command("secret")
def webhooks_secret(
    endpoint_id: Annotated[UUID, typer.Argument(help="The endpoint's id.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Print an endpoint's signing secret (derived from SUBLEDGER_WEBHOOK_SIGNING_KEY,
    stored nowhere), for its receiver to verify deliveries with."""
    with _ledger(database_url) as ledger:
        try:
            webhook_endpoint(ledger, endpoint_id)
        except DomainError as refusal:
            raise _fail(refusal.code, str(refusal)) from None
    try:
        secret = endpoint_secret(Settings().webhook_signing_key, endpoint_id)
    except WebhookSigningKeyMissing as error:
        raise _fail("webhook_signing_key_missing", str(error), 2) from None
    _print_json({"endpoint_id": str(endpoint_id), "signing_secret": secret})


@audit_app.command("verify")
def audit_verify(
    anchor_file: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="An anchor taken earlier (audit anchor --out): also catches the newest "
            "events deleted, or the chain recomputed, since.",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Walk the hash chain over every stored event; name the first broken link.

    Exit code 0 if the chain is intact, 1 if a link is broken."""
    try:
        given = Anchor.from_json(anchor_file.read_text()) if anchor_file else None
    except (OSError, ValueError) as error:
        raise _fail("invalid_anchor", f"cannot read the anchor {anchor_file}: {error}", 2) from None
    with _ledger(database_url) as ledger:
        try:
            recorder = chain_recorder(ledger)
        except NoChain as error:
            raise _fail("no_chain", str(error), 2) from None
        with _progress("verifying", "events") as advance:
            report = verify(recorder, given, advance)
    if as_json:
        _print_json(report.to_dict())
    elif report.broken is None:
        head = report.head
        at = f", head {head.head} at position {head.position}" if head else ""
        checked = "and the anchor " if given else ""
        console.print(f"[green]intact[/]: {report.checked:,} events {checked}verified{at}")
    else:
        broken = report.broken
        console.print(f"[red]broken at position {broken.position}[/] ({broken.kind})")
        console.print(broken.message, markup=False)
    if not report.intact:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Also write the anchor (JSON) to this file.", show_default=False
        ),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option(
            "--stream",
            help="Also add it to this Redis stream (SUBLEDGER_REDIS_URL), field data.",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print the head of the hash chain (position, hash, count) as JSON.

    Keep it where the database's administrators cannot write: verify --anchor checks the
    chain against it."""
    with _ledger(database_url) as ledger:
        try:
            taken = anchor(chain_recorder(ledger))
        except NoChain as error:
            raise _fail("no_chain", str(error), 2) from None
    text = taken.to_json()
    if out is not None:
        try:
            out.write_text(text + "\n")
        except OSError as error:
            raise _fail("cannot_write", f"cannot write {out}: {error}", 2) from None
    if stream is not None:
        settings = Settings()
        try:
            with redis.Redis.from_url(settings.redis_url) as client:
                client.xadd(stream, {"data": text})
        except redis.RedisError as error:
            raise _fail(
                "redis_unreachable", f"cannot use Redis at {settings.redis_url}: {error}", 2
            ) from None
    sys.stdout.write(text + "\n")


def _instant(text: str | None) -> datetime | None:
    """An ISO 8601 instant from the command line; UTC when it names no offset."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(
            "invalid_instant", f"{text!r} is not an ISO 8601 instant, e.g. 2025-03-31T12:00Z", 2
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@audit_app.command("replay")
def audit_replay(
    customer_id: Annotated[UUID, typer.Argument(help="The customer's id.")],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The instant, ISO 8601 (2025-03-31, 2025-03-31T12:00:00+02:00; UTC when no "
            "offset). Default: everything stored.",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """A customer's account as of an instant, from the event store.

    Its events in order (customer, subscriptions, invoices and their payments and
    refunds), then the state of each as it stood at --as-of: what the ledger knew then.
    Reads stored history, not projections."""
    instant = _instant(as_of)
    with _ledger(database_url) as ledger:
        try:
            account = replay(ledger, customer_id, instant)
        except NoChain as error:
            raise _fail("no_chain", str(error), 2) from None
        if account.stored == 0:
            raise _fail("not_found", f"no customer {customer_id}")
        if as_json:
            _print_json(account.as_json())
            return
        _show_replay(account)


def _show_replay(account: Replay) -> None:
    when = "now" if account.as_of is None else account.as_of.isoformat()
    events = Table(title=f"Account of customer {account.customer_id} as of {when}")
    events.add_column("position", justify="right")
    events.add_column("when", no_wrap=True)
    events.add_column("event", no_wrap=True)
    events.add_column("aggregate", overflow="fold")
    events.add_column("version", justify="right")
    for e in account.events:
        events.add_row(
            str(e.position),
            f"{e.timestamp:%Y-%m-%d %H:%M}",
            e.type,
            str(e.aggregate_id),
            str(e.event.originator_version),
        )
    console.print(events)
    later = account.stored - len(account.events)
    if later:
        console.print(f"{later} later event(s) of the account are not shown")
    if account.customer is None:
        console.print("The customer did not exist yet.")
        return
    c = account.customer
    console.print(
        f"Customer {c.name} <{c.email}>, {c.currency}, credit {c.credit_balance}, "
        f"{len(c.payment_methods)} payment method(s)",
        markup=False,
    )
    subscriptions = Table(title="Subscriptions")
    for column in ("subscription", "status", "plan", "period", "cancel at", "MRR"):
        subscriptions.add_column(column)
    for sub in account.subscriptions:
        subscriptions.add_row(
            str(sub.id),
            sub.status.value,
            sub.price.id,
            f"{sub.period.start:%Y-%m-%d} to {sub.period.end:%Y-%m-%d}",
            f"{sub.cancel_at:%Y-%m-%d}" if sub.cancel_at else "",
            str(sub.mrr),
        )
    console.print(subscriptions)
    invoices = Table(title="Invoices")
    for column in ("invoice", "reason", "status"):
        invoices.add_column(column)
    for column in ("total", "paid", "refunded"):
        invoices.add_column(column, justify="right")
    for i in account.invoices:
        invoices.add_row(
            i.number, i.reason, i.status.value, str(i.total), str(i.amount_paid), str(i.refunded)
        )
    console.print(invoices)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="The JSON Lines file to write.")],
    customer_id: Annotated[
        UUID | None,
        typer.Argument(
            help="Only this customer's account (default: every event).", show_default=False
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write stored events, with their positions and hashes, as JSON Lines.

    Each line holds an event's position, stored fields, chain hash and the hash before it,
    then a summary line: docs/audit.md states the format, and docs/verify_chain.py checks
    such a file with nothing but Python."""
    with _ledger(database_url) as ledger:
        try:
            with out.open("w", encoding="utf-8") as file:
                summary = export(ledger, file, customer_id)
        except NoChain as error:
            raise _fail("no_chain", str(error), 2) from None
        except OSError as error:
            raise _fail("cannot_write", f"cannot write {out}: {error}", 2) from None
    _print_json({"out": str(out), **summary.as_json()["summary"]})
