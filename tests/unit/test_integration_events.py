"""Integration events: every event of every aggregate has a documented type and JSON data,
the same stored event always has the same id, and lifecycle signals fall due by their
rules and only while still true."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any, Union, cast, get_args, get_origin, get_type_hints
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import pytest
from eventsourcing.domain import Aggregate

import ledger.application  # noqa: F401  # imports every aggregate of the ledger
from commands.integration_events import (
    ENVELOPE_FIELDS,
    CardExpiring,
    Signal,
    TrialEnding,
    customer_named_by,
    integration_event,
    is_domain_event,
    signal_from_member,
    signal_member,
    signals_scheduled_by,
    to_json,
)
from ledger.calendar import Interval, IntervalUnit, Period
from ledger.catalog import Plan, Price
from ledger.coupons import Coupon
from ledger.customers import Customer, PaymentMethod
from ledger.discounts import Discount
from ledger.idempotency import CommandRecord
from ledger.invoices import Invoice, InvoiceLine, LineKind, PaymentRequest, RefundRequest
from ledger.money import Money
from ledger.subscriptions import Subscription
from ledger.tax import TaxRate
from ledger.webhook_endpoints import WebhookEndpoint

DOCS = Path(__file__).parents[2] / "docs" / "events.md"
AT = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
ID = UUID("00000000-0000-4000-8000-000000000001")
CUSTOMER = UUID("00000000-0000-4000-8000-0000000000c1")
EUR = Money(1999, "EUR")
PRICE = Price("pro-month-eur-v1", "pro", Money(2000, "EUR"), Interval(IntervalUnit.MONTH), 14)
METHOD = PaymentMethod("pm_1", "sandbox", "tok_secret", "visa", "4242", 3, 2025)
# A sample of every type an event field may hold. A new value type fails the tests
# below until it has a sample here, and a JSON form (commands.integration_events.to_json).
SAMPLES: dict[Any, object] = {
    str: "text",
    int: 3,
    UUID: UUID("00000000-0000-4000-8000-0000000000aa"),
    datetime: AT,
    Decimal: Decimal("12.50"),
    Money: EUR,
    Price: PRICE,
    Period: Period(0, AT, AT + timedelta(days=28)),
    PaymentMethod: METHOD,
    Discount: Discount("WELCOME", Decimal("10"), None, 0, 2, ("pro",)),
    TaxRate: TaxRate("VAT", Decimal("20"), False),
    InvoiceLine: InvoiceLine(LineKind.PERIOD, "Pro", EUR, AT, AT + timedelta(days=28)),
    PaymentRequest: PaymentRequest(1, "pm_1", "sandbox", EUR, "inv:payment:1"),
    RefundRequest: RefundRequest(1, EUR, "sandbox", "ch_1", "inv:refund:1"),
}


def ledger_aggregates() -> set[type[Aggregate]]:
    found: set[type[Aggregate]] = set()
    todo = list(Aggregate.__subclasses__())
    while todo:
        kind = todo.pop()
        todo.extend(kind.__subclasses__())
        if kind.__module__.startswith("ledger."):
            found.add(kind)
    return found


PUBLISHED = (Customer, Subscription, Invoice, Plan, Coupon)
EVENT_CLASSES = [
    cls
    for aggregate in PUBLISHED
    for name, cls in vars(aggregate).items()
    if isinstance(cls, type)
    and issubclass(cls, Aggregate.Event)
    and name not in {"Event", "Created"}
]


def sample(hint: Any, full: bool) -> object:
    """A value of type ``hint``: with every optional part (``full``), or without."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        (inner,) = (arg for arg in get_args(hint) if arg is not type(None))
        return sample(inner, full) if full else None
    if origin is list:
        return [sample(get_args(hint)[0], full)] if full else []
    if hint is bool:
        return full
    if isinstance(hint, type) and issubclass(hint, Enum):
        members = list(hint)
        return members[0] if full else members[-1]
    return SAMPLES[hint]


