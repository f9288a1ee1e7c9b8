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
from ledger.discounts import Discount, Duration
from ledger.invoices import InvoiceLine, InvoiceStatus, LineKind, PaymentRequest, RefundRequest
from ledger.money import Money
from ledger.subscriptions import SubscriptionStatus
from ledger.tax import TaxRate


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

    def __init__(self) -> None:
        # ``fields()`` walks the class each call: every saved invoice line paid for it.
        self.names = tuple(f.name for f in fields(self.type))

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in self.names}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


class PriceAsDict(DataclassAsDict):
    type = Price
    name = "price"


class PaymentMethodAsDict(DataclassAsDict):
    type = PaymentMethod
    name = "payment_method"


class DiscountAsDict(DataclassAsDict):
    type = Discount
    name = "discount"


class TaxRateAsDict(DataclassAsDict):
    type = TaxRate
    name = "tax_rate"


class InvoiceLineAsDict(DataclassAsDict):
    type = InvoiceLine
    name = "invoice_line"


class PaymentRequestAsDict(DataclassAsDict):
    type = PaymentRequest
    name = "payment_request"


class RefundRequestAsDict(DataclassAsDict):
    type = RefundRequest
    name = "refund_request"


class EnumAsStr(Transcoding):
    """An enum member as its value."""

    def encode(self, obj: Any) -> str:
        return str(obj.value)

    def decode(self, data: str) -> Any:
        return self.type(data)


class SubscriptionStatusAsStr(EnumAsStr):
    type = SubscriptionStatus
    name = "subscription_status"


class InvoiceStatusAsStr(EnumAsStr):
    type = InvoiceStatus
    name = "invoice_status"


class LineKindAsStr(EnumAsStr):
    type = LineKind
    name = "line_kind"


class DurationAsStr(EnumAsStr):
    type = Duration
    name = "coupon_duration"


def register_ledger_transcodings(transcoder: JSONTranscoder) -> None:
    for transcoding in (
        MoneyAsList(),
        IntervalAsList(),
        PeriodAsList(),
        PriceAsDict(),
        PaymentMethodAsDict(),
        DiscountAsDict(),
        TaxRateAsDict(),
        InvoiceLineAsDict(),
        PaymentRequestAsDict(),
        RefundRequestAsDict(),
        SubscriptionStatusAsStr(),
        InvoiceStatusAsStr(),
        LineKindAsStr(),
        DurationAsStr(),
    ):
        transcoder.register(transcoding)
