"""Plan suggestions as marketing lives them: a monthly subscriber who paid six months in a
row is offered the annual plan and its saving; one who scheduled a cancel or a downgrade
gets a retention offer with the MRR at risk. Listed for analysts under pseudonyms, and
published once each as integration events, on SQLite and PostgreSQL with real Redis.

The shop's catalog: Basic 10 EUR a month; Pro 20 EUR a month or 200 a year (12 x 20 - 200
= 40 EUR saved). The clock starts on Fri 31 Jan 2025 at 09:00 UTC; monthly periods end on
the last day of each month (28 Feb, 31 Mar, 30 Apr...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from commands import schemas as s
from commands.api_keys import KeyStore, Role
from commands.api_suggestions import suggestion_router
from commands.http_api import ApiServices
from commands.streams import Streams
from commands.suggestions import SuggestionPublisher
from ledger.invoices import period_invoice_id
from projections.suggestions import (
    AnnualPlan,
    RetentionOffer,
    Suggestion,
    SuggestionKind,
    suggestions,
)
from tests.integration.conftest import Shop

MONTH_ENDS = [(2, 28), (3, 31), (4, 30), (5, 31), (6, 30), (7, 31), (8, 31), (9, 30)]
PRO_ANNUAL = {"price_id": "pro-year-eur-v1", "amount": 20000, "saving": 4000}


def on(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


def found(shop: Shop, kind: SuggestionKind | None = None) -> list[Suggestion]:
    shop.projector.catch_up()
    return suggestions(shop.projector.database, shop.ledger.plans(), shop.clock.now(), kind)


def monthly_pro(shop: Shop) -> tuple[UUID, UUID]:
    """A customer on Pro monthly, no trial, the first invoice paid: (customer, subscription)."""
    customer_id = shop.customer()
    sub_id = shop.subscribe(customer_id, "pro", trial_days=0)
    shop.pay()
    return customer_id, sub_id


def renew_through(shop: Shop, month_ends: list[tuple[int, int]]) -> None:
    for month, day in month_ends:
        shop.run_until(on(month, day))


def annual(shop: Shop) -> list[tuple[UUID, int, int]]:
    """(subscription, paid in a row, first period of the streak) of each annual suggestion."""
    return [
        (a.subscription_id, a.paid_in_a_row, a.first_period)
        for a in found(shop, SuggestionKind.ANNUAL_PLAN)
        if isinstance(a, AnnualPlan)
    ]


# Annual plan


def test_six_paid_months_in_a_row_suggest_the_annual_plan_and_five_do_not(shop: Shop) -> None:
    customer_id, sub_id = monthly_pro(shop)
    basic = shop.subscribe(shop.customer())  # no annual price for Basic
    shop.pay()
    renew_through(shop, MONTH_ENDS[:4])  # periods 0 to 4 paid: five
    assert found(shop) == []
    # The sixth is invoiced on 30 Jun but not yet charged: it counts for nothing yet.
    shop.clock.advance_to(on(6, 30))
    shop.tick()
    assert found(shop) == []
    shop.pay()
    [suggestion] = found(shop)
    assert isinstance(suggestion, AnnualPlan)
    assert (suggestion.since, suggestion.annual.saving.amount) == (on(6, 30), 4000)
    assert suggestion.as_json() == {
        "kind": "annual_plan",
        "id": suggestion.id,
        "subscription_id": str(sub_id),
        "customer_id": str(customer_id),
        "since": "2025-06-30T09:00:00+00:00",
        "plan_code": "pro",
        "currency": "EUR",
        "price_id": "pro-month-eur-v1",
        "amount": 2000,
        "paid_in_a_row": 6,
        "annual": PRO_ANNUAL,
    }
    assert basic not in [sub for sub, _, _ in annual(shop)]
    # The seventh invoice, awaiting its charge, does not break the streak; once paid,
    # it is the same suggestion (same id) with one more in a row.
    shop.clock.advance_to(on(7, 31))
    shop.tick()
    assert annual(shop) == [(sub_id, 6, 0)]
    shop.pay()
    [seventh] = found(shop)
    assert (seventh.id, annual(shop)) == (suggestion.id, [(sub_id, 7, 0)])


def test_a_voided_invoice_in_the_middle_restarts_the_streak(shop: Shop) -> None:
    customer_id, sub_id = monthly_pro(shop)
    renew_through(shop, MONTH_ENDS[:1])  # periods 0 and 1 paid
    # A declining card becomes the default: the 31 Mar invoice (period 2) fails.
    shop.card(customer_id, "pm_2", token="tok_chargeDeclined", make_default=True)
    renew_through(shop, MONTH_ENDS[1:2])
    assert shop.ledger.invoice(period_invoice_id(sub_id, 2)).failures == 1
    shop.send(s.VoidInvoice, invoice_id=period_invoice_id(sub_id, 2))
    shop.send(s.SwitchDefaultPaymentMethod, customer_id=customer_id, payment_method_id="pm_1")
    # Periods 0, 1, 3, 4, 5, 6, 7 paid (seven), but 3 to 7 in a row: five.
    renew_through(shop, MONTH_ENDS[2:7])
    assert annual(shop) == []
    renew_through(shop, MONTH_ENDS[7:])  # period 8 paid on 30 Sep: six in a row
    assert annual(shop) == [(sub_id, 6, 3)]
    assert found(shop)[0].since == on(9, 30)


def test_a_subscriber_who_scheduled_a_change_is_not_offered_the_annual_plan(shop: Shop) -> None:
    _, sub_id = monthly_pro(shop)
    renew_through(shop, MONTH_ENDS[:5])
    assert annual(shop) == [(sub_id, 6, 0)]
    # Moving to the annual price at period end is a commitment, not a downgrade.
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro", interval="year")
    assert found(shop) == []


# Retention offers


def test_a_scheduled_cancel_gets_a_retention_offer_and_a_new_one_after_a_revoke(
    shop: Shop,
) -> None:
    customer_id, sub_id = monthly_pro(shop)
    shop.clock.advance_to(on(2, 10))
    shop.send(s.CancelSubscription, subscription_id=sub_id)  # at period end, 28 Feb
    [offer] = found(shop)
    assert isinstance(offer, RetentionOffer)
    assert offer.as_json() == {
        "kind": "retention_offer",
        "id": offer.id,
        "subscription_id": str(sub_id),
        "customer_id": str(customer_id),
        "since": "2025-02-10T09:00:00+00:00",
        "plan_code": "pro",
        "currency": "EUR",
        "price_id": "pro-month-eur-v1",
        "amount": 2000,
        "scheduled": "cancel",
        "effective_at": "2025-02-28T09:00:00+00:00",
        "to_price_id": None,
        "mrr_at_risk": 2000,
        "offer": "stay",
        "annual": None,
    }
    assert found(shop, SuggestionKind.ANNUAL_PLAN) == []
    shop.send(s.RevokeCancel, subscription_id=sub_id)
    assert found(shop) == []
    shop.clock.advance_to(on(2, 12))
    shop.send(s.CancelSubscription, subscription_id=sub_id)
    [again] = found(shop)
    assert (again.since, again.id != offer.id) == (on(2, 12), True)
    # Once the cancel is due, it is too late for an offer.
    shop.clock.advance_to(on(2, 28))
    assert found(shop) == []


def test_a_scheduled_downgrade_gets_an_offer_with_the_cheaper_annual_price(shop: Shop) -> None:
    _, downgrading = monthly_pro(shop)
    _, upgrading = monthly_pro(shop)
    shop.send(s.ChangePlan, subscription_id=upgrading, plan_code="basic", when="period_end")
    shop.send(s.ChangePlan, subscription_id=upgrading, plan_code="pro")  # called off
    shop.send(s.ChangePlan, subscription_id=downgrading, plan_code="basic")  # at period end
    [offer] = found(shop, SuggestionKind.RETENTION_OFFER)
    assert isinstance(offer, RetentionOffer)
    assert offer.subscription_id == downgrading
    assert {k: v for k, v in offer.as_json().items() if k in RETENTION_TERMS} == {
        "scheduled": "downgrade",
        "effective_at": "2025-02-28T09:00:00+00:00",
        "to_price_id": "basic-month-eur-v1",
        "mrr_at_risk": 1000,  # 2000 now, 1000 on Basic
        "annual": PRO_ANNUAL,  # 200 a year is 16.67 a month, less than 20
    }
    # A cancel scheduled on top wins: everything is at risk.
    shop.send(s.CancelSubscription, subscription_id=downgrading)
    [cancel] = found(shop)
    assert isinstance(cancel, RetentionOffer)
    assert (cancel.scheduled, cancel.mrr_at_risk.amount, cancel.annual) == ("cancel", 2000, None)


RETENTION_TERMS = ("scheduled", "effective_at", "to_price_id", "mrr_at_risk", "annual")


# Integration events


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def publisher(shop: Shop, client: redis.Redis, streams: Streams) -> SuggestionPublisher:
    return SuggestionPublisher(shop.projector, client, shop.clock, streams)


def published(client: redis.Redis, streams: Streams) -> list[dict[str, Any]]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(streams.events))
    return [json.loads(fields[b"data"]) for _, fields in entries]


def test_each_suggestion_is_published_once_and_again_on_a_new_basis(
    shop: Shop, publisher: SuggestionPublisher, client: redis.Redis, streams: Streams
) -> None:
    loyal, loyal_sub = monthly_pro(shop)
    leaving, leaving_sub = monthly_pro(shop)
    renew_through(shop, MONTH_ENDS[:5])
    shop.clock.advance_to(on(7, 2))
    shop.send(s.CancelSubscription, subscription_id=leaving_sub)  # at 31 Jul
    assert publisher.run() == 2
    assert publisher.run() == 0
    [annual_event, retention_event] = published(client, streams)
    [annual_plan, retention] = found(shop)
    assert annual_event == {
        "type": "suggestion.annual_plan",
        "id": annual_plan.id,
        "customer_id": str(loyal),
        "occurred_at": "2025-06-30T09:00:00+00:00",
        "data": {
            "subscription_id": str(loyal_sub),
            "plan_code": "pro",
            "currency": "EUR",
            "price_id": "pro-month-eur-v1",
            "amount": 2000,
            "paid_in_a_row": 6,
            "annual": PRO_ANNUAL,
        },
    }
    assert (retention_event["type"], retention_event["id"]) == (
        "suggestion.retention_offer",
        retention.id,
    )
    assert (retention_event["customer_id"], retention_event["occurred_at"]) == (
        str(leaving),
        "2025-07-02T09:00:00+00:00",
    )
    assert retention_event["data"]["mrr_at_risk"] == 2000
    # Revoked: nothing scheduled any more, six paid in a row, the annual plan fits.
    shop.send(s.RevokeCancel, subscription_id=leaving_sub)
    assert publisher.run() == 1
    staying = published(client, streams)[-1]
    assert (staying["type"], staying["customer_id"]) == ("suggestion.annual_plan", str(leaving))
    # Scheduled again: a new basis, a new event.
    shop.clock.advance_to(on(7, 3))
    shop.send(s.CancelSubscription, subscription_id=leaving_sub)
    assert publisher.run() == 1
    newest = published(client, streams)[-1]
    assert (newest["type"], newest["occurred_at"]) == (
        "suggestion.retention_offer",
        "2025-07-03T09:00:00+00:00",
    )
    assert newest["id"] not in (annual_event["id"], retention_event["id"], staying["id"])


def test_a_crash_before_recording_publishes_again_with_the_same_id(
    shop: Shop, publisher: SuggestionPublisher, client: redis.Redis, streams: Streams
) -> None:
    monthly_pro(shop)
    renew_through(shop, MONTH_ENDS[:5])
    assert publisher.run() == 1
    # As if the publisher had died after adding the entry, before recording it.
    with shop.projector.database.transaction() as tx:
        tx.execute("DELETE FROM published_suggestions")
    assert publisher.run() == 1
    first, again = published(client, streams)
    assert again == first


# The analysts' route


def test_analysts_list_suggestions_under_pseudonyms(shop: Shop) -> None:
    loyal, loyal_sub = monthly_pro(shop)
    leaving, leaving_sub = monthly_pro(shop)
    renew_through(shop, MONTH_ENDS[:5])
    shop.send(s.ChangePlan, subscription_id=leaving_sub, plan_code="basic")
    shop.projector.setup()
    database = shop.projector.database
    keys = KeyStore(database)
    keys.setup()
    analyst = keys.create(Role.ANALYST, "analyst", shop.clock.now())[1]
    auditor = keys.create(Role.AUDITOR, "auditor", shop.clock.now())[1]
    services = ApiServices(shop.ledger, shop.clock, database, shop.projector.catch_up, keys)
    pseudonyms = {loyal: "customer-1", leaving: "customer-2"}
    app = FastAPI()
    app.include_router(suggestion_router(services, pseudonyms.__getitem__))

    with TestClient(app) as http:

        def get(path: str, key: str) -> Any:
            return http.get(path, headers={"Authorization": f"Bearer {key}"})

        response = get("/suggestions", analyst)
        assert response.status_code == 200
        assert response.json() == [
            {
                "kind": "annual_plan",
                "customer": "customer-1",
                "since": "2025-06-30T09:00:00Z",
                "plan_code": "pro",
                "currency": "EUR",
                "price_id": "pro-month-eur-v1",
                "amount": 2000,
                "paid_in_a_row": 6,
                "annual": PRO_ANNUAL,
            },
            {
                "kind": "retention_offer",
                "customer": "customer-2",
                "since": "2025-06-30T09:00:00Z",
                "plan_code": "pro",
                "currency": "EUR",
                "price_id": "pro-month-eur-v1",
                "amount": 2000,
                "scheduled": "downgrade",
                "effective_at": "2025-07-31T09:00:00Z",
                "to_price_id": "basic-month-eur-v1",
                "mrr_at_risk": 1000,
                "offer": "stay",
                "annual": PRO_ANNUAL,
            },
        ]
        for private in (loyal, loyal_sub, leaving, leaving_sub):
            assert str(private) not in response.text
        retention = get("/suggestions?kind=retention_offer", analyst).json()
        assert [r["customer"] for r in retention] == ["customer-2"]
        bad = get("/suggestions?kind=upsell", analyst)
        assert bad.status_code == 422
        assert "annual_plan" in bad.text
        assert get("/suggestions", auditor).status_code == 403
        assert http.get("/suggestions").status_code == 401