def own_fields(cls: type[Aggregate.Event]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    names = cls.__dataclass_fields__
    return {name: hints[name] for name in names if name not in ENVELOPE_FIELDS}


def instance(cls: type[Aggregate.Event], full: bool, version: int = 4) -> Aggregate.Event:
    values = {name: sample(hint, full) for name, hint in own_fields(cls).items()}
    if issubclass(cls, Aggregate.Created):
        values["originator_topic"] = "ledger.example:Example"
    return cls(originator_id=ID, originator_version=version, timestamp=AT, **values)


def documented_types() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", DOCS.read_text(), re.MULTILINE))


def test_every_aggregate_is_published_except_command_records_and_webhook_endpoints() -> None:
    # A new aggregate fails here until it is published (and its customer resolved).
    assert ledger_aggregates() == {*PUBLISHED, CommandRecord, WebhookEndpoint}
    record = CommandRecord.handled("cmd-1", "plan.create", "digest", {}, AT)
    assert not is_domain_event(record.collect_events()[0])
    endpoint = WebhookEndpoint.register(uuid4(), "https://crm.example/hooks", ["*"], "", AT)
    assert not is_domain_event(endpoint.collect_events()[0])
    assert len(EVENT_CLASSES) == 42


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__qualname__)
@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
def test_every_event_maps_to_a_documented_type_and_json_data(
    cls: type[Aggregate.Event], full: bool
) -> None:
    event = instance(cls, full)
    assert is_domain_event(event)
    published = integration_event(event, CUSTOMER)
    assert json.loads(json.dumps(published)) == published  # JSON through and through
    assert published["type"] in documented_types()
    assert published["occurred_at"] == "2025-01-31T09:00:00+00:00"
    assert published["customer_id"] == str(CUSTOMER)
    aggregate = cls.__qualname__.split(".")[0].lower()
    assert published["data"][f"{aggregate}_id"] == str(ID)
    expected_keys = {*own_fields(cls), f"{aggregate}_id"}
    if published["type"] == "subscription.canceled":
        expected_keys.add("reason")
    assert set(published["data"]) == expected_keys


def test_the_documented_types_are_exactly_those_published() -> None:
    types = {
        integration_event(instance(cls, full), None)["type"]
        for cls in EVENT_CLASSES
        for full in (True, False)
    }
    signals = {"subscription.trial_ending", "payment_method.expiring"}
    suggestions = {"suggestion.annual_plan", "suggestion.retention_offer"}
    assert documented_types() == types | signals | suggestions


@pytest.mark.parametrize(
    ("cls", "full", "expected"),
    [
        (Customer.Registered, True, "customer.created"),
        (Customer.PaymentMethodAdded, True, "payment_method.attached"),
        (Subscription.Started, True, "subscription.created"),
        (Subscription.PastDue, True, "subscription.past_due"),
        (Subscription.Canceled, True, "subscription.canceled"),
        (Subscription.DunningExhausted, True, "subscription.canceled"),
        (Subscription.DunningExhausted, False, "subscription.unpaid"),
        (Invoice.PaymentFailed, True, "invoice.payment_failed"),
        (Invoice.PaymentSucceeded, True, "invoice.paid"),
        (Invoice.MarkedUncollectible, True, "invoice.marked_uncollectible"),
        (Plan.PriceAdded, True, "plan.price_added"),
        (Coupon.Redeemed, True, "coupon.redeemed"),
    ],
)
def test_types_are_snake_case_or_well_known_names(
    cls: type[Aggregate.Event], full: bool, expected: str
) -> None:
    assert integration_event(instance(cls, full), None)["type"] == expected


def test_a_cancellation_says_why_for_win_back() -> None:
    reasons = [
        integration_event(instance(cls, full), CUSTOMER)["data"]["reason"]
        for cls, full in [
            (Subscription.Canceled, False),
            (Subscription.Canceled, True),
            (Subscription.DunningExhausted, True),
        ]
    ]
    assert reasons == ["requested", "scheduled", "payment_failed"]


def test_values_become_plain_json_and_a_gateway_token_is_never_published() -> None:
    started = integration_event(instance(Subscription.Started, full=True), CUSTOMER)
    assert started["data"] == {
        "subscription_id": str(ID),
        "customer_id": "00000000-0000-4000-8000-0000000000aa",
        "price": {
            "id": "pro-month-eur-v1",
            "plan_code": "pro",
            "amount": {"amount": 2000, "currency": "EUR"},
            "interval": {"unit": "month", "count": 1},
            "trial_days": 14,
            "version": 1,
        },
        "status": "trialing",
        "period": {
            "index": 0,
            "start": "2025-01-31T09:00:00+00:00",
            "end": "2025-02-28T09:00:00+00:00",
        },
        "trial_end": "2025-01-31T09:00:00+00:00",
    }
    added = integration_event(instance(Customer.PaymentMethodAdded, full=True), CUSTOMER)
    assert added["data"]["method"] == {
        "id": "pm_1",
        "gateway": "sandbox",
        "brand": "visa",
        "last4": "4242",
        "exp_month": 3,
        "exp_year": 2025,
        "customer_reference": None,
    }
    tax = integration_event(instance(Customer.TaxRateSet, full=True), CUSTOMER)
    assert tax["data"]["tax_rate"] == {"name": "VAT", "percent": "20", "inclusive": False}
    with pytest.raises(TypeError, match="float"):
        to_json(0.1)


