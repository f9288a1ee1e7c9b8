"""The PayPal adapter against a local fake of PayPal's REST v2 API (tests/fakes/paypal.py):
the order-then-capture charge, its idempotency, declines, temporary failures, lost answers,
refunds, token handling and secrets."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from gateways.paypal import PayPalConfig, PayPalGateway
from gateways.port import (
    ChargeRequest,
    Declined,
    GatewayUnavailable,
    Pending,
    RefundRequest,
    RetryableError,
    Succeeded,
)
from ledger.money import Money
from tests.fakes import threaded_server
from tests.fakes.paypal import CLIENT_ID, CLIENT_SECRET, FAST_TIMEOUT, FakePayPal

KEY = "0b7c6a9e-6f43-4a5e-9d7e-2f1c3b4a5d6e:payment:1"
REFUND_KEY = "0b7c6a9e-6f43-4a5e-9d7e-2f1c3b4a5d6e:refund:1"
EUR = "EUR"
PRICE = Money(1999, EUR)
PART = Money(500, EUR)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    with threaded_server() as server:
        yield server


@pytest.fixture
def fake(server: HTTPServer) -> FakePayPal:
    return FakePayPal(server)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway(fake: FakePayPal, clock: Clock) -> Iterator[PayPalGateway]:
    gateway = PayPalGateway(fake.config(timeout=FAST_TIMEOUT), monotonic=clock)
    yield gateway
    gateway.close()


def charge(token: str = "vault-ok", amount: Money = PRICE, key: str = KEY) -> ChargeRequest:
    return ChargeRequest(key, token, amount, "INV-2025-0007", email="ann@example.com")


def refund(reference: str, amount: Money = PART, key: str = REFUND_KEY) -> RefundRequest:
    return RefundRequest(key, reference, amount)


def paid(gateway: PayPalGateway, request: ChargeRequest | None = None) -> str:
    outcome = gateway.charge(request or charge())
    assert isinstance(outcome, Succeeded)
    return outcome.reference


# Charges


def test_a_charge_creates_an_order_for_the_key_then_captures_it_with_the_vaulted_wallet(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    outcome = gateway.charge(charge())

    [captured] = fake.completed()
    assert outcome == Succeeded(captured["id"], Money(1999, EUR))
    [token] = fake.calls_to("POST", "/v1/oauth2/token")
    assert token.headers["authorization"].startswith("Basic ")
    assert token.body == {"grant_type": "client_credentials"}
    [create] = fake.calls_to("POST", "/v2/checkout/orders")
    assert create.headers["paypal-request-id"] == f"{KEY}:order"
    assert create.headers["authorization"] == "Bearer A21AA-fake-access-token-1"
    assert create.body == {
        "intent": "CAPTURE",
        "purchase_units": [
            {
                "custom_id": KEY,
                "invoice_id": KEY,
                "amount": {"currency_code": "EUR", "value": "19.99"},
                "description": "INV-2025-0007",
            }
        ],
    }
    [capture] = fake.calls_to("POST", r"/v2/checkout/orders/\w+/capture")
    assert capture.headers["paypal-request-id"] == KEY
    assert capture.body == {"payment_source": {"paypal": {"vault_id": "vault-ok"}}}


def test_a_saved_card_is_charged_as_a_merchant_initiated_recurring_payment(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    paid(gateway, charge("card:vault-card-1"))

    [capture] = fake.calls_to("POST", r"/v2/checkout/orders/\w+/capture")
    assert capture.body == {
        "payment_source": {
            "card": {
                "vault_id": "vault-card-1",
                "stored_credential": {
                    "payment_initiator": "MERCHANT",
                    "payment_type": "RECURRING",
                    "usage": "SUBSEQUENT",
                },
            }
        }
    }


@pytest.mark.parametrize(
    ("amount", "value"),
    [
        (Money(1000, EUR), "10.00"),
        (Money(5, "USD"), "0.05"),
        (Money(1500, "JPY"), "1500"),
        (Money(12345, "BHD"), "12.345"),
        (Money(250000, "HUF"), "2500"),  # PayPal takes whole forints only
    ],
)
def test_amounts_are_decimal_strings_with_the_currency_s_decimals(
    gateway: PayPalGateway, fake: FakePayPal, amount: Money, value: str
) -> None:
    assert gateway.charge(charge(amount=amount)) == Succeeded(fake.completed()[0]["id"], amount)
    [create] = fake.calls_to("POST", "/v2/checkout/orders")
    assert create.body["purchase_units"][0]["amount"] == {
        "currency_code": amount.currency,
        "value": value,
    }


@pytest.mark.parametrize("amount", [Money(0, EUR), Money(-100, EUR), Money(250050, "HUF")])
def test_an_amount_paypal_cannot_take_is_declined_without_calling_it(
    gateway: PayPalGateway, fake: FakePayPal, amount: Money
) -> None:
    outcome = gateway.charge(charge(amount=amount))

    assert isinstance(outcome, Declined)
    assert outcome.code == "invalid_amount"
    assert fake.calls == []
    assert gateway.find_charge(charge(amount=amount)) is None


def test_a_token_that_is_not_a_vault_id_is_declined_without_calling_paypal(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    outcome = gateway.charge(charge("apple:../../x"))

    assert isinstance(outcome, Declined)
    assert outcome.code == "invalid_token"
    assert fake.calls == []


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("vault-declined", "card_declined"),  # 422 INSTRUMENT_DECLINED
        ("vault-payer-action", "payer_action_required"),  # 422 PAYER_ACTION_REQUIRED
    ],
)
def test_a_refused_capture_is_a_decline_with_our_code(
    gateway: PayPalGateway, fake: FakePayPal, token: str, code: str
) -> None:
    outcome = gateway.charge(charge(token))

    assert isinstance(outcome, Declined)
    assert outcome.code == code
    assert fake.captures == {}


def test_a_capture_still_in_progress_is_an_unknown_outcome_not_a_decline(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    outcome = gateway.charge(charge("vault-in-progress"))

    assert isinstance(outcome, RetryableError)
    assert outcome.code == "previous_request_in_progress"


def test_a_declined_card_capture_keeps_its_reference_and_the_issuer_s_reason(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    outcome = gateway.charge(charge("card:vault-insufficient"))

    [capture] = fake.captures.values()
    assert capture["status"] == "DECLINED"
    assert isinstance(outcome, Declined)
    assert (outcome.code, outcome.reference) == ("insufficient_funds", capture["id"])
    assert gateway.find_charge(charge("card:vault-insufficient")) == outcome


def test_a_pending_capture_is_pending_with_its_capture_id(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    outcome = gateway.charge(charge("vault-pending"))

    [capture] = fake.captures.values()
    assert outcome == Pending(capture["id"], Money(1999, EUR))
    assert gateway.find_charge(charge("vault-pending")) == outcome


def test_the_same_key_sent_again_answers_the_same_capture_and_charges_once(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    first = paid(gateway)

    assert paid(gateway) == first
    assert len(fake.completed()) == 1
    assert len(fake.orders) == 1


def test_a_new_key_is_a_new_payment(gateway: PayPalGateway, fake: FakePayPal) -> None:
    first = paid(gateway)
    second = paid(gateway, charge(key=KEY.replace(":1", ":2")))

    assert first != second
    assert len(fake.completed()) == 2


# Temporary failures and lost answers


@pytest.mark.parametrize(
    ("operation", "fault", "code", "retry_after"),
    [
        ("capture", "429", "rate_limited", 7.0),
        ("capture", "500", "processing_error", None),
        ("create_order", "429", "rate_limited", 7.0),
        ("create_order", "500", "processing_error", None),
        ("token", "500", "processing_error", None),
        ("capture", "timeout", "timeout", None),
    ],
)
def test_a_temporary_failure_is_retryable_and_nothing_is_charged(
    gateway: PayPalGateway,
    fake: FakePayPal,
    operation: str,
    fault: str,
    code: str,
    retry_after: float | None,
) -> None:
    fake.inject(operation, fault)

    outcome = gateway.charge(charge())

    assert isinstance(outcome, RetryableError)
    assert (outcome.code, outcome.retry_after) == (code, retry_after)
    assert fake.completed() == []
    assert gateway.find_charge(charge()) is None
    reference = paid(gateway)  # sent again with the same key
    assert [c["id"] for c in fake.completed()] == [reference]


@pytest.mark.parametrize("fault", ["timeout_after", "malformed", "shapeless"])
def test_an_answer_lost_after_the_capture_is_found_by_key_and_never_charged_twice(
    gateway: PayPalGateway, fake: FakePayPal, fault: str
) -> None:
    fake.inject("capture", fault)

    outcome = gateway.charge(charge())

    assert isinstance(outcome, RetryableError)
    assert outcome.code == {"timeout_after": "timeout"}.get(fault, "malformed_response")
    [captured] = fake.completed()
    found = gateway.find_charge(charge())
    assert found == Succeeded(captured["id"], Money(1999, EUR))
    assert gateway.charge(charge()) == found
    assert len(fake.completed()) == 1
    assert len(fake.orders) == 1  # the lookup replayed the order, it made no new one


def test_find_charge_never_captures(gateway: PayPalGateway, fake: FakePayPal) -> None:
    assert gateway.find_charge(charge()) is None

    assert fake.calls_to("POST", r"/v2/checkout/orders/\w+/capture") == []
    assert fake.captures == {}
    [order] = fake.orders.values()
    assert order["status"] == "CREATED"


@pytest.mark.parametrize(
    ("operation", "fault"),
    [
        ("create_order", "timeout"),
        ("create_order", "500"),
        ("show_order", "429"),
        ("show_order", "malformed"),
        ("token", "500"),
    ],
)
def test_find_charge_raises_when_paypal_cannot_be_asked(
    gateway: PayPalGateway, fake: FakePayPal, operation: str, fault: str
) -> None:
    paid(gateway)
    gateway.close()
    fresh = PayPalGateway(fake.config(timeout=FAST_TIMEOUT))  # no cached token
    fake.inject(operation, fault)

    with pytest.raises(GatewayUnavailable):
        fresh.find_charge(charge())
    fresh.close()


def test_a_capture_whose_request_id_paypal_forgot_is_read_from_its_order(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    fake.inject("capture", "timeout_after")
    assert isinstance(gateway.charge(charge()), RetryableError)
    fake.forget_request_ids(r"/v2/checkout/orders/\w+/capture")

    outcome = gateway.charge(charge())  # PayPal answers ORDER_ALREADY_CAPTURED

    [captured] = fake.completed()
    assert outcome == Succeeded(captured["id"], Money(1999, EUR))


def test_after_paypal_forgot_every_request_id_the_outcome_stays_unknown_not_failed(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    fake.inject("capture", "timeout_after")
    assert isinstance(gateway.charge(charge()), RetryableError)
    fake.forget_request_ids()

    # The account's unique invoice_id refuses a second payment under the key.
    outcome = gateway.charge(charge())
    assert isinstance(outcome, RetryableError)
    assert outcome.code == "duplicate_invoice_id"
    with pytest.raises(GatewayUnavailable):
        gateway.find_charge(charge())
    assert len(fake.completed()) == 1


# OAuth2 tokens


def test_the_token_is_cached_until_shortly_before_it_expires(
    gateway: PayPalGateway, fake: FakePayPal, clock: Clock
) -> None:
    paid(gateway)
    paid(gateway, charge(key=KEY.replace(":1", ":2")))
    assert fake.tokens_issued == 1

    clock.now += 32400 - 59  # within the last minute of its life
    paid(gateway, charge(key=KEY.replace(":1", ":3")))

    assert fake.tokens_issued == 2
    [last_capture] = fake.calls_to("POST", r"/v2/checkout/orders/\w+/capture")[-1:]
    assert last_capture.headers["authorization"] == "Bearer A21AA-fake-access-token-2"


def test_a_token_paypal_expired_early_is_fetched_again_once(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    paid(gateway)
    fake.expire_tokens()

    paid(gateway, charge(key=KEY.replace(":1", ":2")))

    assert fake.tokens_issued == 2
    assert len(fake.completed()) == 2


def test_a_401_after_a_fresh_token_is_an_auth_failure_not_a_decline(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    fake.inject("create_order", "401", "401")

    outcome = gateway.charge(charge())

    assert isinstance(outcome, RetryableError)
    assert outcome.code == "gateway_auth_failed"
    assert fake.tokens_issued == 2  # one refresh, then it gave up
    fake.inject("create_order", "401", "401")
    with pytest.raises(GatewayUnavailable):
        gateway.find_charge(charge())


def test_wrong_credentials_are_an_auth_failure_that_does_not_leak_the_secret(
    fake: FakePayPal,
) -> None:
    config = PayPalConfig(CLIENT_ID, "wrong-" + CLIENT_SECRET, api_base=fake.url)
    gateway = PayPalGateway(config)

    outcome = gateway.charge(charge())

    assert isinstance(outcome, RetryableError)
    assert outcome.code == "gateway_auth_failed"
    assert CLIENT_SECRET not in outcome.message
    assert fake.calls_to("POST", "/v2/checkout/orders") == []
    gateway.close()


def test_secrets_and_tokens_appear_in_no_repr_nor_message(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    config = fake.config()
    outcomes: list[Any] = [gateway.charge(charge("vault-declined"))]
    fake.inject("capture", "500")
    outcomes.append(gateway.charge(charge(key=KEY.replace(":1", ":2"))))
    outcomes.append(gateway.refund(refund("UNKNOWN1")))

    texts = [repr(config), str(config), repr(gateway)] + [repr(o) for o in outcomes]
    assert all(CLIENT_SECRET not in text for text in texts)
    assert all("A21AA" not in text for text in texts)
    assert [type(o) for o in outcomes] == [Declined, RetryableError, Declined]


# Refunds


def test_a_refund_refunds_the_capture_once_under_its_key(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    capture_id = paid(gateway)

    outcome = gateway.refund(refund(capture_id))
    again = gateway.refund(refund(capture_id))

    [call, _] = fake.calls_to("POST", rf"/v2/payments/captures/{capture_id}/refund")
    assert call.headers["paypal-request-id"] == REFUND_KEY
    assert call.body == {
        "amount": {"currency_code": "EUR", "value": "5.00"},
        "custom_id": REFUND_KEY,
        "invoice_id": REFUND_KEY,
    }
    [recorded] = fake.orders[next(iter(fake.orders))]["purchase_units"][0]["payments"]["refunds"]
    assert outcome == again == Succeeded(recorded["id"], Money(500, EUR))


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (Money(2000, EUR), "amount_too_large"),  # REFUND_AMOUNT_EXCEEDED
        (Money(500, "USD"), "currency_mismatch"),  # REFUND_CAPTURE_CURRENCY_MISMATCH
        (Money(0, EUR), "invalid_amount"),
    ],
)
def test_a_refund_paypal_refuses_is_declined_with_our_code(
    gateway: PayPalGateway, fake: FakePayPal, amount: Money, code: str
) -> None:
    capture_id = paid(gateway)

    outcome = gateway.refund(refund(capture_id, amount))

    assert isinstance(outcome, Declined)
    assert outcome.code == code


@pytest.mark.parametrize("first_amount", [1500, 1999])
def test_refunds_never_exceed_the_capture(
    gateway: PayPalGateway, fake: FakePayPal, first_amount: int
) -> None:
    capture_id = paid(gateway)
    first = gateway.refund(refund(capture_id, Money(first_amount, EUR)))

    second = gateway.refund(refund(capture_id, Money(500, EUR), key=REFUND_KEY[:-1] + "2"))

    assert isinstance(first, Succeeded)
    assert isinstance(second, Declined)
    assert second.code == "amount_too_large"  # REFUND_AMOUNT_EXCEEDED, CAPTURE_FULLY_REFUNDED
    # A refunded capture still took the money: the charge is still found as succeeded.
    assert gateway.find_charge(charge()) == Succeeded(capture_id, PRICE)


@pytest.mark.parametrize("reference", ["9ZZ99999999999999", "../orders/X", ""])
def test_a_refund_of_an_unknown_capture_is_charge_not_found(
    gateway: PayPalGateway, reference: str
) -> None:
    outcome = gateway.refund(refund(reference))

    assert isinstance(outcome, Declined)
    assert outcome.code == "charge_not_found"
    assert gateway.find_refund(refund(reference)) is None


def test_a_refund_whose_answer_was_lost_is_found_in_the_order_without_refunding_again(
    gateway: PayPalGateway, fake: FakePayPal
) -> None:
    capture_id = paid(gateway)
    assert gateway.find_refund(refund(capture_id)) is None
    fake.inject("refund", "timeout_after")

    assert isinstance(gateway.refund(refund(capture_id)), RetryableError)
    found = gateway.find_refund(refund(capture_id))

    order = fake.orders[next(iter(fake.orders))]
    [recorded] = order["purchase_units"][0]["payments"]["refunds"]
    assert found == Succeeded(recorded["id"], Money(500, EUR))
    assert len(fake.calls_to("POST", rf"/v2/payments/captures/{capture_id}/refund")) == 1
    assert gateway.find_refund(refund(capture_id, key=REFUND_KEY[:-1] + "9")) is None


@pytest.mark.parametrize(
    ("operation", "fault"), [("show_capture", "500"), ("show_order", "timeout")]
)
def test_find_refund_raises_when_paypal_cannot_be_asked(
    gateway: PayPalGateway, fake: FakePayPal, operation: str, fault: str
) -> None:
    capture_id = paid(gateway)
    fake.inject(operation, fault)

    with pytest.raises(GatewayUnavailable):
        gateway.find_refund(refund(capture_id))


def test_refund_amounts_read_back_exactly(gateway: PayPalGateway, fake: FakePayPal) -> None:
    capture_id = paid(gateway, charge(amount=Money(12345, "BHD")))

    outcome = gateway.refund(refund(capture_id, Money(1005, "BHD")))

    assert isinstance(outcome, Succeeded)
    assert outcome.amount == Money(1005, "BHD")
    [call] = fake.calls_to("POST", rf"/v2/payments/captures/{capture_id}/refund")
    assert Decimal(call.body["amount"]["value"]) == Decimal("1.005")
