"""The Authorize.net adapter against a local fake of its JSON API (tests/fakes/authorizenet)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from pytest_httpserver import HTTPServer

from gateways.authorizenet import (
    MAX_DUPLICATE_WINDOW,
    AuthorizeNetConfig,
    AuthorizeNetGateway,
    short_id,
)
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
from tests.fakes.authorizenet import LOGIN, TRANSACTION_KEY, FakeAuthorizeNet

KEY = "3f0c6a8e-1d2b-4c5d-9e7f-0a1b2c3d4e5f:payment:1"
CUSTOMER, CARD = "900100", "800200"


@pytest.fixture
def fake() -> FakeAuthorizeNet:
    fake = FakeAuthorizeNet()
    fake.add_profile(CUSTOMER, CARD)
    for behaviour in ("decline", "expired", "review", "retry"):
        fake.add_profile(CUSTOMER, behaviour, behaviour)
    return fake


@pytest.fixture
def gateway(fake: FakeAuthorizeNet, httpserver: HTTPServer) -> Iterator[AuthorizeNetGateway]:
    config = AuthorizeNetConfig(LOGIN, TRANSACTION_KEY, fake.install(httpserver), timeout=0.3)
    gateway = AuthorizeNetGateway(config)
    yield gateway
    gateway.close()


def charge(amount: int = 1999, card: str = CARD, key: str = KEY) -> ChargeRequest:
    return ChargeRequest(
        key, card, Money(amount, "EUR"), "INV-2025-0007", CUSTOMER, "ann@example.com"
    )


def refund(charge_reference: str, amount: int, n: int = 1) -> RefundRequest:
    return RefundRequest(f"{KEY}:refund:{n}", charge_reference, Money(amount, "EUR"))


def paid(gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet, amount: int = 1999) -> str:
    outcome = gateway.charge(charge(amount))
    assert isinstance(outcome, Succeeded)
    return outcome.reference


# Charges


def test_an_approved_charge_succeeds_with_the_transaction_id(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    outcome = gateway.charge(charge())
    (made,) = fake.charges()
    assert outcome == Succeeded(made.trans_id, Money(1999, "EUR"))
    assert (made.amount, made.status) == (Decimal("19.99"), "capturedPendingSettlement")


def test_the_request_is_a_profile_charge_in_the_schema_order(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    gateway.charge(charge())
    (sent,) = fake.requests
    body = sent["createTransactionRequest"]
    assert list(body) == ["merchantAuthentication", "refId", "transactionRequest"]
    assert body["merchantAuthentication"] == {"name": LOGIN, "transactionKey": TRANSACTION_KEY}
    assert body["refId"] == short_id(KEY)
    assert body["transactionRequest"] == {
        "transactionType": "authCaptureTransaction",
        "amount": "19.99",
        "currencyCode": "EUR",
        "profile": {"customerProfileId": CUSTOMER, "paymentProfile": {"paymentProfileId": CARD}},
        "order": {"invoiceNumber": short_id(KEY), "description": "INV-2025-0007"},
        "transactionSettings": {
            "setting": [{"settingName": "duplicateWindow", "settingValue": "28800"}]
        },
    }
    assert list(body["transactionRequest"]) == [
        "transactionType",
        "amount",
        "currencyCode",
        "profile",
        "order",
        "transactionSettings",
    ]


def test_derived_ids_are_short_deterministic_and_distinct() -> None:
    assert short_id(KEY) == short_id(KEY)
    assert len(short_id(KEY)) == 20
    assert short_id(KEY) != short_id(KEY.replace(":1", ":2"))


def test_amounts_follow_the_currency_exponent(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    gateway.charge(ChargeRequest(KEY, CARD, Money(1000, "JPY"), "", CUSTOMER))
    assert fake.requests[0]["createTransactionRequest"]["transactionRequest"]["amount"] == "1000"


@pytest.mark.parametrize(
    ("card", "code"),
    [("decline", "card_declined"), ("expired", "expired_card")],
)
def test_declines_are_final_with_our_code(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet, card: str, code: str
) -> None:
    outcome = gateway.charge(charge(card=card))
    assert isinstance(outcome, Declined)
    (made,) = fake.transactions
    assert (outcome.code, outcome.reference) == (code, made.trans_id)
    assert fake.charges() == []


def test_a_charge_held_for_review_is_pending(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    outcome = gateway.charge(charge(card="review"))
    (held,) = fake.charges()
    assert outcome == Pending(held.trans_id, Money(1999, "EUR"))
    assert gateway.find_charge(charge(card="review")) == outcome


def test_a_try_again_error_is_retryable(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    outcome = gateway.charge(charge(card="retry"))
    assert isinstance(outcome, RetryableError)
    assert outcome.code == "processing_error"
    assert fake.transactions == []


def test_an_unknown_payment_profile_is_declined(gateway: AuthorizeNetGateway) -> None:
    outcome = gateway.charge(charge(card="123"))
    assert isinstance(outcome, Declined)
    assert outcome.code == "record_not_found"


def test_a_non_positive_amount_or_a_missing_profile_is_declined_without_a_call(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    zero = gateway.charge(charge(amount=0))
    no_profile = gateway.charge(ChargeRequest(KEY, CARD, Money(100, "EUR")))
    assert isinstance(zero, Declined)
    assert isinstance(no_profile, Declined)
    assert (zero.code, no_profile.code) == ("invalid_amount", "customer_profile_missing")
    assert fake.requests == []


def test_bad_credentials_are_an_operator_problem_and_never_leak(
    fake: FakeAuthorizeNet, httpserver: HTTPServer
) -> None:
    secret = "Wrong-Key-9z"
    config = AuthorizeNetConfig(LOGIN, secret, fake.install(httpserver), signature_key="SigKey")
    gateway = AuthorizeNetGateway(config)
    outcome = gateway.charge(charge())
    gateway.close()
    assert isinstance(outcome, RetryableError)
    assert outcome.code == "gateway_auth_failed"
    for text in (outcome.message, repr(outcome), repr(config), repr(gateway)):
        assert secret not in text
        assert "SigKey" not in text
    assert LOGIN in repr(config)


@pytest.mark.parametrize(
    ("fault", "code", "retry_after"),
    [
        ("http_500", "processing_error", None),
        ("http_429", "rate_limited", 7.0),
        ("malformed", "malformed_response", None),
        ("wrong_shape", "malformed_response", None),
    ],
)
def test_failures_that_leave_the_outcome_unknown_are_retryable(
    gateway: AuthorizeNetGateway,
    fake: FakeAuthorizeNet,
    fault: str,
    code: str,
    retry_after: float | None,
) -> None:
    fake.faults.append(fault)
    outcome = gateway.charge(charge())
    assert isinstance(outcome, RetryableError)
    assert (outcome.code, outcome.retry_after) == (code, retry_after)
    assert fake.charges() == []
    assert TRANSACTION_KEY not in outcome.message


def test_an_answer_lost_after_the_charge_is_found_and_a_retry_charges_once(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    fake.faults.append("lose_answer")
    lost = gateway.charge(charge())
    assert isinstance(lost, RetryableError)
    assert lost.code == "timeout"
    fake.wait_for_lost_answer()
    (made,) = fake.charges()
    expected = Succeeded(made.trans_id, Money(1999, "EUR"))
    assert gateway.find_charge(charge()) == expected
    # Within the duplicate window Authorize.net refuses the repeat and names the original.
    assert gateway.charge(charge()) == expected
    assert fake.charges() == [made]


def test_a_repeat_of_a_declined_charge_answers_the_original_decline(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    first = gateway.charge(charge(card="decline"))
    again = gateway.charge(charge(card="decline"))
    assert isinstance(first, Declined)
    assert isinstance(again, Declined)
    assert (again.code, again.reference) == ("card_declined", first.reference)
    assert len(fake.transactions) == 1


def test_after_the_window_find_charge_reads_the_unsettled_then_the_settled_list(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    fake.faults.append("lose_answer")
    gateway.charge(charge())
    fake.wait_for_lost_answer()
    fake.window_open = False
    (made,) = fake.charges()
    expected = Succeeded(made.trans_id, Money(1999, "EUR"))
    assert gateway.find_charge(charge()) == expected
    fake.settle()
    assert gateway.find_charge(charge()) == expected
    methods = [next(iter(request)) for request in fake.requests]
    assert methods.count("getTransactionListForCustomerRequest") == 1
    assert fake.charges() == [made]


def test_find_charge_of_a_key_never_sent_is_none_and_charges_nothing(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    paid(gateway, fake)
    fake.settle()
    assert gateway.find_charge(charge(key=KEY.replace(":1", ":2"))) is None
    assert gateway.find_charge(charge(amount=5000)) is None
    assert len(fake.charges()) == 1


@pytest.mark.parametrize("fault", ["http_500", "http_429", "malformed", "lose_answer"])
def test_find_charge_raises_when_the_lookup_fails(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet, fault: str
) -> None:
    fake.faults.append(fault)
    with pytest.raises(GatewayUnavailable):
        gateway.find_charge(charge())
    fake.wait_for_lost_answer()


def test_find_charge_with_bad_credentials_raises(
    fake: FakeAuthorizeNet, httpserver: HTTPServer
) -> None:
    config = AuthorizeNetConfig(LOGIN, "nope", fake.install(httpserver))
    with pytest.raises(GatewayUnavailable, match="gateway_auth_failed"):
        AuthorizeNetGateway(config).find_charge(charge())


def test_a_caller_client_is_used_and_left_open(
    fake: FakeAuthorizeNet, httpserver: HTTPServer
) -> None:
    client = httpx.Client()
    gateway = AuthorizeNetGateway(
        AuthorizeNetConfig(LOGIN, TRANSACTION_KEY, fake.install(httpserver)), client
    )
    assert isinstance(gateway.charge(charge()), Succeeded)
    gateway.close()
    assert not client.is_closed
    client.close()


def test_the_duplicate_window_is_bounded() -> None:
    with pytest.raises(ValueError, match="duplicate_window"):
        AuthorizeNetConfig(LOGIN, TRANSACTION_KEY, duplicate_window=MAX_DUPLICATE_WINDOW + 1)
    assert AuthorizeNetConfig(LOGIN, TRANSACTION_KEY).api_url.startswith("https://api.authorize")


# Refunds


def test_a_refund_of_a_settled_charge_names_its_customer_profile_and_the_charge(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    reference = paid(gateway, fake)
    fake.settle()
    outcome = gateway.refund(refund(reference, 500))
    (made,) = fake.of_type("refundTransaction")
    assert outcome == Succeeded(made.trans_id, Money(500, "EUR"))
    assert made.ref_trans_id == reference
    sent = fake.requests[-1]["createTransactionRequest"]["transactionRequest"]
    # On the profile, so that the customer's transaction list shows it once settled.
    assert sent == {
        "transactionType": "refundTransaction",
        "amount": "5.00",
        "currencyCode": "EUR",
        "profile": {"customerProfileId": CUSTOMER, "paymentProfile": {"paymentProfileId": CARD}},
        "refTransId": reference,
        "order": {"invoiceNumber": short_id(f"{KEY}:refund:1")},
        "transactionSettings": {
            "setting": [{"settingName": "duplicateWindow", "settingValue": "28800"}]
        },
    }
    assert gateway.find_refund(refund(reference, 500)) == outcome


def test_refunds_beyond_the_charge_are_declined(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    reference = paid(gateway, fake)
    fake.settle()
    too_large = gateway.refund(refund(reference, 2000))
    assert isinstance(gateway.refund(refund(reference, 1500)), Succeeded)
    over_the_rest = gateway.refund(refund(reference, 1000, n=2))
    assert isinstance(too_large, Declined)
    assert isinstance(over_the_rest, Declined)
    assert (too_large.code, over_the_rest.code) == ("amount_too_large", "amount_too_large")
    assert len(fake.of_type("refundTransaction")) == 1


def test_a_refund_of_an_unknown_charge_is_declined(gateway: AuthorizeNetGateway) -> None:
    outcome = gateway.refund(refund("60099999999", 500))
    assert isinstance(outcome, Declined)
    assert outcome.code == "charge_not_found"
    assert gateway.find_refund(refund("60099999999", 500)) is None


def test_a_full_refund_of_an_unsettled_charge_voids_it(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    reference = paid(gateway, fake)
    outcome = gateway.refund(refund(reference, 1999))
    assert outcome == Succeeded(reference, Money(1999, "EUR"))
    sent = fake.requests[-1]["createTransactionRequest"]["transactionRequest"]
    assert sent == {"transactionType": "voidTransaction", "refTransId": reference}
    assert fake.find(reference).status == "voided"  # type: ignore[union-attr]
    # A retry whose void answer was lost, and the lookup, both read the voided charge.
    assert gateway.refund(refund(reference, 1999)) == outcome
    assert gateway.find_refund(refund(reference, 1999)) == outcome
    assert fake.of_type("refundTransaction") == []


def test_a_partial_refund_of_an_unsettled_charge_waits_for_settlement(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    reference = paid(gateway, fake)
    outcome = gateway.refund(refund(reference, 500))
    assert isinstance(outcome, Declined)
    assert outcome.code == "refund_before_settlement"
    assert fake.find(reference).status == "capturedPendingSettlement"  # type: ignore[union-attr]


def test_a_refund_whose_answer_was_lost_is_found_and_not_repeated(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    reference = paid(gateway, fake)
    fake.settle()
    fake.faults.extend([None, "lose_answer"])  # the details answer, then the refund's
    assert isinstance(gateway.refund(refund(reference, 700)), RetryableError)
    fake.wait_for_lost_answer()
    (made,) = fake.of_type("refundTransaction")
    expected = Succeeded(made.trans_id, Money(700, "EUR"))
    assert gateway.find_refund(refund(reference, 700)) == expected
    assert gateway.refund(refund(reference, 700)) == expected
    assert len(fake.of_type("refundTransaction")) == 1


def test_find_refund_raises_when_the_lookup_fails(
    gateway: AuthorizeNetGateway, fake: FakeAuthorizeNet
) -> None:
    fake.faults.append("http_500")
    with pytest.raises(GatewayUnavailable):
        gateway.find_refund(refund("60000000001", 500))
