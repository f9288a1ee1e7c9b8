"""The analysts' command line: ``stats``, ``history`` and ``projections status|rebuild``,
as a user types them, on ledgers built by ``subledger demo`` or ``subledger send``."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Notification
from typer.testing import CliRunner, Result

from commands.bootstrap import bootstrap
from commands.cli import app
from ledger.application import Ledger
from ledger.customers import Customer
from ledger.subscriptions import Subscription
from projections import all_projections

runner = CliRunner()

PROJECTIONS = [projection.name for projection in all_projections()]
PROJECTION_TABLES = (
    "current_subscriptions",
    "due_work",
    "transaction_history",
    "history_subscriptions",
    "revenue_days",
    "revenue_plan_days",
    "revenue_subscriptions",
    "revenue_customers",
)
# What the design asks ``stats`` for, per currency.
FIGURES = {
    "currency",
    "from",
    "to",
    "mrr_at_start",
    "mrr",
    "arr",
    "mrr_movements",
    "paying_customers_at_start",
    "paying_customers",
    "new_customers",
    "reactivated_customers",
    "churned_customers",
    "customers",
    "arpu",
    "ltv",
    "customer_churn_rate",
    "revenue_churn_rate",
    "net_revenue_retention",
    "trials_started",
    "trials_converted",
    "trials_not_converted",
    "trial_conversion_rate",
    "collected",
    "refunded",
    "failed_payments",
    "recovered_payments",
    "recovered",
    "subscribers",
    "months",
}
MOVEMENTS = {"new", "expansion", "contraction", "churn", "reactivation"}
# Demo: START 2025-01-01 00:00 UTC, three months: the clock's last run is 2025-04-01.
DEMO_END = date(2025, 4, 1)


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def run(*args: str) -> tuple[int, Any]:
    """Exit code and the JSON the command printed."""
    result = invoke(*args)
    return result.exit_code, json.loads(result.stdout)


def build_demo(url: str) -> str:
    code, report = run(
        "demo", "--database-url", url, "--json", "--customers", "30", "--months", "3"
    )
    assert code == 0, report
    return url


@pytest.fixture
def demo_url(sqlite_url: str) -> str:
    return build_demo(sqlite_url)


def send(url: str, type: str, **fields: Any) -> dict[str, Any]:
    code, answer = run(
        "send", type, "--json", json.dumps(fields), "--direct", "--database-url", url
    )
    assert code == 0, answer
    assert isinstance(answer, dict)
    result: dict[str, Any] = answer["result"]
    return result


def decoded(ledger: Ledger, notification: Notification) -> Any:
    """A stored event as the domain event it records."""
    return ledger.mapper.to_domain_event(notification)


def mrr_at_end_of(ledger: Ledger, last: date) -> Counter[str]:
    """MRR per currency at the end of ``last``, from each subscription's own events."""
    totals: Counter[str] = Counter()
    for subscription_id in ledger.ids_of(Subscription):
        sub: Subscription | None = None
        events: list[Any] = list(ledger.events.get(subscription_id))
        for event in events:
            if event.timestamp.date() > last:
                break
            sub = event.mutate(sub)
        if isinstance(sub, Subscription):
            totals[sub.price.currency] += sub.mrr.amount
    return totals


def net(movements: dict[str, int]) -> int:
    return (
        movements["new"]
        + movements["expansion"]
        - movements["contraction"]
        - movements["churn"]
        + movements["reactivation"]
    )


