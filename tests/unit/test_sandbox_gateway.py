"""The sandbox gateway: test tokens, idempotency keys, refunds, records and faults."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateways.port import (
    ChargeRequest,
    Declined,
    Gateway,
    Gateways,
    Outcome,
    RefundRequest,
    RetryableError,
    Succeeded,
    UnknownGateway,
)
from gateways.sandbox import SandboxGateway
from ledger.money import Money


def eur(cents: int) -> Money:
    return Money(cents, "EUR")


PRICE = eur(1999)


def charge_of(
    amount: Money = PRICE, token: str = "tok_visa", key: str = "inv_1:1"
) -> ChargeRequest:
    return ChargeRequest(idempotency_key=key, token=token, amount=amount)


def refund_of(reference: str, amount: Money, key: str = "ref_1") -> RefundRequest:
    return RefundRequest(idempotency_key=key, charge_reference=reference, amount=amount)


def charged(sandbox: SandboxGateway, amount: Money = PRICE, key: str = "inv_1:1") -> str:
    outcome = sandbox.charge(charge_of(amount, key=key))
    assert isinstance(outcome, Succeeded)
    return outcome.reference


@pytest.fixture
def sandbox() -> Iterator[SandboxGateway]:
    with SandboxGateway() as gateway:
        yield gateway


# Charges


def test_a_card_is_charged_with_a_reference_derived_from_the_key(sandbox: SandboxGateway) -> None:
    outcome = sandbox.charge(charge_of(eur(1999), key="inv_1:1"))

    digest = hashlib.sha256(b"inv_1:1").hexdigest()[:20]
    assert outcome == Succeeded(reference=f"ch_sb_{digest}", amount=eur(1999))
    [record] = sandbox.charges()
    assert (record.key, record.token, record.amount) == ("inv_1:1", "tok_visa", eur(1999))
    assert (record.outcome, record.code, record.reference) == ("succeeded", None, f"ch_sb_{digest}")


def test_the_same_key_gets_the_same_reference_from_any_sandbox() -> None:
    with SandboxGateway() as first, SandboxGateway() as second:
        assert first.charge(charge_of()) == second.charge(charge_of())


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedExpiredCard", "expired_card"),
    ],
)
def test_a_declining_test_card_is_declined_and_the_decline_recorded(
    sandbox: SandboxGateway, token: str, code: str
) -> None:
    outcome = sandbox.charge(charge_of(token=token))

    assert isinstance(outcome, Declined)
    assert outcome.code == code
    assert outcome.message
    assert outcome.reference is not None
    assert outcome.reference.startswith("ch_sb_")
    assert [(c.outcome, c.code) for c in sandbox.charges()] == [("declined", code)]
    assert sandbox.find_charge(charge_of(key="inv_1:1")) == outcome


@pytest.mark.parametrize("cents", [0, -500])
def test_a_charge_of_nothing_or_less_is_refused_and_not_recorded(
    sandbox: SandboxGateway, cents: int
) -> None:
    outcome = sandbox.charge(charge_of(eur(cents)))

    assert isinstance(outcome, Declined)
    assert outcome.code == "invalid_amount"
    assert sandbox.charges() == []
    # Nothing recorded, so the key may still be used for a valid charge.
    assert isinstance(sandbox.charge(charge_of(eur(100))), Succeeded)


def test_a_processing_error_fails_every_time_and_records_nothing(sandbox: SandboxGateway) -> None:
    for _ in range(3):
        outcome = sandbox.charge(charge_of(token="tok_processingError"))
        assert isinstance(outcome, RetryableError)
        assert outcome.code == "processing_error"

    assert sandbox.charges() == []
    assert sandbox.find_charge(charge_of(key="inv_1:1")) is None


def test_a_timeout_before_the_bank_records_nothing(sandbox: SandboxGateway) -> None:
    outcome = sandbox.charge(charge_of(token="tok_timeout"))

    assert isinstance(outcome, RetryableError)
    assert outcome.code == "timeout"
    assert sandbox.charges() == []
    assert sandbox.find_charge(charge_of(key="inv_1:1")) is None


def test_a_lost_answer_is_recovered_by_retrying_with_the_same_key(sandbox: SandboxGateway) -> None:
    request = charge_of(token="tok_timeoutAfterCharge")

    first = sandbox.charge(request)
    retry = sandbox.charge(request)

    assert isinstance(first, RetryableError)
    assert first.code == "timeout"
    assert isinstance(retry, Succeeded)
    assert retry.amount == eur(1999)
    assert sandbox.charge(request) == retry
    assert len(sandbox.charges()) == 1


def test_find_charge_tells_what_was_recorded_for_a_key(sandbox: SandboxGateway) -> None:
    assert sandbox.find_charge(charge_of(key="inv_1:1")) is None

    answer = sandbox.charge(charge_of(token="tok_timeoutAfterCharge"))

    assert isinstance(answer, RetryableError)
    found = sandbox.find_charge(charge_of(key="inv_1:1"))
    assert isinstance(found, Succeeded)
    assert found.amount == eur(1999)
    assert sandbox.find_charge(charge_of(key="inv_2:1")) is None


def test_a_replayed_charge_answers_the_recorded_outcome_without_charging_again(
    sandbox: SandboxGateway,
) -> None:
    first = sandbox.charge(charge_of())
    declined = sandbox.charge(charge_of(token="tok_chargeDeclined", key="inv_2:1"))

    assert sandbox.charge(charge_of()) == first
    assert sandbox.charge(charge_of(token="tok_chargeDeclined", key="inv_2:1")) == declined
    assert [c.key for c in sandbox.charges()] == ["inv_1:1", "inv_2:1"]


@pytest.mark.parametrize(
    "reused",
    [
        charge_of(amount=eur(2999)),
        charge_of(amount=Money(1999, "USD")),
        charge_of(token="tok_mastercard"),
    ],
)
def test_a_key_reused_with_other_parameters_is_refused(
    sandbox: SandboxGateway, reused: ChargeRequest
) -> None:
    first = sandbox.charge(charge_of())

    outcome = sandbox.charge(reused)

    assert isinstance(outcome, Declined)
    assert outcome.code == "idempotency_key_reused"
    assert sandbox.find_charge(charge_of(key="inv_1:1")) == first
    assert len(sandbox.charges()) == 1


def test_a_customer_who_tops_up_their_account_is_charged_on_the_third_attempt(
    sandbox: SandboxGateway,
) -> None:
    token = "tok_recoversAfter_2"

    outcomes = [sandbox.charge(charge_of(token=token, key=f"inv_1:{n}")) for n in (1, 2, 3)]

    assert [o.code for o in outcomes if isinstance(o, Declined)] == ["insufficient_funds"] * 2
    assert isinstance(outcomes[2], Succeeded)
    # Replays answer what was recorded, they are not new attempts.
    assert sandbox.charge(charge_of(token=token, key="inv_1:1")) == outcomes[0]
    assert sandbox.charge(charge_of(token=token, key="inv_1:3")) == outcomes[2]
    assert isinstance(sandbox.charge(charge_of(token=token, key="inv_1:4")), Succeeded)
    assert len(sandbox.charges()) == 4


def test_concurrent_retries_of_one_charge_record_it_once(sandbox: SandboxGateway) -> None:
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(sandbox.charge(charge_of())))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(outcomes)) == 1
    assert len(sandbox.charges()) == 1


# Refunds


def test_a_charge_is_refunded_in_full(sandbox: SandboxGateway) -> None:
    reference = charged(sandbox, eur(1999))

    outcome = sandbox.refund(refund_of(reference, eur(1999)))

    digest = hashlib.sha256(b"ref_1").hexdigest()[:20]
    assert outcome == Succeeded(reference=f"re_sb_{digest}", amount=eur(1999))
    [record] = sandbox.refunds()
    assert (record.key, record.charge_reference, record.amount) == ("ref_1", reference, eur(1999))
    assert sandbox.find_refund(refund_of(reference, eur(1999))) == outcome


def test_two_partial_refunds_then_one_too_many(sandbox: SandboxGateway) -> None:
    reference = charged(sandbox, eur(1000))

    first = sandbox.refund(refund_of(reference, eur(400), key="ref_1"))
    second = sandbox.refund(refund_of(reference, eur(600), key="ref_2"))
    third = sandbox.refund(refund_of(reference, eur(1), key="ref_3"))

    assert isinstance(first, Succeeded)
    assert isinstance(second, Succeeded)
    assert first.reference != second.reference
    assert isinstance(third, Declined)
    assert third.code == "amount_too_large"
    assert [r.outcome for r in sandbox.refunds()] == ["succeeded", "succeeded", "declined"]


def test_a_refund_beyond_the_amount_paid_is_refused(sandbox: SandboxGateway) -> None:
    reference = charged(sandbox, eur(1000))

    outcome = sandbox.refund(refund_of(reference, eur(1001)))

    assert isinstance(outcome, Declined)
    assert outcome.code == "amount_too_large"
    assert outcome.reference is None
    # The refused refund did not use up any of the charge.
    assert isinstance(sandbox.refund(refund_of(reference, eur(1000), key="ref_2")), Succeeded)


def test_a_refund_of_an_unknown_or_declined_charge_is_refused(sandbox: SandboxGateway) -> None:
    declined = sandbox.charge(charge_of(token="tok_chargeDeclined"))
    assert isinstance(declined, Declined)
    assert declined.reference is not None

    unknown = sandbox.refund(refund_of("ch_sb_nope", eur(100), key="ref_1"))
    of_declined = sandbox.refund(refund_of(declined.reference, eur(100), key="ref_2"))

    assert isinstance(unknown, Declined)
    assert unknown.code == "charge_not_found"
    assert isinstance(of_declined, Declined)
    assert of_declined.code == "charge_not_found"


def test_a_refund_in_another_currency_is_refused(sandbox: SandboxGateway) -> None:
    reference = charged(sandbox, eur(1000))

    outcome = sandbox.refund(refund_of(reference, Money(1000, "USD")))

    assert isinstance(outcome, Declined)
    assert outcome.code == "currency_mismatch"


def test_a_refund_of_nothing_is_refused_and_not_recorded(sandbox: SandboxGateway) -> None:
    reference = charged(sandbox)

    outcome = sandbox.refund(refund_of(reference, eur(0)))

    assert isinstance(outcome, Declined)
    assert outcome.code == "invalid_amount"
    assert sandbox.refunds() == []
    assert sandbox.find_refund(refund_of(reference, eur(0))) is None


def test_a_replayed_refund_is_not_refunded_twice(sandbox: SandboxGateway) -> None:
    reference = charged(sandbox, eur(1000))

    first = sandbox.refund(refund_of(reference, eur(600)))
    replay = sandbox.refund(refund_of(reference, eur(600)))
    reused = sandbox.refund(refund_of(reference, eur(300)))

    assert replay == first
    assert isinstance(reused, Declined)
    assert reused.code == "idempotency_key_reused"
    assert len(sandbox.refunds()) == 1
    # Only 600 was refunded: 400 remain.
    assert isinstance(sandbox.refund(refund_of(reference, eur(400), key="ref_2")), Succeeded)


# Records


def test_records_survive_reopening_the_same_file(tmp_path: Path) -> None:
    path = str(tmp_path / "sandbox.db")
    with SandboxGateway(path) as before:
        paid = before.charge(charge_of(token="tok_timeoutAfterCharge"))
        reference = charged(before, eur(1000), key="inv_2:1")
        refunded = before.refund(refund_of(reference, eur(250)))
        for n in (1, 2):
            before.charge(charge_of(token="tok_recoversAfter_2", key=f"inv_3:{n}"))

    assert isinstance(paid, RetryableError)
    with SandboxGateway(path) as after:
        assert isinstance(after.find_charge(charge_of(key="inv_1:1")), Succeeded)
        assert after.find_refund(refund_of(reference, eur(250))) == refunded
        assert [c.key for c in after.charges()] == ["inv_1:1", "inv_2:1", "inv_3:1", "inv_3:2"]
        assert len(after.refunds()) == 1
        third = after.charge(charge_of(token="tok_recoversAfter_2", key="inv_3:3"))
        assert isinstance(third, Succeeded)
        assert isinstance(after.refund(refund_of(reference, eur(750), key="ref_2")), Succeeded)
        assert isinstance(after.refund(refund_of(reference, eur(1), key="ref_3")), Declined)


# Fault injection


def run_with_faults(seed: int) -> tuple[list[Outcome], SandboxGateway]:
    sandbox = SandboxGateway(timeout_rate=0.5, seed=seed)
    outcomes = [sandbox.charge(charge_of(key=f"inv_{n}:1")) for n in range(40)]
    return outcomes, sandbox


def test_faults_are_off_by_default(sandbox: SandboxGateway) -> None:
    outcomes = [sandbox.charge(charge_of(key=f"inv_{n}:1")) for n in range(40)]

    assert all(isinstance(outcome, Succeeded) for outcome in outcomes)


def test_the_same_seed_injects_the_same_timeouts() -> None:
    first, first_sandbox = run_with_faults(seed=7)
    again, again_sandbox = run_with_faults(seed=7)
    other, other_sandbox = run_with_faults(seed=8)

    assert first == again
    assert first_sandbox.charges() == again_sandbox.charges()
    assert first != other
    for gateway in (first_sandbox, again_sandbox, other_sandbox):
        gateway.close()


def test_injected_timeouts_lose_the_answer_or_the_request_and_never_double_charge() -> None:
    outcomes, sandbox = run_with_faults(seed=7)
    timed_out = [f"inv_{n}:1" for n, o in enumerate(outcomes) if isinstance(o, RetryableError)]
    found = [sandbox.find_charge(charge_of(key=key)) for key in timed_out]

    # Both kinds happen: some charges were recorded before the answer was lost, some not.
    assert any(f is None for f in found)
    assert any(isinstance(f, Succeeded) for f in found)
    assert all(isinstance(o, Succeeded | RetryableError) for o in outcomes)

    # Retrying each key until it succeeds charges every invoice exactly once.
    for key in timed_out:
        retries = (sandbox.charge(charge_of(key=key)) for _ in range(20))
        assert any(isinstance(outcome, Succeeded) for outcome in retries)
    keys = [c.key for c in sandbox.charges()]
    assert sorted(keys) == sorted(f"inv_{n}:1" for n in range(40))
    sandbox.close()


def test_faults_spare_declines() -> None:
    with SandboxGateway(timeout_rate=1.0) as faulty:
        outcome = faulty.charge(charge_of(token="tok_chargeDeclined"))

    assert isinstance(outcome, Declined)


def test_a_timeout_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout_rate"):
        SandboxGateway(timeout_rate=1.5)


# The registry of gateways


def test_a_payment_methods_gateway_name_selects_the_adapter(sandbox: SandboxGateway) -> None:
    gateway: Gateway = sandbox
    gateways = Gateways([gateway])

    assert gateways["sandbox"] is sandbox
    assert gateways.names() == ["sandbox"]
    assert "sandbox" in gateways
    assert "stripe" not in gateways
    assert gateways.get("stripe") is None


def test_an_unknown_gateway_name_says_which_are_configured(sandbox: SandboxGateway) -> None:
    gateways = Gateways([sandbox])

    with pytest.raises(UnknownGateway, match=r"'stripe'.*configured: 'sandbox'") as raised:
        gateways["stripe"]

    assert isinstance(raised.value, LookupError)
    assert str(raised.value) == "no payment gateway is named 'stripe' (configured: 'sandbox')"


def test_two_gateways_with_one_name_are_refused(sandbox: SandboxGateway) -> None:
    with SandboxGateway() as other, pytest.raises(ValueError, match="sandbox"):
        Gateways([sandbox, other])
