"""The ``subledger`` command line, as a user types it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from commands.cli import app

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    """Exit code and the JSON the command printed."""
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, json.loads(result.stdout)


def test_the_demo_is_reproducible_and_never_doubles_a_redelivery(tmp_path: Path) -> None:
    answers = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        code, answer = run(
            "demo",
            "--customers",
            "40",
            "--months",
            "3",
            "--seed",
            "3",
            "--json",
            "--database-url",
            url,
        )
        assert code == 0
        assert isinstance(answer, dict)
        answers.append({k: v for k, v in answer.items() if k != "database_url"})
    assert answers[0] == answers[1]
    report = answers[0]
    assert report["customers"] == 40
    assert sum(report["subscriptions_by_status"].values()) == 40
    assert report["events"] == sum(report["events_by_type"].values())
    assert report["redeliveries"] > 0
    assert report["events_added_by_redeliveries"] == 0


def test_the_demo_refuses_a_database_that_is_not_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert run("demo", "--customers", "5", "--months", "1", "--json", "--database-url", url)[0] == 0
    code, answer = run("demo", "--json", "--database-url", url)
    assert (code, answer["error"]) == (2, "database_not_empty")


@pytest.mark.postgres
def test_send_and_catalog_honour_the_database_url_from_the_environment(postgres_url: str) -> None:
    env = {"SUBLEDGER_DATABASE_URL": postgres_url}
    plan = '{"code": "pro", "name": "Pro"}'
    assert run("send", "plan.create", "--json", plan, "--direct", env=env)[0] == 0
    price = '{"command_id": "p2", "plan_code": "pro", "currency": "JPY", "amount": 1500, '
    price += '"interval": "year"}'
    assert run("send", "plan.add_price", "--json", price, "--direct", env=env) == (
        0,
        {
            "command_id": "p2",
            "status": "accepted",
            "result": {"price_id": "pro-year-jpy-v1", "version": 1},
            "error": None,
        },
    )
    unpriced = '{"code": "free", "name": "Free"}'
    assert run("send", "plan.create", "--json", unpriced, "--direct", env=env)[0] == 0
    code, plans = run("catalog", "--json", env=env)
    assert code == 0
    assert plans == [
        {
            "plan": "pro",
            "name": "Pro",
            "description": "",
            "features": [],
            "archived": False,
            "prices": [
                {
                    "price_id": "pro-year-jpy-v1",
                    "amount": 1500,
                    "currency": "JPY",
                    "interval": "year",
                    "trial_days": 0,
                    "archived": False,
                }
            ],
        },
        {
            "plan": "free",
            "name": "Free",
            "description": "",
            "features": [],
            "archived": False,
            "prices": [],
        },
    ]


def test_send_explains_refusals_and_invalid_commands(sqlite_url: str) -> None:
    def send(kind: str, fields: str) -> tuple[int, Any]:
        return run("send", kind, "--json", fields, "--direct", "--database-url", sqlite_url)

    code, answer = send(
        "customer.register", '{"email": "x@example.com", "name": "X", "currency": "EUR"}'
    )
    assert (code, answer["status"]) == (0, "accepted")
    card = json.dumps(
        {
            "command_id": "m1",
            "customer_id": answer["result"]["customer_id"],
            "payment_method_id": "pm_1",
            "token": "4242424242424242",
            "last4": "4242",
            "exp_month": 1,
            "exp_year": 2040,
        }
    )
    code, answer = send("customer.add_payment_method", card)
    assert (code, answer["status"], answer["error"]["code"]) == (1, "rejected", "rule_violation")
    assert answer["error"]["details"] == {"rule": "card_number_not_allowed"}
    code, answer = send("nope", "{}")
    assert (code, answer["error"]["code"]) == (1, "unknown_type")
    code, answer = send(
        "customer.add_payment_method", card.replace('"exp_month": 1', '"exp_month": "1"')
    )
    assert (code, answer["error"]["code"]) == (1, "validation_failed")
    assert answer["error"]["message"] == "exp_month: Input should be a valid integer"
    code, answer = run("send", "plan.create", "--json", "[1]", "--direct")
    assert (code, answer["error"]) == (2, "invalid_json")
    for url in ("sqlite:////proc/no.db", "postgresql://postgres@127.0.0.1/test?sslmode=require"):
        code, answer = run("catalog", "--database-url", url)
        assert code == 2
        assert answer["error"] in ("database_error", "invalid_database_url")
    code, answer = run("catalog", "--database-url", "mysql://x/y")
    assert (code, answer["error"]) == (2, "invalid_database_url")


@pytest.mark.postgres
def test_the_demo_tells_the_same_story_on_sqlite_and_postgresql(
    sqlite_url: str, postgres_url: str
) -> None:
    answers = []
    for url in (sqlite_url, postgres_url):
        code, answer = run(
            "demo", "--customers", "30", "--months", "2", "--json", "--database-url", url
        )
        assert code == 0
        assert isinstance(answer, dict)
        answers.append({k: v for k, v in answer.items() if k != "database_url"})
    assert answers[0] == answers[1]


def test_the_given_database_wins_over_stray_library_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_SQLITE_DBNAME", str(tmp_path / "stray.db"))
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.popo")
    url = f"sqlite:///{tmp_path / 'given.db'}"
    plan = '{"code": "pro", "name": "Pro"}'
    assert run("send", "plan.create", "--json", plan, "--direct", "--database-url", url)[0] == 0
    assert (tmp_path / "given.db").exists()
    assert not (tmp_path / "stray.db").exists()
    assert run("catalog", "--json", "--database-url", url)[1][0]["plan"] == "pro"