def test_stats_json_has_every_figure_for_each_currency(demo_url: str) -> None:
    code, answer = run("stats", "--json", "--database-url", demo_url)
    assert code == 0
    assert set(answer) == {"from", "to", "currencies"}
    assert set(answer["currencies"]) == {"EUR", "USD"}
    with bootstrap(demo_url) as ledger:
        mrr = mrr_at_end_of(ledger, date.fromisoformat(answer["to"]))
    for currency, figures in answer["currencies"].items():
        assert set(figures) >= FIGURES, FIGURES - set(figures)
        assert (figures["currency"], figures["from"], figures["to"]) == (
            currency,
            answer["from"],
            answer["to"],
        )
        assert set(figures["mrr_movements"]) == MOVEMENTS
        assert figures["mrr"] == figures["mrr_at_start"] + net(figures["mrr_movements"])
        assert figures["mrr"] == mrr[currency] > 0
        assert figures["arr"] == 12 * figures["mrr"]
        assert figures["customers"] > 0
        assert sum(line["mrr"] for line in figures["subscribers"]) == figures["mrr"]
        assert {"plan", "status", "subscribers", "mrr"} == set(figures["subscribers"][0])
        assert figures["months"], currency
        assert figures["months"][-1]["mrr"] == figures["mrr"]
        # Renewals were paid in the last 30 days; recoveries are part of what was collected.
        assert figures["collected"] > 0
        assert 0 <= figures["recovered"] <= figures["collected"]
        assert sum(m["collected"] for m in figures["months"]) >= figures["collected"]


def test_stats_json_gives_every_month_the_range_touches(demo_url: str) -> None:
    """Each currency gets every calendar month that overlaps the range, even one in which
    that currency saw no event: its MRR carries over."""
    code, answer = run(
        "stats", "--json", "--from", "2025-03-03", "--to", "2025-04-01", "--database-url", demo_url
    )
    assert code == 0
    for currency, figures in answer["currencies"].items():
        months = figures["months"]
        assert [m["month"] for m in months] == ["2025-03", "2025-04"], currency
        assert months[-1]["mrr"] == figures["mrr"], currency


def test_stats_defaults_to_the_30_days_up_to_the_last_day_with_events(demo_url: str) -> None:
    with bootstrap(demo_url) as ledger:
        # The last instant anything happened to a customer or a subscription.
        last = max(
            decoded(ledger, n).timestamp
            for n in ledger.recorder.select_notifications(1, 1_000_000)
            if n.topic.startswith(("ledger.customers:", "ledger.subscriptions:"))
        )
    # The demo's clock renews what is due at its very end, 2025-04-01 00:00 UTC.
    assert last == datetime(2025, 4, 1, tzinfo=UTC)
    code, answer = run("stats", "--json", "--database-url", demo_url)
    assert code == 0
    # 30 days, both included: Mar 3 to Apr 1.
    assert (answer["from"], answer["to"]) == ("2025-03-03", DEMO_END.isoformat())
    assert DEMO_END - timedelta(days=29) == date(2025, 3, 3)


def test_stats_from_to_and_currency_filters(demo_url: str) -> None:
    code, quarter = run(
        "stats", "--json", "--from", "2025-01-01", "--to", "2025-03-31", "--database-url", demo_url
    )
    assert code == 0
    assert (quarter["from"], quarter["to"]) == ("2025-01-01", "2025-03-31")
    eur_months = quarter["currencies"]["EUR"]["months"]
    assert [m["month"] for m in eur_months] == ["2025-01", "2025-02", "2025-03"]

    code, february = run(
        "stats",
        "--json",
        "--from",
        "2025-02-01",
        "--to",
        "2025-02-28",
        "--currency",
        "eur",
        "--database-url",
        demo_url,
    )
    assert code == 0
    assert (february["from"], february["to"]) == ("2025-02-01", "2025-02-28")
    assert list(february["currencies"]) == ["EUR"]
    eur = february["currencies"]["EUR"]
    with bootstrap(demo_url) as ledger:
        assert eur["mrr"] == mrr_at_end_of(ledger, date(2025, 2, 28))["EUR"]
        assert eur["mrr_at_start"] == mrr_at_end_of(ledger, date(2025, 1, 31))["EUR"]
    # The month of February, read from the monthly view, tells the same story.
    same = eur_months[1]
    for key in (
        "mrr_at_start",
        "mrr",
        "mrr_movements",
        "paying_customers_at_start",
        "paying_customers",
        "new_customers",
        "reactivated_customers",
        "churned_customers",
        "customers",
        "trials_started",
        "trials_converted",
        "trials_not_converted",
        "customer_churn_rate",
        "revenue_churn_rate",
        "net_revenue_retention",
        "trial_conversion_rate",
        "collected",
        "refunded",
        "failed_payments",
        "recovered_payments",
        "recovered",
    ):
        assert eur[key] == same[key], key
    # --to alone: the 30 days before it.
    code, answer = run("stats", "--json", "--to", "2025-02-28", "--database-url", demo_url)
    assert code == 0
    assert (answer["from"], answer["to"]) == ("2025-01-30", "2025-02-28")


