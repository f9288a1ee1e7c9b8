"""Coupons (promotion codes): what a business offers off its prices, and how often.

A coupon is registered once under its code, which customers type at checkout. Each
redemption is an event of the coupon, saved in the same transaction as the subscription
it discounts, so that two concurrent signups cannot both take the last redemption.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.clock import ensure_utc
from ledger.discounts import Discount, Duration, check_reduction
from ledger.errors import CouponExhausted, CouponExpired, CouponNotApplicable, InvalidCoupon
from ledger.money import Money


def coupon_id(code: str) -> UUID:
    """Coupon ids derive from their code, so a code is registered at most once."""
    return uuid5(NAMESPACE_URL, f"subledger:coupon:{code}")


class Coupon(Aggregate):
    # State set by the events' apply(); under TYPE_CHECKING because eventsourcing would
    # turn class annotations into constructor fields.
    if TYPE_CHECKING:
        code: str
        name: str
        percent_off: Decimal | None
        amount_off: Money | None
        duration: Duration
        duration_periods: int | None
        expires_at: datetime | None
        max_redemptions: int | None
        plan_codes: list[str]
        public: bool
        redemptions: int

    class Registered(Aggregate.Created):
        code: str
        name: str
        percent_off: Decimal | None
        amount_off: Money | None
        duration: Duration
        duration_periods: int | None
        expires_at: datetime | None
        max_redemptions: int | None
        plan_codes: list[str]
        public: bool

        def apply(self, coupon: Coupon) -> None:
            coupon.code = self.code
            coupon.name = self.name
            coupon.percent_off = self.percent_off
            coupon.amount_off = self.amount_off
            coupon.duration = self.duration
            coupon.duration_periods = self.duration_periods
            coupon.expires_at = self.expires_at
            coupon.max_redemptions = self.max_redemptions
            coupon.plan_codes = list(self.plan_codes)
            coupon.public = self.public
            coupon.redemptions = 0

    class Redeemed(Aggregate.Event):
        subscription_id: UUID

        def apply(self, coupon: Coupon) -> None:
            coupon.redemptions += 1

    @classmethod
    def register(
        cls,
        code: str,
        name: str,
        percent_off: Decimal | None,
        amount_off: Money | None,
        duration: Duration,
        duration_periods: int | None,
        expires_at: datetime | None,
        max_redemptions: int | None,
        plan_codes: list[str],
        public: bool,
        at: datetime,
    ) -> Coupon:
        check_reduction(percent_off, amount_off)
        if (duration is Duration.REPEATING) != (duration_periods is not None):
            raise InvalidCoupon("duration_periods goes with a repeating coupon, and only with it")
        if duration_periods is not None and duration_periods < 1:
            raise InvalidCoupon(
                f"a repeating coupon lasts 1 period or more, not {duration_periods}"
            )
        if max_redemptions is not None and max_redemptions < 1:
            raise InvalidCoupon(f"max redemptions must be 1 or more, not {max_redemptions}")
        if expires_at is not None and ensure_utc(expires_at) <= at:
            raise InvalidCoupon(f"coupon {code!r} would expire before it is registered")
        return cls._create(
            cls.Registered,
            id=coupon_id(code),
            timestamp=at,
            code=code,
            name=name,
            percent_off=percent_off,
            amount_off=amount_off,
            duration=duration,
            duration_periods=duration_periods,
            expires_at=ensure_utc(expires_at) if expires_at else None,
            max_redemptions=max_redemptions,
            plan_codes=sorted(set(plan_codes)),
            public=public,
        )

    def _unavailable(self, at: datetime) -> InvalidCoupon | None:
        """Why nobody can redeem this coupon at ``at`` (expired, used up), if so."""
        if self.expires_at is not None and at >= self.expires_at:
            return CouponExpired(f"coupon {self.code!r} expired on {self.expires_at.isoformat()}")
        if self.max_redemptions is not None and self.redemptions >= self.max_redemptions:
            return CouponExhausted(
                f"coupon {self.code!r} reached its {self.max_redemptions} redemptions"
            )
        return None

    def is_redeemable(self, at: datetime) -> bool:
        """Not expired and not used up (what a pricing page may show)."""
        return self._unavailable(at) is None

    def check_applies(self, plan_code: str, currency: str, at: datetime) -> None:
        """Raises why this coupon cannot discount a ``plan_code`` price in ``currency``."""
        if (refusal := self._unavailable(at)) is not None:
            raise refusal
        if self.plan_codes and plan_code not in self.plan_codes:
            raise CouponNotApplicable(
                f"coupon {self.code!r} applies to {', '.join(self.plan_codes)}, not {plan_code!r}"
            )
        if self.amount_off is not None and self.amount_off.currency != currency:
            raise CouponNotApplicable(
                f"coupon {self.code!r} takes {self.amount_off.currency} off, not {currency}"
            )

    def discount_from(self, first_period: int) -> Discount:
        """The discount this coupon gives, starting at period ``first_period``."""
        if self.duration is Duration.ONCE:
            last: int | None = first_period
        elif self.duration is Duration.REPEATING:
            assert self.duration_periods is not None
            last = first_period + self.duration_periods - 1
        else:
            last = None
        return Discount(
            self.code,
            self.percent_off,
            self.amount_off,
            first_period,
            last,
            tuple(self.plan_codes),
        )

    def redeem(
        self, subscription_id: UUID, plan_code: str, currency: str, first_period: int, at: datetime
    ) -> Discount:
        """Records a redemption for a subscription and returns its discount."""
        self.check_applies(plan_code, currency, at)
        self.trigger_event(self.Redeemed, timestamp=at, subscription_id=subscription_id)
        return self.discount_from(first_period)