def test_the_same_stored_event_always_has_the_same_id() -> None:
    event = instance(Invoice.PaymentFailed, full=True)
    assert integration_event(event, None)["id"] == integration_event(event, CUSTOMER)["id"]
    # As documented: from the aggregate's id and the event's version.
    assert integration_event(event, None)["id"] == str(
        uuid5(NAMESPACE_URL, f"subledger:event:{ID}:4")
    )
    later = instance(Invoice.PaymentFailed, full=True, version=5)
    assert integration_event(later, None)["id"] != integration_event(event, None)["id"]


def test_the_customer_an_event_names_itself() -> None:
    assert customer_named_by(instance(Customer.ContactChanged, full=True)) == ID
    assert customer_named_by(instance(Subscription.Started, full=True)) == SAMPLES[UUID]
    assert customer_named_by(instance(Invoice.Issued, full=True)) == SAMPLES[UUID]
    # Later events of a subscription or invoice name none: the publisher looks it up.
    assert customer_named_by(instance(Subscription.Canceled, full=True)) is None
    assert customer_named_by(instance(Plan.Archived, full=True)) is None
    assert integration_event(instance(Plan.Archived, full=True), None)["customer_id"] is None


# Signals


def pending(aggregate: Aggregate) -> list[Aggregate.Event]:
    events = aggregate.collect_events()
    assert all(isinstance(e, Aggregate.Event) for e in events)
    return cast(list[Aggregate.Event], events)


def trialing(days: int) -> tuple[Customer, Subscription]:
    customer = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
    sub = Subscription.start(uuid4(), customer.id, PRICE, AT, trial_days=days)
    return customer, sub


def test_a_trial_ending_falls_due_three_days_before_its_end_or_at_once() -> None:
    _, sub = trialing(14)
    (signal,) = signals_scheduled_by(pending(sub)[0])
    assert signal == TrialEnding(
        sub.id, sub.customer_id, AT + timedelta(days=14), AT + timedelta(days=11)
    )
    _, short = trialing(2)
    (soon,) = signals_scheduled_by(pending(short)[0])
    assert soon.due == AT
    _, paid = trialing(0)
    assert signals_scheduled_by(pending(paid)[0]) == []


def test_a_trial_ending_is_sent_only_while_the_subscription_still_trials_to_that_end() -> None:
    customer, sub = trialing(14)
    (signal,) = signals_scheduled_by(pending(sub)[0])
    both = {customer.id: customer, sub.id: sub}
    due = AT + timedelta(days=11)
    event = signal.event(both, due)
    assert event is not None
    assert (event["type"], event["customer_id"], event["occurred_at"]) == (
        "subscription.trial_ending",
        str(customer.id),
        "2025-02-11T09:00:00+00:00",
    )
    assert event["data"]["has_payment_method"] is False
    assert event["data"]["price"]["amount"] == {"amount": 2000, "currency": "EUR"}
    assert signal.event(both, AT + timedelta(days=14)) is None  # too late: the trial ended
    sub.cancel_now(due)
    assert signal.event(both, due) is None


def test_a_card_expiring_falls_due_on_the_first_of_its_expiry_month() -> None:
    customer = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
    customer.add_payment_method(METHOD, make_default=False, at=AT)
    (signal,) = signals_scheduled_by(pending(customer)[1])
    assert signal == CardExpiring(customer.id, "pm_1", 2025, 3)
    assert signal.due == datetime(2025, 3, 1, tzinfo=UTC)
    event = signal.event({customer.id: customer}, signal.due)
    assert event is not None
    assert event["type"] == "payment_method.expiring"
    assert event["data"]["is_default"] is True
    assert "token" not in event["data"]["method"]
    # Expired already (the publisher was down all month): nothing to warn about.
    assert signal.event({customer.id: customer}, datetime(2025, 4, 1, tzinfo=UTC)) is None
    gone = CardExpiring(customer.id, "pm_2", 2025, 3)
    assert gone.event({customer.id: customer}, signal.due) is None


def test_a_signal_is_kept_as_text_that_gives_it_back() -> None:
    customer, sub = trialing(14)
    signals: list[Signal] = [
        TrialEnding(sub.id, customer.id, AT + timedelta(days=14), AT + timedelta(days=11)),
        CardExpiring(customer.id, "pm_1", 2025, 3),
    ]
    for signal in signals:
        assert signal_from_member(signal_member(signal)) == signal
        assert signal_from_member(signal_member(signal).encode()) == signal