def test_stats_refuses_what_it_cannot_answer(demo_url: str, tmp_path: Path) -> None:
    code, answer = run("stats", "--json", "--currency", "GBP", "--database-url", demo_url)
    assert (code, answer["error"]) == (2, "unknown_currency")
    code, answer = run(
        "stats", "--json", "--from", "2025-03-01", "--to", "2025-02-01", "--database-url", demo_url
    )
    assert (code, answer["error"]) == (2, "invalid_range")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    code, answer = run("stats", "--json", "--database-url", empty)
    assert (code, answer["error"]) == (1, "no_data")
    # A catalog alone is no revenue either.
    send(empty, type="plan.create", command_id="p1", code="basic", name="Basic")
    code, answer = run("stats", "--json", "--database-url", empty)
    assert (code, answer["error"]) == (1, "no_data")


def test_stats_renders_tables(demo_url: str) -> None:
    result = invoke("stats", "--database-url", demo_url)
    assert result.exit_code == 0, result.output
    for text in ("MRR", "ARR", "EUR", "USD", "churn", "By month", "Payments", "collected"):
        assert text in result.stdout, text


def customer_story(url: str) -> UUID:
    """A customer's life through ``subledger send``, on the wall clock."""
    send(url, type="plan.create", command_id="p1", code="basic", name="Basic")
    send(
        url, type="plan.add_price", command_id="p2", plan_code="basic", currency="EUR", amount=1000
    )
    send(url, type="plan.create", command_id="p3", code="pro", name="Pro")
    send(url, type="plan.add_price", command_id="p4", plan_code="pro", currency="EUR", amount=2000)
    customer = send(
        url,
        type="customer.register",
        command_id="c1",
        email="ann@example.com",
        name="Ann",
        currency="EUR",
    )["customer_id"]
    send(
        url,
        type="customer.add_payment_method",
        command_id="c2",
        customer_id=customer,
        payment_method_id="pm_1",
        token="tok_1",
        last4="4242",
        exp_month=12,
        exp_year=2099,
    )
    sub = send(
        url, type="subscription.start", command_id="s1", customer_id=customer, plan_code="basic"
    )["subscription_id"]
    send(
        url, type="subscription.change_plan", command_id="s2", subscription_id=sub, plan_code="pro"
    )
    send(url, type="subscription.pause", command_id="s3", subscription_id=sub)
    send(url, type="subscription.resume", command_id="s4", subscription_id=sub)
    send(url, type="subscription.cancel", command_id="s5", subscription_id=sub)
    return UUID(customer)


