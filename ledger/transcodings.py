"""How each value type of the ledger is stored inside an event (JSON transcodings).

Names are part of the stored format: never rename one without keeping the old name.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from ledger.calendar import Interval, IntervalUnit, Period
from ledger.catalog import Price
from ledger.customers import PaymentMethod
from ledger.money import Money
from ledger.subscriptions import SubscriptionStatus


class MoneyAsList(Transcoding):
    type = Money
    name = "money"

    def encode(self, obj: Money) -> list[Any]:
        return [obj.amount, obj.currency]

    def decode(self, data: list[Any]) -> Money:
        return Money(data[0], data[1])


class IntervalAsList(Transcoding):
    type = Interval
    name = "interval"

    def encode(self, obj: Interval) -> list[Any]:
        return [obj.unit.value, obj.count]

    def decode(self, data: list[Any]) -> Interval:
        return Interval(IntervalUnit(data[0]), data[1])


class PeriodAsList(Transcoding):
    type = Period
    name = "period"

    def encode(self, obj: Period) -> list[Any]:
        return [obj.index, obj.start, obj.end]

    def decode(self, data: list[Any]) -> Period:
        return Period(data[0], data[1], data[2])


class PriceAsDict(Transcoding):
    type = Price
    name = "price"

    def encode(self, obj: Price) -> dict[str, Any]:
        return {
            "id": obj.id,
            "plan_code": obj.plan_code,
            "amount": obj.amount,
            "interval": obj.interval,
            "trial_days": obj.trial_days,
            "version": obj.version,
        }

    def decode(self, data: dict[str, Any]) -> Price:
        return Price(**data)


class PaymentMethodAsDict(Transcoding):
    type = PaymentMethod
    name = "payment_method"

    def encode(self, obj: PaymentMethod) -> dict[str, Any]:
        return {
            "id": obj.id,
            "gateway": obj.gateway,
            "token": obj.token,
            "brand": obj.brand,
            "last4": obj.last4,
            "exp_month": obj.exp_month,
            "exp_year": obj.exp_year,
        }

    def decode(self, data: dict[str, Any]) -> PaymentMethod:
        return PaymentMethod(**data)


class SubscriptionStatusAsStr(Transcoding):
    type = SubscriptionStatus
    name = "subscription_status"

    def encode(self, obj: SubscriptionStatus) -> str:
        return obj.value

    def decode(self, data: str) -> SubscriptionStatus:
        return SubscriptionStatus(data)


def register_ledger_transcodings(transcoder: JSONTranscoder) -> None:
    for transcoding in (
        MoneyAsList(),
        IntervalAsList(),
        PeriodAsList(),
        PriceAsDict(),
        PaymentMethodAsDict(),
        SubscriptionStatusAsStr(),
    ):
        transcoder.register(transcoding)
