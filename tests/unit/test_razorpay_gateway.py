"""The Razorpay adapter against a local fake of Razorpay's REST API: recurring payments
on a saved token (an order, then a payment), idempotency through the order's receipt,
refunds that are never made twice, and every failure that leaves the outcome unknown."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from gateways.port import (
    ChargeRequest,
    Declined,
    GatewayUnavailable,
    Pending,
    RefundRequest,
    RetryableError,
    Succeeded,
)
from gateways.razorpay import NOTE_KEY, RazorpayGateway, decline_code, receipt_for
from ledger.money import Money
from tests.fakes import threaded_server
from tests.fakes.razorpay import KEY_ID, KEY_SECRET, WEBHOOK_SECRET, FakeRazorpay

KEY = "3f2b8c1e-7d4a-4f6e-9a0b-1c2d3e4f5a6b:payment:1"
REFUND_KEY = "3f2b8c1e-7d4a-4f6e-9a0b-1c2d3e4f5a6b:refund:1"
EUR_10 = Money(1000, "EUR")
PHONE = "+919876543210"


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    with threaded_server() as server:
        yield server


@pytest.fixture
def fake(server: HTTPServer) -> FakeRazorpay:
    return FakeRazorpay(server)


@pytest.fixture
def gateway(fake: FakeRazorpay) -> Iterator[RazorpayGateway]:
    gateway = RazorpayGateway(fake.config())
    yield gateway
    gateway.close()


def charge_request(
    token: str = "token_visa", amount: Money = EUR_10, key: str = KEY, phone: str | None = PHONE
) -> ChargeRequest:
    return ChargeRequest(
        key,
        token,
        amount,
        "INV-0001",
        customer_reference="cust_Ann",
        email="ann@example.com",
        phone=phone,
    )


def refund_request(
    charge_reference: str, amount: Money = EUR_10, key: str = REFUND_KEY
) -> RefundRequest:
    return RefundRequest(key, charge_reference, amount)


def paid(gateway: RazorpayGateway, amount: Money = EUR_10) -> str:
    outcome = gateway.charge(charge_request(amount=amount))
    assert isinstance(outcome, Succeeded)
    return outcome.reference


# The receipt


def test_the_receipt_is_derived_from_the_key_and_fits_razorpay_s_40_characters() -> None:
    assert receipt_for(KEY) == receipt_for(KEY)
    assert receipt_for(KEY) != receipt_for(KEY.replace(":1", ":2"))
    assert len(receipt_for(KEY)) == 35
    assert receipt_for(KEY).startswith("sl_")


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("insufficient_funds", "insufficient_funds"),
        ("card_expired", "expired_card"),
        ("card_declined", "card_declined"),
        ("payment_failed", "card_declined"),
        ("gateway_technical_error", "gateway_technical_error"),
        ("Some Odd-Reason", "some_odd_reason"),
        (None, "card_declined"),
    ],
)
def test_razorpay_s_error_reasons_map_to_our_codes(reason: str | None, code: str) -> None:
    assert decline_code(reason) == code


# Charges


def test_a_charge_creates_an_order_then_a_recurring_payment_on_the_token(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    outcome = gateway.charge(charge_request())

    [payment] = fake.payments.values()
    [order] = fake.orders.values()
    assert outcome == Succeeded(payment["id"], EUR_10)
    assert (payment["status"], payment["order_id"]) == ("captured", order["id"])
    assert [(s.method, s.path) for s in fake.seen] == [
        ("GET", "/v1/orders"),
        ("POST", "/v1/orders"),
        ("POST", "/v1/payments/create/recurring"),
        ("GET", f"/v1/payments/{payment['id']}"),
    ]
    basic = "Basic " + base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
    assert {s.authorization for s in fake.seen} == {basic}
    assert fake.seen[0].args == {"receipt": receipt_for(KEY)}
    assert fake.seen[1].body == {
        "amount": 1000,
        "currency": "EUR",
        "receipt": receipt_for(KEY),
        "notes": {NOTE_KEY: KEY},
        "payment_capture": True,
    }
    assert fake.seen[2].body == {
        "email": "ann@example.com",
        "contact": PHONE,
        "amount": 1000,
        "currency": "EUR",
        "order_id": order["id"],
        "customer_id": "cust_Ann",
        "token": "token_visa",
        "recurring": "1",
        "description": "INV-0001",
        "notes": {NOTE_KEY: KEY},
    }


def test_a_charge_in_a_zero_decimal_currency_sends_whole_units(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    outcome = gateway.charge(charge_request(amount=Money(1500, "JPY")))
    [payment] = fake.payments.values()
    assert outcome == Succeeded(payment["id"], Money(1500, "JPY"))
    assert (payment["amount"], payment["currency"]) == (1500, "JPY")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("token_insufficientFunds", "insufficient_funds"),
        ("token_expiredCard", "expired_card"),
        ("token_declined", "card_declined"),
    ],
)
def test_a_failed_payment_is_declined_and_the_same_key_never_pays_again(
    fake: FakeRazorpay, gateway: RazorpayGateway, token: str, code: str
) -> None:
    first = gateway.charge(charge_request(token))
    again = gateway.charge(charge_request(token))

    [payment] = fake.payments.values()
    assert isinstance(first, Declined)
    assert (first.code, first.reference) == (code, payment["id"])
    assert first.message == payment["error_description"]
    assert again == first
    assert gateway.find_charge(charge_request(token)) == first
    assert (len(fake.orders), fake.calls("POST", "/v1/payments/create/recurring")) == (1, 1)


def test_a_payment_the_bank_settles_later_is_pending_and_is_not_paid_again(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    first = gateway.charge(charge_request("token_pending"))
    [payment] = fake.payments.values()
    assert first == Pending(payment["id"], EUR_10)
    assert gateway.charge(charge_request("token_pending")) == first
    assert gateway.find_charge(charge_request("token_pending")) == first
    assert len(fake.payments) == 1


def test_the_same_key_with_another_amount_is_refused(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    paid(gateway)
    outcome = gateway.charge(charge_request(amount=Money(2000, "EUR")))
    assert isinstance(outcome, Declined)
    assert outcome.code == "idempotency_key_reused"
    assert len(fake.payments) == 1


def test_an_amount_that_is_not_positive_is_declined_without_asking_razorpay(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    outcome = gateway.charge(charge_request(amount=Money(0, "EUR")))
    assert isinstance(outcome, Declined)
    assert outcome.code == "invalid_amount"
    assert fake.seen == []


def test_a_token_without_its_customer_cannot_be_charged(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    request = ChargeRequest(KEY, "token_visa", EUR_10, email="ann@example.com")
    outcome = gateway.charge(request)
    assert isinstance(outcome, Declined)
    assert outcome.code == "no_payment_method"
    assert fake.seen == []


def test_razorpay_s_validation_errors_are_declines_naming_the_field(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    # A customer without a phone: Razorpay insists on ``contact``, the operator sees why.
    outcome = gateway.charge(charge_request(phone=None))
    assert outcome == Declined("invalid_contact", "The contact field is required.")
    assert fake.payments == {}
    small = gateway.charge(charge_request(amount=Money(50, "EUR"), key=KEY + "0"))
    assert isinstance(small, Declined)
    assert small.code == "invalid_amount"


# Unknown outcomes


def test_a_rate_limit_is_retryable_after_the_time_razorpay_asks(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    fake.fail("GET", "/v1/orders", "rate_limited")
    assert gateway.charge(charge_request()) == RetryableError(
        "rate_limited", "127.0.0.1/v1/orders asked to slow down (429)", 7.0
    )
    assert fake.orders == {}


def test_a_server_error_is_retryable_and_the_retry_charges_once(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    fake.fail("POST", "/v1/payments/create/recurring", "server_error")
    first = gateway.charge(charge_request())
    assert isinstance(first, RetryableError)
    assert first.code == "processing_error"
    again = gateway.charge(charge_request())
    assert isinstance(again, Succeeded)
    assert (len(fake.orders), len(fake.payments)) == (1, 1)


def test_a_timeout_before_razorpay_did_anything_is_retryable(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    fake.fail("POST", "/v1/orders", "timeout")
    first = gateway.charge(charge_request())
    assert isinstance(first, RetryableError)
    assert first.code == "timeout"
    assert gateway.find_charge(charge_request()) is None
    assert isinstance(gateway.charge(charge_request()), Succeeded)
    assert (len(fake.orders), len(fake.payments)) == (1, 1)


def test_an_answer_lost_after_the_order_was_created_does_not_create_a_second_order(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    fake.fail("POST", "/v1/orders", "timeout_after")
    assert isinstance(gateway.charge(charge_request()), RetryableError)
    assert gateway.find_charge(charge_request()) is None  # an order, but no payment yet
    outcome = gateway.charge(charge_request())
    [payment] = fake.payments.values()
    assert outcome == Succeeded(payment["id"], EUR_10)
    assert (len(fake.orders), fake.calls("POST", "/v1/orders")) == (1, 1)


def test_an_answer_lost_after_the_payment_was_captured_is_found_and_never_paid_again(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    fake.fail("POST", "/v1/payments/create/recurring", "timeout_after")
    lost = gateway.charge(charge_request())
    assert isinstance(lost, RetryableError)
    assert lost.code == "timeout"

    [payment] = fake.payments.values()
    assert payment["status"] == "captured"
    found = gateway.find_charge(charge_request())
    assert found == Succeeded(payment["id"], EUR_10)
    assert gateway.charge(charge_request()) == found
    assert (len(fake.orders), len(fake.payments)) == (1, 1)
    assert fake.calls("POST", "/v1/payments/create/recurring") == 1


def test_an_order_found_paid_when_paying_it_answers_its_payment(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    fake.fail("POST", "/v1/payments/create/recurring", "timeout_after")
    assert isinstance(gateway.charge(charge_request()), RetryableError)
    [order] = fake.orders.values()
    # The order's payments list lags behind: Razorpay refuses to pay the order again.
    fake.fail("GET", f"/v1/orders/{order['id']}/payments", "empty_after")
    outcome = gateway.charge(charge_request())
    [payment] = fake.payments.values()
    assert outcome == Succeeded(payment["id"], EUR_10)
    assert fake.calls("POST", "/v1/payments/create/recurring") == 2
    assert len(fake.payments) == 1


@pytest.mark.parametrize("kind", ["not_json_after", "not_object_after"])
def test_an_unreadable_answer_is_retryable_and_the_retry_finds_the_payment(
    fake: FakeRazorpay, gateway: RazorpayGateway, kind: str
) -> None:
    fake.fail("POST", "/v1/payments/create/recurring", kind)  # type: ignore[arg-type]
    first = gateway.charge(charge_request())
    assert isinstance(first, RetryableError)
    assert first.code == "malformed_response"
    [payment] = fake.payments.values()
    assert gateway.charge(charge_request()) == Succeeded(payment["id"], EUR_10)
    assert len(fake.payments) == 1


def test_a_collection_of_the_wrong_shape_is_retryable(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    fake.fail("GET", "/v1/orders", "not_object_after")
    assert isinstance(gateway.charge(charge_request()), RetryableError)
    paid(gateway)
    [order] = fake.orders.values()
    order_payments = f"/v1/orders/{order['id']}/payments"
    fake.fail("GET", order_payments, "not_json_after")
    with pytest.raises(GatewayUnavailable, match="not JSON"):
        gateway.find_charge(charge_request())


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/v1/orders", "timeout"),
        ("/v1/orders", "server_error"),
        ("/v1/orders", "rate_limited"),
        ("/v1/orders", "not_json_after"),
        ("order_payments", "server_error"),
    ],
)
def test_find_charge_raises_when_razorpay_cannot_be_asked(
    fake: FakeRazorpay, gateway: RazorpayGateway, path: str, kind: str
) -> None:
    paid(gateway)
    [order] = fake.orders.values()
    path = f"/v1/orders/{order['id']}/payments" if path == "order_payments" else path
    fake.fail("GET", path, kind)  # type: ignore[arg-type]
    with pytest.raises(GatewayUnavailable):
        gateway.find_charge(charge_request())


def test_find_charge_without_an_order_is_none(gateway: RazorpayGateway) -> None:
    paid(gateway)
    assert gateway.find_charge(charge_request(key=KEY.replace(":1", ":2"))) is None


# Keys and secrets


def test_refused_keys_are_the_operator_s_problem_not_a_decline(fake: FakeRazorpay) -> None:
    gateway = RazorpayGateway(fake.config(key_secret="wrong-secret-value"))
    outcome = gateway.charge(charge_request())
    assert isinstance(outcome, RetryableError)
    assert outcome.code == "gateway_auth_failed"
    assert "wrong-secret-value" not in outcome.message
    with pytest.raises(GatewayUnavailable) as unavailable:
        gateway.find_charge(charge_request())
    assert "wrong-secret-value" not in str(unavailable.value)
    assert fake.orders == {}
    gateway.close()


def test_secrets_never_show_in_reprs_or_answers(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    config = fake.config()
    declined = gateway.charge(charge_request("token_declined"))
    fake.fail("GET", "/v1/orders", "server_error")
    retryable = gateway.charge(charge_request(key=KEY + "x"))
    shown = [repr(config), str(config), repr(gateway), repr(declined), repr(retryable)]
    assert KEY_ID in repr(config)
    for text in shown:
        assert KEY_SECRET not in text
        assert WEBHOOK_SECRET not in text


# Refunds


def test_a_refund_is_made_once_with_a_receipt_and_our_key(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    payment_id = paid(gateway)
    outcome = gateway.refund(refund_request(payment_id, Money(400, "EUR")))

    [refund] = fake.refunds.values()
    assert outcome == Succeeded(refund["id"], Money(400, "EUR"))
    [sent] = [s for s in fake.seen if s.path == f"/v1/payments/{payment_id}/refund"]
    assert sent.body == {
        "amount": 400,
        "receipt": receipt_for(REFUND_KEY),
        "notes": {NOTE_KEY: REFUND_KEY},
    }
    assert gateway.refund(refund_request(payment_id, Money(400, "EUR"))) == outcome
    assert gateway.find_refund(refund_request(payment_id, Money(400, "EUR"))) == outcome
    assert len(fake.refunds) == 1


def test_a_refund_whose_answer_was_lost_is_not_made_twice(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    payment_id = paid(gateway)
    fake.fail("POST", f"/v1/payments/{payment_id}/refund", "timeout_after")
    lost = gateway.refund(refund_request(payment_id))
    assert isinstance(lost, RetryableError)

    [refund] = fake.refunds.values()
    found = gateway.find_refund(refund_request(payment_id))
    assert found == Succeeded(refund["id"], EUR_10)
    assert gateway.refund(refund_request(payment_id)) == found
    assert fake.calls("POST", f"/v1/payments/{payment_id}/refund") == 1


def test_refunds_beyond_the_payment_are_too_large(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    payment_id = paid(gateway)
    assert isinstance(gateway.refund(refund_request(payment_id, Money(600, "EUR"))), Succeeded)
    second = RefundRequest(REFUND_KEY[:-1] + "2", payment_id, Money(500, "EUR"))
    outcome = gateway.refund(second)
    assert isinstance(outcome, Declined)
    assert outcome.code == "amount_too_large"
    assert gateway.find_refund(second) is None
    assert len(fake.refunds) == 1


def test_razorpay_s_own_refusal_of_the_amount_is_too_large(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    payment_id = paid(gateway)
    fake.add_refund(payment_id, 700)  # on the Dashboard, after we read the payment
    fake.payments[payment_id]["amount_refunded"] = 0  # what we read
    outcome = gateway.refund(refund_request(payment_id))
    assert isinstance(outcome, Declined)
    assert outcome.code == "amount_too_large"
    assert len(fake.refunds) == 1


def test_a_refund_of_an_unknown_or_uncaptured_payment_finds_no_charge(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    unknown = gateway.refund(refund_request("pay_Unknown0001"))
    assert isinstance(unknown, Declined)
    assert unknown.code == "charge_not_found"
    assert gateway.find_refund(refund_request("pay_Unknown0001")) is None
    declined = gateway.charge(charge_request("token_declined"))
    assert isinstance(declined, Declined)
    assert declined.reference is not None
    failed = gateway.refund(refund_request(declined.reference))
    assert isinstance(failed, Declined)
    assert failed.code == "charge_not_found"
    assert fake.refunds == {}


def test_a_refund_in_another_currency_is_refused(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    payment_id = paid(gateway)
    outcome = gateway.refund(refund_request(payment_id, Money(1000, "USD")))
    assert isinstance(outcome, Declined)
    assert outcome.code == "currency_mismatch"
    assert fake.refunds == {}


def test_our_refund_is_found_past_the_first_page_of_refunds(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    payment_id = paid(gateway, Money(100_000, "EUR"))
    for _ in range(100):
        fake.add_refund(payment_id, 1)
    ours = gateway.refund(refund_request(payment_id, Money(500, "EUR")))
    assert isinstance(ours, Succeeded)
    assert gateway.find_refund(refund_request(payment_id, Money(500, "EUR"))) == ours
    assert gateway.refund(refund_request(payment_id, Money(500, "EUR"))) == ours
    assert len(fake.refunds) == 101


def test_find_refund_raises_when_razorpay_cannot_be_asked(
    fake: FakeRazorpay, gateway: RazorpayGateway
) -> None:
    payment_id = paid(gateway)
    fake.fail("GET", f"/v1/payments/{payment_id}/refunds", "server_error")
    with pytest.raises(GatewayUnavailable):
        gateway.find_refund(refund_request(payment_id))
    fake.fail("GET", f"/v1/payments/{payment_id}/refunds", "timeout")
    lookup_lost = gateway.refund(refund_request(payment_id))
    assert isinstance(lookup_lost, RetryableError)
    assert fake.refunds == {}