def test_history_json_lists_a_customers_life_in_order(sqlite_url: str) -> None:
    customer = customer_story(sqlite_url)
    code, answer = run("history", str(customer), "--json", "--database-url", sqlite_url)
    assert code == 0
    assert answer["customer_id"] == str(customer)
    lines = answer["history"]
    # Each invoice comes just after the event that called for it (recorded together);
    # no payment processor runs here, so no payment is recorded.
    assert [line["kind"] for line in lines] == [
        "customer.registered",
        "customer.payment_method_added",
        "subscription.started",
        "invoice.issued",
        "subscription.plan_changed",
        "invoice.issued",
        "subscription.paused",
        "subscription.resumed",
        "subscription.cancel_scheduled",
    ]
    positions = [line["position"] for line in lines]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    instants = [datetime.fromisoformat(line["occurred_at"]) for line in lines]
    assert instants == sorted(instants)
    started, first_invoice, changed, change_invoice = lines[2:6]
    assert (started["price_id"], started["amount"]) == ("basic-month-eur-v1", 1000)
    assert (first_invoice["currency"], first_invoice["amount"]) == ("EUR", 1000)
    assert (changed["previous_price_id"], changed["price_id"]) == (
        "basic-month-eur-v1",
        "pro-month-eur-v1",
    )
    # Changed seconds into the month: almost all of it is credited and charged.
    assert changed["amount"] == changed["proration_charge"] - changed["proration_credit"]
    assert 990 <= changed["proration_credit"] <= 1000
    assert 1980 <= changed["proration_charge"] <= 2000
    # The upgrade's invoice: the proration, charge less credit.
    assert change_invoice["amount"] == changed["amount"]

    result = invoke("history", str(customer), "--database-url", sqlite_url)
    assert result.exit_code == 0, result.output
    for text in ("History of customer", "subscription.started", "10.00 EUR"):
        assert text in result.stdout, text

    code, answer = run("history", str(uuid4()), "--json", "--database-url", sqlite_url)
    assert (code, answer["error"]) == (1, "not_found")


# The history kind of each event, by hand (the events of docs/commands.md).
KINDS = {
    "Customer.Registered": "customer.registered",
    "Customer.ContactChanged": "customer.contact_changed",
    "Customer.PaymentMethodAdded": "customer.payment_method_added",
    "Customer.DefaultPaymentMethodSwitched": "customer.default_payment_method_switched",
    "Customer.CreditAdjusted": "customer.credit_adjusted",
    "Subscription.Renewed": "subscription.renewed",
    "Subscription.PlanChanged": "subscription.plan_changed",
    "Subscription.ChangeScheduled": "subscription.change_scheduled",
    "Subscription.ScheduledChangeCanceled": "subscription.scheduled_change_canceled",
    "Subscription.CancelScheduled": "subscription.cancel_scheduled",
    "Subscription.CancelRevoked": "subscription.cancel_revoked",
    "Subscription.Canceled": "subscription.canceled",
    "Subscription.Paused": "subscription.paused",
    "Subscription.Resumed": "subscription.resumed",
}

# Kinds this test knows; lines of events added later are left out of the comparison.
KNOWN = {
    *KINDS.values(),
    "subscription.started",
    "subscription.trial_started",
    "subscription.trial_converted",
    "subscription.trial_expired",
}


def kind_of(event: Any) -> str | None:
    if isinstance(event, Subscription.Started):
        return "subscription.trial_started" if event.trial_end else "subscription.started"
    if isinstance(event, Subscription.TrialEnded):
        return "subscription.trial_converted" if event.converted else "subscription.trial_expired"
    return KINDS.get(type(event).__qualname__)


def expected_histories(ledger: Ledger) -> dict[UUID, list[str]]:
    """Each customer's event kinds, in time order then in the order stored."""
    owner: dict[UUID, UUID] = {}
    lines: dict[UUID, list[tuple[datetime, int, str]]] = {}
    for notification in ledger.recorder.select_notifications(1, 1_000_000):
        event = decoded(ledger, notification)
        kind = kind_of(event)
        if isinstance(event, Customer.Registered):
            lines[event.originator_id] = []
        if isinstance(event, Subscription.Started):
            owner[event.originator_id] = event.customer_id
        if kind is None:
            continue
        customer = owner.get(event.originator_id, event.originator_id)
        lines[customer].append((event.timestamp, notification.id, kind))
    return {customer: [kind for *_, kind in sorted(found)] for customer, found in lines.items()}


def test_history_json_of_every_demo_customer_follows_the_event_store(demo_url: str) -> None:
    with bootstrap(demo_url) as ledger:
        expected = expected_histories(ledger)
    assert len(expected) == 30
    for customer, kinds in expected.items():
        code, answer = run("history", str(customer), "--json", "--database-url", demo_url)
        assert code == 0
        assert [line["kind"] for line in answer["history"] if line["kind"] in KNOWN] == kinds


