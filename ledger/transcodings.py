"""How each value type of the ledger is stored inside an event (JSON transcodings).

Names are part of the stored format: never rename one without keeping the old name.
"""

from __future__ import annotations

from dataclasses import fields
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


class DataclassAsDict(Transcoding):
    """A frozen dataclass as a dict of its fields (nested values are transcoded too)."""

    def encode(self, obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in fields(obj)}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


class PriceAsDict(DataclassAsDict):
    type = Price
    name = "price"


class PaymentMethodAsDict(DataclassAsDict):
    type = PaymentMethod
    name = "payment_method"


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
