"""Coupons: what a business offers off its prices, to which plans, how long and how often."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from ledger.coupons import Coupon, coupon_id
from ledger.discounts import Discount, Duration
from ledger.errors import CouponExhausted, CouponExpired, CouponNotApplicable, InvalidCoupon
from ledger.money import Money

JAN = datetime(2025, 1, 15, tzinfo=UTC)


def coupon(**fields: Any) -> Coupon:
    """20% off once, on every plan, without expiry or limit, unless ``fields`` say else."""
    values: dict[str, Any] = {
        "code": "SPRING",
        "name": "Spring sale",
        "percent_off": Decimal(20),
        "amount_off": None,
        "duration": Duration.ONCE,
        "duration_periods": None,
        "expires_at": None,
        "max_redemptions": None,
        "plan_codes": [],
        "public": False,
        "at": JAN,
    }
    return Coupon.register(**(values | fields))


# Registering


def test_a_coupon_is_registered_under_its_code() -> None:
    spring = coupon(plan_codes=["pro", "basic", "pro"])
    assert spring.id == coupon_id("SPRING") != coupon_id("SUMMER")
    assert (spring.code, spring.percent_off, spring.redemptions) == ("SPRING", Decimal(20), 0)
    assert spring.plan_codes == ["basic", "pro"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"percent_off": None}, "either a percentage or an amount"),
        ({"amount_off": Money(500, "EUR")}, "either a percentage or an amount"),
        ({"percent_off": Decimal(0)}, "percent off must be in"),
        ({"percent_off": Decimal("100.01")}, "percent off must be in"),
        ({"percent_off": Decimal("12.345")}, "two decimals at most"),
        ({"percent_off": None, "amount_off": Money(0, "EUR")}, "amount off must be positive"),
        ({"duration": Duration.REPEATING}, "duration_periods goes with a repeating coupon"),
        ({"duration_periods": 3}, "duration_periods goes with a repeating coupon"),
        ({"duration": Duration.REPEATING, "duration_periods": 0}, "1 period or more"),
        ({"max_redemptions": 0}, "1 or more"),
        ({"expires_at": JAN}, "would expire before it is registered"),
    ],
)
def test_a_coupon_must_make_sense(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidCoupon, match=reason):
        coupon(**fields)


def test_a_hundred_percent_and_an_amount_off_are_valid_reductions() -> None:
    assert coupon(percent_off=Decimal("100.00")).percent_off == 100
    flat = coupon(percent_off=None, amount_off=Money(500, "EUR"))
    assert flat.amount_off == Money(500, "EUR")


# Redeeming


def test_a_coupon_past_its_expiry_is_refused() -> None:
    expiry = JAN + timedelta(days=30)
    spring = coupon(expires_at=expiry)
    spring.check_applies("pro", "EUR", expiry - timedelta(seconds=1))
    assert spring.is_redeemable(expiry - timedelta(seconds=1))
    with pytest.raises(CouponExpired, match="expired on 2025-02-14"):
        spring.check_applies("pro", "EUR", expiry)
    assert not spring.is_redeemable(expiry)


def test_a_coupon_is_redeemed_at_most_its_maximum_number_of_times() -> None:
    spring = coupon(max_redemptions=2)
    for _ in range(2):
        spring.redeem(uuid4(), "pro", "EUR", 0, JAN)
    assert spring.redemptions == 2
    assert not spring.is_redeemable(JAN)
    with pytest.raises(CouponExhausted, match="reached its 2 redemptions"):
        spring.redeem(uuid4(), "pro", "EUR", 0, JAN)
    assert spring.redemptions == 2


def test_a_coupon_for_some_plans_is_refused_on_others() -> None:
    spring = coupon(plan_codes=["pro"])
    spring.check_applies("pro", "EUR", JAN)
    with pytest.raises(CouponNotApplicable, match="applies to pro, not 'basic'"):
        spring.check_applies("basic", "EUR", JAN)


def test_an_amount_off_applies_only_in_its_currency_and_a_percentage_in_any() -> None:
    flat = coupon(percent_off=None, amount_off=Money(500, "EUR"))
    flat.check_applies("pro", "EUR", JAN)
    with pytest.raises(CouponNotApplicable, match="takes EUR off, not USD"):
        flat.check_applies("pro", "USD", JAN)
    coupon().check_applies("pro", "JPY", JAN)


def test_a_redemption_is_recorded_with_its_subscription() -> None:
    spring = coupon()
    spring.collect_events()
    subscription_id = uuid4()
    discount = spring.redeem(subscription_id, "pro", "EUR", 3, JAN)
    assert discount == Discount("SPRING", Decimal(20), None, 3, 3)
    [redeemed] = spring.collect_events()
    assert isinstance(redeemed, Coupon.Redeemed)
    assert redeemed.subscription_id == subscription_id


def test_a_refused_redemption_records_nothing() -> None:
    spring = coupon(plan_codes=["pro"])
    spring.collect_events()
    with pytest.raises(CouponNotApplicable):
        spring.redeem(uuid4(), "basic", "EUR", 0, JAN)
    assert (spring.collect_events(), spring.redemptions) == ([], 0)


# The discount a coupon gives


@pytest.mark.parametrize(
    ("duration", "periods", "last"),
    [(Duration.ONCE, None, 4), (Duration.REPEATING, 3, 6), (Duration.FOREVER, None, None)],
)
def test_the_discount_covers_one_n_or_every_period_from_the_first(
    duration: Duration, periods: int | None, last: int | None
) -> None:
    flat = coupon(
        percent_off=None,
        amount_off=Money(500, "EUR"),
        duration=duration,
        duration_periods=periods,
    )
    assert flat.discount_from(4) == Discount("SPRING", None, Money(500, "EUR"), 4, last)
