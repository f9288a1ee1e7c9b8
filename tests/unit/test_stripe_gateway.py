"""The Stripe adapter against a local fake of Stripe's API (``tests/fakes/stripe.py``):
charges as off-session PaymentIntents, declines, what may be retried under the same key,
a lost answer, look-ups by key, refunds, and Stripe's own minor units."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from gateways import stripe as adapter
from gateways.port import (
    ChargeRequest,
    Declined,
    GatewayUnavailable,
    Outcome,
    Pending,
    RefundRequest,
    RetryableError,
    Succeeded,
)
from gateways.stripe import StripeConfig, StripeGateway, from_stripe_amount, to_stripe_amount
from ledger.money import Money
from tests.fakes import threaded_server
from tests.fakes.stripe import API_KEY, PROCESSING, FakeStripe

KEY = "0b6f4d7e-8a52-4c1b-9f0e-3d2a1c5b7e90:payment:1"
CUSTOMER = "cus_Ann"


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    with threaded_server() as running:
        yield running


@pytest.fixture
def fake(server: HTTPServer) -> FakeStripe:
    return FakeStripe(server)


def gateway_on(fake: FakeStripe, timeout: float = 2.0, api_key: str = API_KEY) -> StripeGateway:
    return StripeGateway(StripeConfig(api_key, api_base=fake.url, timeout=timeout))


@pytest.fixture
def gateway(fake: FakeStripe) -> Iterator[StripeGateway]:
    gateway = gateway_on(fake)
    yield gateway
    gateway.close()


def charge_of(token: str = "pm_card_visa", key: str = KEY, amount: int = 1999) -> ChargeRequest:
    return ChargeRequest(key, token, Money(amount, "EUR"), "INV-0001", CUSTOMER, "ann@example.com")


def succeeded_charge(gateway: StripeGateway) -> Succeeded:
    outcome = gateway.charge(charge_of())
    assert isinstance(outcome, Succeeded)
    return outcome


# Charges


def test_a_charge_is_a_confirmed_off_session_payment_intent_sent_under_our_key(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    outcome = gateway.charge(charge_of())

    (intent,) = fake.intents.values()
    assert outcome == Succeeded(intent["id"], Money(1999, "EUR"))
    (sent,) = fake.posts("/v1/payment_intents")
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["Idempotency-Key"] == KEY
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent.headers["Stripe-Version"]  # pinned by the library
    assert sent.form == {
        "amount": "1999",
        "currency": "eur",
        "customer": CUSTOMER,
        "payment_method": "pm_card_visa",
        "off_session": "true",
        "confirm": "true",
        "automatic_payment_methods[enabled]": "true",
        "automatic_payment_methods[allow_redirects]": "never",
        "description": "INV-0001",
        "metadata[idempotency_key]": KEY,
    }


def test_the_same_key_sent_again_answers_the_same_payment_intent(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    first = gateway.charge(charge_of())
    assert gateway.charge(charge_of()) == first
    assert len(fake.intents) == 1


def test_a_bank_debit_that_settles_later_is_pending(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    outcome = gateway.charge(charge_of(PROCESSING))
    (intent_id,) = fake.intents
    assert outcome == Pending(intent_id, Money(1999, "EUR"))


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("pm_card_visa_chargeDeclined", "card_declined"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_visa_chargeDeclinedExpiredCard", "expired_card"),
        ("pm_card_visa_chargeDeclinedFraudulent", "fraudulent"),
        ("pm_card_visa_chargeDeclinedLostCard", "lost_card"),
        # Stripe saves the 402 under the key: only a new attempt (new key) can succeed.
        ("pm_card_chargeDeclinedProcessingError", "processing_error"),
        ("pm_card_authenticationRequired", "authentication_required"),
    ],
)
def test_a_card_decline_is_declined_with_our_code_and_the_payment_intent(
    gateway: StripeGateway, fake: FakeStripe, token: str, code: str
) -> None:
    outcome = gateway.charge(charge_of(token))

    (intent_id,) = fake.intents
    assert isinstance(outcome, Declined)
    assert (outcome.code, outcome.reference) == (code, intent_id)
    assert outcome.message  # Stripe's words, fit for the customer
    # Replayed, not charged again; and found by key.
    assert gateway.charge(charge_of(token)) == outcome
    assert gateway.find_charge(charge_of(token)) == outcome
    assert len(fake.intents) == 1


def test_the_same_key_with_another_amount_is_refused_as_reused(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    succeeded_charge(gateway)
    outcome = gateway.charge(charge_of(amount=2999))
    assert isinstance(outcome, Declined)
    assert outcome.code == "idempotency_key_reused"
    assert len(fake.intents) == 1


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (charge_of(amount=0), "invalid_amount"),
        (charge_of(token="card_gone"), "no_payment_method"),
    ],
    ids=["zero-amount", "unknown-payment-method"],
)
def test_a_request_stripe_refuses_is_declined(
    gateway: StripeGateway, fake: FakeStripe, request_: ChargeRequest, code: str
) -> None:
    outcome = gateway.charge(request_)
    assert isinstance(outcome, Declined)
    assert outcome.code == code
    assert fake.intents == {}


def test_a_card_saved_without_a_stripe_customer_is_not_sent(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    request = ChargeRequest(KEY, "pm_card_visa", Money(1999, "EUR"))
    assert gateway.charge(request) == Declined(
        "no_payment_method", "The card is not saved at a Stripe customer."
    )
    assert gateway.find_charge(request) is None
    assert fake.requests == []


# What may be sent again with the same key


def test_a_rate_limit_is_retryable_after_what_stripe_asked_and_charges_nothing(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    fake.fail_next(
        429,
        {"error": {"type": "invalid_request_error", "message": "Too many requests."}},
        {"Retry-After": "7"},
    )
    assert gateway.charge(charge_of()) == RetryableError(
        "rate_limited", "Stripe asked to slow down (429).", 7.0
    )
    assert fake.intents == {}
    # Not saved by Stripe: the same key then charges, once.
    assert isinstance(gateway.charge(charge_of()), Succeeded)
    assert len(fake.intents) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_retryable(gateway: StripeGateway, fake: FakeStripe, status: int) -> None:
    fake.fail_next(status, {"error": {"type": "api_error", "message": "Something went wrong."}})
    outcome = gateway.charge(charge_of())
    assert isinstance(outcome, RetryableError)
    assert outcome.code == "processing_error"


def test_a_request_still_running_under_the_key_is_retryable_and_charges_once(
    fake: FakeStripe, gateway: StripeGateway
) -> None:
    fake.work_delay = 0.5
    first: list[Outcome] = []
    running = threading.Thread(target=lambda: first.append(gateway.charge(charge_of())))
    running.start()
    while not fake.requests:
        threading.Event().wait(0.01)

    other = gateway_on(fake)
    concurrent = other.charge(charge_of())
    running.join()
    other.close()

    assert isinstance(concurrent, RetryableError)
    assert concurrent.code == "idempotency_key_in_use"
    (intent_id,) = fake.intents
    assert first == [Succeeded(intent_id, Money(1999, "EUR"))]


def test_a_timeout_is_retryable(fake: FakeStripe) -> None:
    fake.work_delay = 0.6
    gateway = gateway_on(fake, timeout=0.2)
    try:
        outcome = gateway.charge(charge_of(key="other:payment:1"))
    finally:
        gateway.close()
    assert outcome == RetryableError("timeout", "No answer from Stripe: the outcome is unknown.")


def test_an_answer_lost_after_stripe_charged_is_found_by_key_and_never_charged_twice(
    fake: FakeStripe,
) -> None:
    gateway = gateway_on(fake, timeout=0.2)
    fake.answer_delay = 0.6  # Stripe records the PaymentIntent; its answer comes too late

    lost = gateway.charge(charge_of())

    assert isinstance(lost, RetryableError)
    assert lost.code == "timeout"
    (intent,) = fake.intents.values()
    assert intent["status"] == "succeeded"
    found = gateway.find_charge(charge_of())
    assert found == Succeeded(intent["id"], Money(1999, "EUR"))
    fake.answer_delay = 0.0
    assert gateway.charge(charge_of()) == found  # the saved answer, replayed
    assert len(fake.intents) == 1
    assert len(fake.posts("/v1/payment_intents")) == 2
    gateway.close()


def test_stripe_unreachable_is_retryable(fake: FakeStripe) -> None:
    gateway = StripeGateway(StripeConfig(API_KEY, api_base="http://127.0.0.1:9", timeout=1.0))
    outcome = gateway.charge(charge_of())
    assert isinstance(outcome, RetryableError)
    assert outcome.code == "network_error"
    with pytest.raises(GatewayUnavailable):
        gateway.find_charge(charge_of())
    gateway.close()


@pytest.mark.parametrize(
    "body",
    [b"<html>Bad gateway</html>", b'{"object": "payment_intent"}', b"[]"],
    ids=["not-json", "no-status", "not-an-object"],
)
def test_an_unreadable_answer_is_retryable(
    gateway: StripeGateway, fake: FakeStripe, body: bytes
) -> None:
    fake.fail_next(200, body)
    outcome = gateway.charge(charge_of())
    assert isinstance(outcome, RetryableError)
    assert outcome.code == "malformed_response"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_api_key_is_the_operators_to_fix_and_never_leaks(
    fake: FakeStripe, status: int
) -> None:
    secret = "sk_live_51TheRealKeyMustNotLeak"
    fake.fail_next(
        status,
        {"error": {"type": "invalid_request_error", "message": f"Invalid API Key: {secret}"}},
    )
    gateway = gateway_on(fake, api_key=secret)
    outcome = gateway.charge(charge_of())
    assert isinstance(outcome, RetryableError)
    assert outcome.code == "gateway_auth_failed"
    assert secret not in repr(outcome)
    assert secret not in repr(gateway)
    assert secret not in repr(gateway.config)
    # The fake's own check: a key it does not know is refused the same way.
    assert gateway.charge(charge_of()) == RetryableError(
        "gateway_auth_failed", "Stripe refused the API key (HTTP 401): check it."
    )
    with pytest.raises(GatewayUnavailable) as refused:
        gateway.find_charge(charge_of())
    assert secret not in str(refused.value)


def test_a_message_echoing_a_key_is_redacted(gateway: StripeGateway, fake: FakeStripe) -> None:
    fake.fail_next(
        400,
        {
            "error": {
                "type": "invalid_request_error",
                "code": "parameter_unknown",
                "message": "Unknown key sk_test_51Echoed used.",
            }
        },
    )
    outcome = gateway.charge(charge_of())
    assert outcome == Declined("parameter_unknown", "Unknown key [redacted] used.")


# Look-ups by key


def test_find_charge_is_none_when_stripe_has_no_payment_intent_under_the_key(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    gateway.charge(charge_of(key="another:payment:1"))
    posts = len(fake.posts("/v1/payment_intents"))
    assert gateway.find_charge(charge_of()) is None
    assert len(fake.posts("/v1/payment_intents")) == posts  # it never charges
    (listed,) = [r for r in fake.requests if r.method == "GET"]
    assert listed.query == {"customer": CUSTOMER, "limit": "100"}


def test_find_charge_reads_a_pending_payment_intent(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    pending = gateway.charge(charge_of(PROCESSING))
    assert gateway.find_charge(charge_of(PROCESSING)) == pending


def test_find_charge_walks_the_pages_to_an_older_payment_intent(
    gateway: StripeGateway, fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter, "PAGE_SIZE", 2)
    oldest = succeeded_charge(gateway)
    for attempt in range(2, 7):
        gateway.charge(charge_of(key=f"inv:payment:{attempt}"))
    assert gateway.find_charge(charge_of()) == oldest
    assert len([r for r in fake.requests if r.method == "GET"]) == 3


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"error": {"type": "api_error", "message": "Oops."}}'),
        (429, b'{"error": {"type": "invalid_request_error", "message": "Slow down."}}'),
        (401, b'{"error": {"type": "invalid_request_error", "message": "Bad key."}}'),
        (200, b"not json"),
        (200, b'{"object": "list", "data": "nope"}'),
        (200, b'{"object": "list", "data": [1], "has_more": false}'),
    ],
    ids=["5xx", "429", "401", "not-json", "wrong-shape", "not-objects"],
)
def test_a_look_up_that_cannot_be_answered_raises_gateway_unavailable(
    gateway: StripeGateway, fake: FakeStripe, status: int, body: bytes
) -> None:
    fake.fail_next(status, body)
    with pytest.raises(GatewayUnavailable):
        gateway.find_charge(charge_of())


# Refunds


def refund_of(charge: str, amount: int = 500, key: str = "inv:refund:1") -> RefundRequest:
    return RefundRequest(key, charge, Money(amount, "EUR"))


def test_a_refund_of_the_payment_intent_is_sent_under_our_key(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    charge = succeeded_charge(gateway)

    outcome = gateway.refund(refund_of(charge.reference))

    (refund,) = fake.refunds.values()
    assert outcome == Succeeded(refund["id"], Money(500, "EUR"))
    (sent,) = fake.posts("/v1/refunds")
    assert sent.headers["Idempotency-Key"] == "inv:refund:1"
    assert sent.form == {
        "payment_intent": charge.reference,
        "amount": "500",
        "metadata[idempotency_key]": "inv:refund:1",
    }
    assert gateway.refund(refund_of(charge.reference)) == outcome
    assert gateway.find_refund(refund_of(charge.reference)) == outcome
    assert len(fake.refunds) == 1


def test_a_refund_beyond_what_is_left_is_too_large(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    charge = succeeded_charge(gateway)
    too_much = gateway.refund(refund_of(charge.reference, 2000))
    assert isinstance(too_much, Declined)
    assert too_much.code == "amount_too_large"
    assert isinstance(gateway.refund(refund_of(charge.reference, 1999, "inv:refund:2")), Succeeded)
    again = gateway.refund(refund_of(charge.reference, 1, "inv:refund:3"))
    assert isinstance(again, Declined)
    assert again.code == "amount_too_large"  # Stripe: charge_already_refunded


def test_a_refund_of_an_unknown_charge_is_not_found(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    outcome = gateway.refund(refund_of("pi_unknown"))
    assert isinstance(outcome, Declined)
    assert outcome.code == "charge_not_found"
    assert gateway.find_refund(refund_of("pi_unknown")) is None
    assert fake.posts("/v1/refunds") == []


def test_a_refund_in_another_currency_is_refused_before_stripe_refunds_anything(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    charge = succeeded_charge(gateway)
    outcome = gateway.refund(RefundRequest("inv:refund:1", charge.reference, Money(500, "USD")))
    assert outcome == Declined("currency_mismatch", "The charge is in EUR, the refund in USD.")
    assert fake.posts("/v1/refunds") == []


def test_find_refund_is_none_for_a_key_never_refunded_and_unavailable_on_5xx(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    charge = succeeded_charge(gateway)
    gateway.refund(refund_of(charge.reference))
    assert gateway.find_refund(refund_of(charge.reference, key="inv:refund:2")) is None
    fake.fail_next(503, b"")
    with pytest.raises(GatewayUnavailable):
        gateway.find_refund(refund_of(charge.reference))


# Stripe's minor units


@pytest.mark.parametrize(
    ("money", "stripe_amount"),
    [
        (Money(1999, "EUR"), 1999),
        (Money(500, "JPY"), 500),
        (Money(1230, "BHD"), 1230),
        (Money(123, "ISK"), 12300),  # ISO 0 decimals, Stripe 2
        (Money(1200, "MGA"), 12),  # ISO 2 decimals, Stripe 0
    ],
)
def test_amounts_go_in_stripes_minor_units_and_back(money: Money, stripe_amount: int) -> None:
    assert to_stripe_amount(money) == stripe_amount
    assert from_stripe_amount(stripe_amount, money.currency.lower()) == money


def test_an_amount_stripe_cannot_express_is_declined_without_a_request(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    request = ChargeRequest(KEY, "pm_card_visa", Money(1234, "MGA"), "", CUSTOMER)
    outcome = gateway.charge(request)
    assert isinstance(outcome, Declined)
    assert outcome.code == "invalid_amount"
    assert fake.requests == []