def test_projections_status_before_and_after_catching_up(sqlite_url: str) -> None:
    customer_story(sqlite_url)
    with bootstrap(sqlite_url) as ledger:
        head = ledger.recorder.max_notification_id()
    assert head is not None
    code, statuses = run("projections", "status", "--json", "--database-url", sqlite_url)
    assert code == 0
    assert [s["name"] for s in statuses] == PROJECTIONS
    for status in statuses:
        assert status["state"] == "not built yet"
        assert (status["stored_version"], status["position"]) == (None, 0)
        assert (status["head"], status["lag"]) == (head, head)
    result = invoke("projections", "status", "--database-url", sqlite_url)
    assert result.exit_code == 0
    assert "not built yet" in result.stdout

    assert run("stats", "--json", "--database-url", sqlite_url)[0] == 0
    code, statuses = run("projections", "status", "--json", "--database-url", sqlite_url)
    assert code == 0
    assert [s["name"] for s in statuses] == PROJECTIONS
    for status in statuses:
        assert status["state"] == "up to date"
        assert (status["position"], status["head"], status["lag"]) == (head, head, 0)
        assert status["stored_version"] == status["version"]


def tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in PROJECTION_TABLES
        }


def test_projections_rebuild_gives_the_same_tables(demo_url: str) -> None:
    before = tables(demo_url)
    assert all(before[table] for table in PROJECTION_TABLES)
    result = invoke("projections", "rebuild", "--database-url", demo_url)
    assert result.exit_code == 0, result.output
    assert tables(demo_url) == before
    result = invoke("projections", "rebuild", "history", "--database-url", demo_url)
    assert result.exit_code == 0, result.output
    assert "history" in result.stdout
    assert tables(demo_url) == before
    code, statuses = run("projections", "status", "--json", "--database-url", demo_url)
    assert code == 0
    assert [(s["name"], s["lag"], s["state"]) for s in statuses] == [
        (name, 0, "up to date") for name in PROJECTIONS
    ]
    code, answer = run("projections", "rebuild", "nope", "--database-url", demo_url)
    assert (code, answer["error"]) == (2, "unknown_projection")
    assert tables(demo_url) == before


@pytest.mark.postgres
def test_postgresql_answers_as_sqlite_does(sqlite_url: str, postgres_url: str) -> None:
    for url in (sqlite_url, postgres_url):
        build_demo(url)
    answers = []
    for url in (sqlite_url, postgres_url):
        code, whole = run(
            "stats", "--json", "--from", "2025-01-01", "--to", "2025-04-01", "--database-url", url
        )
        assert code == 0
        code, recent = run("stats", "--json", "--database-url", url)
        assert code == 0
        answers.append((whole, recent))
    assert answers[0] == answers[1]
    with bootstrap(postgres_url) as ledger:
        customers = list(ledger.ids_of(Customer))
        expected = expected_histories(ledger)
    histories = []
    for url in (sqlite_url, postgres_url):
        code, answer = run("history", str(customers[0]), "--json", "--database-url", url)
        assert code == 0
        histories.append(
            [{k: v for k, v in line.items() if k != "position"} for line in answer["history"]]
        )
    assert histories[0] == histories[1]
    assert [line["kind"] for line in histories[1] if line["kind"] in KNOWN] == expected[
        customers[0]
    ]
    code, statuses = run("projections", "status", "--json", "--database-url", postgres_url)
    assert code == 0
    assert [(s["name"], s["lag"], s["state"]) for s in statuses] == [
        (name, 0, "up to date") for name in PROJECTIONS
    ]
    assert (
        invoke("projections", "rebuild", "revenue", "--database-url", postgres_url).exit_code == 0
    )
    code, whole = run(
        "stats",
        "--json",
        "--from",
        "2025-01-01",
        "--to",
        "2025-04-01",
        "--database-url",
        postgres_url,
    )
    assert (code, whole) == (0, answers[0][0])
