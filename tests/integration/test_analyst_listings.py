"""Analysts' listings over HTTP: customers and subscriptions filtered and paged, a
customer's transactions, all by pseudonym and without personal data. On SQLite and
PostgreSQL.

Besides the ``api`` fixture's Ann (Basic, 10 EUR a month), six customers sign up on
2025-01-31 09:00: Annabel on Basic; Bartholomew on Pro monthly, in its 14-day trial;
Cordelia on Pro yearly (200 EUR: MRR 20000 / 12 = 1666.67, so 1667) and Basic; Desmond on
Basic, canceled at once; Eulalia on Basic, canceled at the period's end (2025-02-28);
Florian on Basic in USD (12 USD a month).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from base64 import b32encode
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from commands import schemas as s
from commands.api_keys import Role
from commands.pseudonyms import Pseudonyms
from ledger.application import PERSONAL_DATA_KEY
from ledger.personal_data import master_key
from tests.integration import test_http_api
from tests.integration.conftest import Shop
from tests.integration.test_http_api import Api

api = test_http_api.api  # the fixture: a shop, its HTTP client and a key of each role


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    phone: str | None
    customer_id: UUID


PEOPLE = {
    "Annabel Quixote": ("annabel.quixote@example.com", "+442071234567", "EUR"),
    "Bartholomew Zylstra": ("b.zylstra@example.net", "+4915112345678", "EUR"),
    "Cordelia Wexford": ("cordelia@wexford.example", None, "EUR"),
    "Desmond Oyelaran": ("desmond.o@example.org", "+14155550123", "EUR"),
    "Eulalia Fairbairn": ("eulalia@fairbairn.example", None, "EUR"),
    "Florian Kowalczyk": ("florian.k@example.com", "+48601234567", "USD"),
}


@dataclass
class Listed:
    api: Api
    shop: Shop
    people: dict[str, Person]
    subscriptions: dict[str, list[UUID]]
    pseudonyms: Pseudonyms

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.call("GET", path, Role.ANALYST, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def status(self, path: str, **params: Any) -> int:
        return int(self.api.call("GET", path, Role.ANALYST, params=params).status_code)

    def pseudonym(self, name: str) -> str:
        return self.pseudonyms.of(self.people[name].customer_id)

    def name_of(self, item: dict[str, Any]) -> str:
        """Whose item it is, by first name (``Ann`` for the fixture's customer)."""
        by_pseudonym = {self.pseudonym(name): name.split()[0] for name in self.people}
        return by_pseudonym[item["customer"]]

    def names(self, items: list[dict[str, Any]]) -> list[str]:
        return sorted(map(self.name_of, items))


@pytest.fixture
def listed(api: Api, shop: Shop) -> Listed:
    shop.send(s.AddPrice, plan_code="basic", currency="USD", amount=1200)
    people = {"Ann": Person("Ann", "ann@example.com", None, api.customer_id)}
    subscriptions: dict[str, list[UUID]] = {"Ann": []}
    for name, (email, phone, currency) in PEOPLE.items():
        reply = shop.send(
            s.RegisterCustomer, email=email, name=name, currency=currency, phone=phone
        )
        people[name] = Person(name, email, phone, UUID(reply["customer_id"]))
        shop.card(people[name].customer_id)

    def subscribe(name: str, plan: str, interval: str = "month") -> UUID:
        subscription_id = shop.subscribe(people[name].customer_id, plan, interval=interval)
        subscriptions.setdefault(name, []).append(subscription_id)
        return subscription_id

    subscribe("Annabel Quixote", "basic")
    subscribe("Bartholomew Zylstra", "pro")
    subscribe("Cordelia Wexford", "pro", "year")
    subscribe("Cordelia Wexford", "basic")
    desmond = subscribe("Desmond Oyelaran", "basic")
    shop.send(s.CancelSubscription, subscription_id=desmond, when="now")
    eulalia = subscribe("Eulalia Fairbairn", "basic")
    shop.send(s.CancelSubscription, subscription_id=eulalia, when="period_end")
    subscribe("Florian Kowalczyk", "basic")
    shop.pay()
    return Listed(api, shop, people, subscriptions, Pseudonyms.of_ledger(shop.ledger))


def walk(listed: Listed, path: str, limit: int, **filters: Any) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following its cursors."""
    pages, cursor = [], None
    while True:
        page = listed.get(path, limit=limit, **filters, **({"cursor": cursor} if cursor else {}))
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


def test_customers_with_their_figures(listed: Listed) -> None:
    items = listed.get("/customers")["items"]
    by_name = {listed.name_of(item): item for item in items}
    assert {
        name: (c["currency"], c["mrr"], c["status"], c["plans"], c["paying"])
        for name, c in by_name.items()
    } == {
        "Ann": ("EUR", 1000, "active", ["basic"], True),
        "Annabel": ("EUR", 1000, "active", ["basic"], True),
        "Bartholomew": ("EUR", 0, "trialing", ["pro"], False),
        "Cordelia": ("EUR", 1667 + 1000, "active", ["basic", "pro"], True),
        "Desmond": ("EUR", 0, "canceled", [], False),
        "Eulalia": ("EUR", 1000, "active", ["basic"], True),
        "Florian": ("USD", 1200, "active", ["basic"], True),
    }
    assert {c["first_subscribed_at"] for c in items} == {"2025-01-31T09:00:00Z"}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"currency": "USD"}, ["Florian"]),
        ({"plan": "pro"}, ["Bartholomew", "Cordelia"]),
        ({"status": "trialing"}, ["Bartholomew"]),
        ({"status": "canceled"}, ["Desmond"]),
        ({"status": "past_due"}, []),
        ({"paying": "false"}, ["Bartholomew", "Desmond"]),
        (
            {"currency": "EUR", "plan": "basic", "paying": "true", "status": "active"},
            ["Ann", "Annabel", "Cordelia", "Eulalia"],
        ),
    ],
)
def test_customers_filtered(listed: Listed, filters: dict[str, str], expected: list[str]) -> None:
    assert listed.names(listed.get("/customers", **filters)["items"]) == expected


def test_pages_of_customers_lose_and_repeat_none(listed: Listed) -> None:
    every = [c["customer"] for c in listed.get("/customers", limit=500)["items"]]
    assert len(set(every)) == len(every) == 7
    pages = walk(listed, "/customers", 3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [c["customer"] for page in pages for c in page] == every
    active = walk(listed, "/customers", 2, status="active")
    assert [len(page) for page in active] == [2, 2, 1]
    assert listed.names([c for page in active for c in page]) == [
        "Ann",
        "Annabel",
        "Cordelia",
        "Eulalia",
        "Florian",
    ]


def test_subscriptions_as_they_stand(listed: Listed) -> None:
    items = listed.get("/subscriptions")["items"]
    assert len(items) == 8
    by_id = {UUID(item["subscription_id"]): item for item in items}
    trial = by_id[listed.subscriptions["Bartholomew Zylstra"][0]]
    assert trial == {
        "subscription_id": str(listed.subscriptions["Bartholomew Zylstra"][0]),
        "customer": listed.pseudonym("Bartholomew Zylstra"),
        "plan_code": "pro",
        "price_id": "pro-month-eur-v1",
        "amount": 2000,
        "currency": "EUR",
        "interval": "month",
        "status": "trialing",
        "current_period_start": "2025-01-31T09:00:00Z",
        "current_period_end": "2025-02-14T09:00:00Z",
        "mrr": 0,
        "trial_end": "2025-02-14T09:00:00Z",
        "scheduled_price_id": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "resume_at": None,
    }
    yearly = by_id[listed.subscriptions["Cordelia Wexford"][0]]
    assert (yearly["amount"], yearly["interval"], yearly["mrr"]) == (20000, "year", 1667)
    assert yearly["current_period_end"] == "2026-01-31T09:00:00Z"
    ending = by_id[listed.subscriptions["Eulalia Fairbairn"][0]]
    assert (ending["status"], ending["mrr"]) == ("active", 1000)
    # At the period's end: the 31st, in February.
    assert (ending["cancel_at"], ending["cancel_at_period_end"]) == ("2025-02-28T09:00:00Z", True)
    canceled = by_id[listed.subscriptions["Desmond Oyelaran"][0]]
    assert (canceled["status"], canceled["mrr"]) == ("canceled", 0)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"interval": "year"}, ["Cordelia"]),
        ({"interval": "1 month", "plan": "pro"}, ["Bartholomew"]),
        ({"status": "canceled"}, ["Desmond"]),
        ({"currency": "USD"}, ["Florian"]),
        (
            {"plan": "basic", "currency": "EUR"},
            ["Ann", "Annabel", "Cordelia", "Desmond", "Eulalia"],
        ),
    ],
)
def test_subscriptions_filtered(
    listed: Listed, filters: dict[str, str], expected: list[str]
) -> None:
    assert listed.names(listed.get("/subscriptions", **filters)["items"]) == expected


def test_pages_of_subscriptions_lose_and_repeat_none(listed: Listed) -> None:
    items = listed.get("/subscriptions")["items"]
    pages = walk(listed, "/subscriptions", 3)
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [item for page in pages for item in page] == items
    started = {str(i) for ids in listed.subscriptions.values() for i in ids}
    others = [item for item in items if item["subscription_id"] not in started]
    assert len(started) == 7
    assert [listed.name_of(item) for item in others] == ["Ann"]  # the fixture's


def test_bad_parameters_are_refused_with_a_reason(listed: Listed) -> None:
    customers_cursor = listed.get("/customers", limit=1)["next_cursor"]
    for path, params in [
        ("/customers", {"limit": 0}),
        ("/customers", {"limit": 501}),
        ("/customers", {"limit": "ten"}),
        ("/customers", {"currency": "eur"}),
        ("/customers", {"status": "happy"}),
        ("/customers", {"paying": "maybe"}),
        ("/customers", {"plan": "no such!"}),
        ("/customers", {"cursor": "not-a-cursor"}),
        ("/customers", {"cursor": customers_cursor[:-2]}),
        ("/subscriptions", {"cursor": customers_cursor}),  # another listing's
        ("/subscriptions", {"interval": "fortnight"}),
        ("/subscriptions", {"status": "active,trialing"}),
        ("/customers/not-a-pseudonym/transactions", {}),
        (f"/customers/{listed.people['Ann'].customer_id}/transactions", {}),
    ]:
        response = listed.api.call("GET", path, Role.ANALYST, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert response.json()["detail"]
    unknown = Pseudonyms(b"\x01" * 32).of(listed.people["Ann"].customer_id)
    assert listed.status(f"/customers/{unknown}/transactions") == 404


def test_pseudonyms_are_stable_keyed_and_hide_the_id(listed: Listed) -> None:
    customer_id = listed.people["Annabel Quixote"].customer_id
    pseudonym = listed.pseudonym("Annabel Quixote")
    assert re.fullmatch(r"cus_[a-z2-7]{26}", pseudonym)
    # HMAC-SHA256 of the id under HMAC(master key, label), the first 16 bytes in base32.
    master = master_key(listed.shop.ledger.env[PERSONAL_DATA_KEY])
    key = hmac.new(master, b"subledger analyst pseudonyms v1", hashlib.sha256).digest()
    digest = hmac.new(key, customer_id.bytes, hashlib.sha256).digest()[:16]
    assert pseudonym == "cus_" + b32encode(digest).decode().rstrip("=").lower()
    assert Pseudonyms.of_ledger(listed.shop.ledger).of(customer_id) == pseudonym
    assert Pseudonyms(b"\x01" * 32).of(customer_id) != pseudonym
    for part in (customer_id.hex, *str(customer_id).split("-")):
        assert part not in pseudonym
    first, again = (listed.get("/customers", status="canceled")["items"] for _ in range(2))
    assert first == again
    assert first[0]["customer"] == listed.pseudonym("Desmond Oyelaran")


def test_a_customers_transactions_in_hand_computed_amounts(listed: Listed) -> None:
    """Annabel upgrades to Pro half way through her month (2025-02-14 of Jan 31 - Feb 28):
    credit 1000 / 2 = 500 for Basic, charge 2000 / 2 = 1000 for Pro; then 400 of her first
    invoice is refunded, for a reason that names her."""
    shop, annabel = listed.shop, listed.people["Annabel Quixote"]
    shop.clock.advance_to(datetime(2025, 2, 14, 9, tzinfo=UTC))
    (subscription_id,) = listed.subscriptions["Annabel Quixote"]
    shop.send(s.ChangePlan, subscription_id=subscription_id, plan_code="pro", when="now")
    shop.pay()
    path = f"/customers/{listed.pseudonym('Annabel Quixote')}/transactions"
    first_invoice = next(
        t["invoice_id"] for t in listed.get(path)["transactions"] if t["kind"] == "invoice.issued"
    )
    reason = f"{annabel.name} ({annabel.email}) asked for it"
    shop.send(s.RefundInvoice, invoice_id=UUID(first_invoice), amount=400, reason=reason)
    shop.pay()

    answer = listed.get(path)
    assert answer["customer"] == listed.pseudonym("Annabel Quixote")
    lines = [
        (t["kind"], t["occurred_at"][:10], t["currency"], t["amount"], t["price_id"])
        for t in answer["transactions"]
    ]
    assert lines == [
        ("customer.registered", "2025-01-31", None, None, None),
        ("customer.payment_method_added", "2025-01-31", None, None, None),
        ("subscription.started", "2025-01-31", "EUR", 1000, "basic-month-eur-v1"),
        ("invoice.issued", "2025-01-31", "EUR", 1000, None),
        ("invoice.payment_succeeded", "2025-01-31", "EUR", 1000, None),
        ("subscription.plan_changed", "2025-02-14", "EUR", 500, "pro-month-eur-v1"),
        ("invoice.issued", "2025-02-14", "EUR", 500, None),
        ("invoice.payment_succeeded", "2025-02-14", "EUR", 500, None),
        ("invoice.refund_requested", "2025-02-14", "EUR", 400, None),
        ("invoice.refund_succeeded", "2025-02-14", "EUR", 400, None),
    ]
    change = answer["transactions"][5]
    assert (change["previous_price_id"], change["proration_credit"]) == ("basic-month-eur-v1", 500)
    assert change["proration_charge"] == 1000
    assert all("description" not in t for t in answer["transactions"])
    assert annabel.name not in str(answer)
    assert annabel.email not in str(answer)


def test_no_personal_data_in_any_listing(listed: Listed) -> None:
    texts = [
        listed.api.call("GET", path, Role.ANALYST, params={"limit": 2}).text
        for path in ("/customers", "/subscriptions")
    ]
    texts += [
        listed.api.call("GET", path, Role.ANALYST, params={"limit": 500}).text
        for path in ("/customers", "/subscriptions")
    ]
    texts += [
        listed.api.call(
            "GET", f"/customers/{listed.pseudonym(name)}/transactions", Role.ANALYST
        ).text
        for name in listed.people
    ]
    everything = "\n".join(texts)
    assert everything.count("cus_") > 20
    for person in listed.people.values():
        secrets = [person.name, person.email, str(person.customer_id), person.customer_id.hex]
        for secret in [*secrets, *([person.phone] if person.phone else [])]:
            assert secret not in everything, secret
    assert "4242" not in everything  # the cards' last digits


def test_an_erased_customer_keeps_their_pseudonym_and_figures(listed: Listed) -> None:
    cordelia = listed.pseudonym("Cordelia Wexford")
    path = f"/customers/{cordelia}/transactions"
    before = listed.get(path)["transactions"]
    listed.shop.send(s.EraseCustomer, customer_id=listed.people["Cordelia Wexford"].customer_id)

    after = listed.get(path)["transactions"]
    assert after[:-1] == before
    assert after[-1]["kind"] == "customer.erased"
    (listed_now,) = listed.get("/customers", plan="pro", status="active")["items"]
    assert (listed_now["customer"], listed_now["mrr"]) == (cordelia, 2667)


def test_only_analysts_read_transactions(listed: Listed) -> None:
    path = f"/customers/{listed.pseudonym('Ann')}/transactions"
    for role, expected in [
        (None, 401),
        (Role.AUDITOR, 403),
        (Role.SERVICE, 403),
        (Role.ANALYST, 200),
        (Role.ADMIN, 200),
    ]:
        assert listed.api.call("GET", path, role).status_code == expected, role
