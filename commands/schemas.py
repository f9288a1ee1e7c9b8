"""The commands services send, as pydantic models: validated at the edge, typed inside.

Every command carries a ``command_id`` chosen by the sender; sending the same id twice
changes nothing the second time and returns the first answer. Amounts are integer minor
units of the currency (1999 EUR is 19.99 EUR).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from ledger.catalog import MAX_TRIAL_DAYS

CommandId = Annotated[str, Field(min_length=1, max_length=200)]
# A Redis stream key of our own choosing: printable, no spaces, not one of ours.
StreamName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[!-~]+$")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
# E.164; some gateways (Razorpay) need the payer's phone to charge.
Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{7,14}$", examples=["+919876543210"])]
PlanCode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
IntervalText = Annotated[str, Field(min_length=3, max_length=20, examples=["month", "3 months"])]
CouponCode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
# Strict: a float or a string is not an amount; amounts are integer minor units.
MinorUnits = Annotated[int, Field(strict=True, gt=0, description="minor units")]
# Percentages as exact decimals ("12.5"); a float would carry binary noise.
Percent = Annotated[Decimal, Field(ge=0, le=100, max_digits=7, decimal_places=4)]


def _type_is_required(schema: dict[str, Any]) -> None:
    """On the wire the type says which command it is: required, though Python code that
    builds a command from its class need not give it."""
    schema["required"] = ["type", *schema.get("required", [])]


def _nul_free(value: Any) -> None:
    """PostgreSQL text cannot hold a NUL character: refused at the edge, not stored to
    break the projections later."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text may not contain a NUL character (\\u0000)")
    if isinstance(value, dict):
        for item in value.values():
            _nul_free(item)
    elif isinstance(value, list):
        for item in value:
            _nul_free(item)


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_type_is_required)

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        _nul_free(data)
        return data

    command_id: CommandId
    reply_to: StreamName | None = Field(
        None, description="on the bus: the stream the reply is added to (none: no reply)"
    )


class RegisterPlan(Command):
    type: Literal["plan.create"] = "plan.create"
    code: PlanCode
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = ""
    features: list[str] = []


class AddPrice(Command):
    type: Literal["plan.add_price"] = "plan.add_price"
    plan_code: PlanCode
    currency: CurrencyCode
    # Strict: a float or a string is not an amount; amounts are integer minor units.
    amount: Annotated[int, Field(strict=True, ge=0, description="minor units")]
    interval: IntervalText = "month"
    trial_days: Annotated[int, Field(strict=True, ge=0, le=MAX_TRIAL_DAYS)] = 0


class ArchivePrice(Command):
    type: Literal["plan.archive_price"] = "plan.archive_price"
    plan_code: PlanCode
    price_id: str


class ArchivePlan(Command):
    type: Literal["plan.archive"] = "plan.archive"
    plan_code: PlanCode


class RegisterCustomer(Command):
    """Registers a customer; the id is derived from the command id unless given."""

    type: Literal["customer.register"] = "customer.register"
    customer_id: UUID | None = None
    email: Annotated[str, Field(max_length=320)]
    name: Annotated[str, Field(max_length=200)]
    currency: CurrencyCode
    phone: Phone | None = None


class AddPaymentMethod(Command):
    type: Literal["customer.add_payment_method"] = "customer.add_payment_method"
    customer_id: UUID
    payment_method_id: Annotated[str, Field(min_length=1, max_length=100)]
    gateway: Annotated[str, Field(min_length=1, max_length=40)] = "sandbox"
    token: Annotated[str, Field(min_length=1, max_length=200)]
    brand: str = "visa"
    last4: str
    exp_month: Annotated[int, Field(strict=True, ge=1, le=12)]
    exp_year: Annotated[int, Field(strict=True, ge=2000, le=2199)]
    make_default: bool = False
    customer_reference: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="the gateway's id of the customer the token is saved under "
            "(Stripe cus_..., Razorpay cust_..., Authorize.net customer profile id)",
        ),
    ] = None


class ChangeCustomerContact(Command):
    type: Literal["customer.change_contact"] = "customer.change_contact"
    customer_id: UUID
    email: Annotated[str, Field(max_length=320)]
    name: Annotated[str, Field(max_length=200)]
    phone: Phone | None = Field(None, description="none: the phone on file stays")


class SwitchDefaultPaymentMethod(Command):
    type: Literal["customer.set_default_payment_method"] = "customer.set_default_payment_method"
    customer_id: UUID
    payment_method_id: str


class EraseCustomer(Command):
    """Erases the customer's personal data (a right-to-be-forgotten request): their
    email, name and phone become unreadable everywhere, for good; their subscriptions,
    invoices and payments stay and go on."""

    type: Literal["customer.erase"] = "customer.erase"
    customer_id: UUID


class StartSubscription(Command):
    """Starts a subscription; its id is derived from the command id."""

    type: Literal["subscription.start"] = "subscription.start"
    customer_id: UUID
    plan_code: PlanCode
    interval: IntervalText = "month"
    currency: CurrencyCode | None = Field(None, description="defaults to the customer's")
    trial_days: Annotated[int, Field(strict=True, ge=0, le=MAX_TRIAL_DAYS)] | None = Field(
        None, description="per-signup trial; defaults to the price's"
    )
    coupon: CouponCode | None = Field(None, description="a coupon (promotion code) to redeem")


class ChangePlan(Command):
    """Upgrades take effect now (prorated), downgrades at period end, unless ``when``."""

    type: Literal["subscription.change_plan"] = "subscription.change_plan"
    subscription_id: UUID
    plan_code: PlanCode
    interval: IntervalText | None = Field(None, description="defaults to the current one")
    when: Literal["now", "period_end"] | None = None


class CancelSubscription(Command):
    """Cancel ``now`` (optionally refunding the unused part), at ``period_end``, or at
    the instant ``when`` names (ISO 8601 with an offset)."""

    type: Literal["subscription.cancel"] = "subscription.cancel"
    subscription_id: UUID
    when: Literal["now", "period_end"] | AwareDatetime = "period_end"
    refund_unused: bool = False

    @model_validator(mode="after")
    def _refund_goes_with_now(self) -> CancelSubscription:
        if self.refund_unused and self.when != "now":
            raise ValueError("refund_unused goes with when='now': a later cancel uses its period")
        return self


class RevokeCancel(Command):
    type: Literal["subscription.revoke_cancel"] = "subscription.revoke_cancel"
    subscription_id: UUID


class PauseSubscription(Command):
    """Pause now; with ``resume_at``, it resumes on its own at that instant."""

    type: Literal["subscription.pause"] = "subscription.pause"
    subscription_id: UUID
    resume_at: AwareDatetime | None = None


class ResumeSubscription(Command):
    type: Literal["subscription.resume"] = "subscription.resume"
    subscription_id: UUID


class RegisterCoupon(Command):
    """A coupon (promotion code): ``percent_off`` or ``amount_off`` (with ``currency``),
    for ``once``, ``repeating`` (``duration_periods``) or ``forever``."""

    type: Literal["coupon.create"] = "coupon.create"
    code: CouponCode
    name: Annotated[str, Field(max_length=200)] = ""
    percent_off: Percent | None = None
    amount_off: MinorUnits | None = None
    currency: CurrencyCode | None = None
    duration: Literal["once", "repeating", "forever"] = "once"
    duration_periods: Annotated[int, Field(strict=True, ge=1, le=1200)] | None = None
    expires_at: AwareDatetime | None = None
    max_redemptions: Annotated[int, Field(strict=True, ge=1)] | None = None
    plan_codes: list[PlanCode] = Field(default=[], description="empty: every plan")
    public: bool = Field(False, description="shown on the public pricing page")

    @model_validator(mode="after")
    def _amount_goes_with_currency(self) -> RegisterCoupon:
        if (self.amount_off is None) != (self.currency is None):
            raise ValueError("amount_off and currency go together")
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("give percent_off or amount_off, not both")
        return self


class ApplyCoupon(Command):
    """Applies a coupon to a subscription from its next invoice (its first paid one
    when trialing)."""

    type: Literal["subscription.apply_coupon"] = "subscription.apply_coupon"
    subscription_id: UUID
    coupon: CouponCode


class SetTaxRate(Command):
    """The tax on the customer's future invoices: ``percent`` of what is taxed, added on
    top (exclusive) or already in the prices (inclusive)."""

    type: Literal["customer.set_tax_rate"] = "customer.set_tax_rate"
    customer_id: UUID
    name: Annotated[str, Field(min_length=1, max_length=40)] = "VAT"
    percent: Percent
    inclusive: bool = False


class RefundInvoice(Command):
    """Refunds a paid invoice through the gateway that took the payment; without
    ``amount``, all that is left to refund."""

    type: Literal["invoice.refund"] = "invoice.refund"
    invoice_id: UUID
    amount: MinorUnits | None = None
    reason: Annotated[str, Field(max_length=200)] = ""


class VoidInvoice(Command):
    type: Literal["invoice.void"] = "invoice.void"
    invoice_id: UUID


class PreviewQuote(Command):
    """What a signup (``plan_code`` with ``customer_id`` or a prospect's ``currency``) or a
    plan change (``subscription_id``) would invoice, with coupon and proration; nothing
    is recorded."""

    type: Literal["quote.preview"] = "quote.preview"
    plan_code: PlanCode
    interval: IntervalText | None = Field(None, description="default: month, or the current one")
    customer_id: UUID | None = None
    currency: CurrencyCode | None = None
    coupon: CouponCode | None = None
    trial_days: Annotated[int, Field(strict=True, ge=0, le=MAX_TRIAL_DAYS)] | None = None
    subscription_id: UUID | None = Field(None, description="quote a change of this one")
    when: Literal["now", "period_end"] | None = Field(None, description="for a change")

    @model_validator(mode="after")
    def _signup_or_change(self) -> PreviewQuote:
        if self.subscription_id is not None:
            if self.customer_id or self.currency or self.coupon or self.trial_days is not None:
                raise ValueError(
                    "a change quote takes plan_code, interval and when; customer_id, "
                    "currency, coupon and trial_days go with a signup quote"
                )
        elif self.when is not None:
            raise ValueError("when goes with subscription_id (a change quote)")
        elif self.customer_id is None and self.currency is None:
            raise ValueError("a signup quote needs customer_id or a prospect's currency")
        return self


class SettlePayment(Command):
    """A gateway's late answer to a payment attempt it settles later (a bank debit, a
    review), as its webhook tells it; the HTTP webhook receiver sends it."""

    type: Literal["invoice.settle_payment"] = "invoice.settle_payment"
    invoice_id: UUID
    attempt: Annotated[int, Field(strict=True, ge=1)]
    outcome: Literal["succeeded", "failed"]
    reference: Annotated[str, Field(min_length=1, max_length=200)]
    code: Annotated[str, Field(min_length=1, max_length=100)] = "payment_failed"
    message: Annotated[str, Field(max_length=500)] = ""


class RecordGatewayRefund(Command):
    """A refund the gateway made: one of ours it answers by webhook (``refund_number``),
    or one made in the gateway's own dashboard (no number: recorded as a credit note
    refunded at once)."""

    type: Literal["invoice.record_gateway_refund"] = "invoice.record_gateway_refund"
    invoice_id: UUID
    reference: Annotated[str, Field(min_length=1, max_length=200)]
    amount: MinorUnits
    currency: CurrencyCode
    refund_number: Annotated[int, Field(strict=True, ge=1)] | None = None
    reason: Annotated[str, Field(max_length=200)] = "refunded at the gateway"


class RecordDispute(Command):
    """A dispute (chargeback) of an invoice's payment, as the gateway reports it: opened,
    then won (the money stays) or lost (recorded as a refund of ``amount``)."""

    type: Literal["invoice.record_dispute"] = "invoice.record_dispute"
    invoice_id: UUID
    reference: Annotated[str, Field(min_length=1, max_length=200)]
    status: Literal["opened", "won", "lost"]
    amount: MinorUnits
    currency: CurrencyCode
    reason: Annotated[str, Field(max_length=200)] = ""


class RegisterWebhook(Command):
    """Registers an endpoint that integration events of ``event_types`` are POSTed to,
    signed (docs/webhooks.md); its id is derived from the command id unless given. The
    reply carries the endpoint's signing secret."""

    type: Literal["webhook.register"] = "webhook.register"
    endpoint_id: UUID | None = None
    url: Annotated[
        str, Field(min_length=1, max_length=2000, examples=["https://crm.example/hooks"])
    ]
    event_types: Annotated[
        list[Annotated[str, Field(max_length=100)]],
        Field(min_length=1, max_length=200, description="types, families (invoice.*) or ['*']"),
    ]
    description: Annotated[str, Field(max_length=200)] = ""


class DisableWebhook(Command):
    """Stops deliveries to an endpoint, for good."""

    type: Literal["webhook.disable"] = "webhook.disable"
    endpoint_id: UUID


AnyCommand = Annotated[
    RegisterPlan
    | AddPrice
    | ArchivePrice
    | ArchivePlan
    | RegisterCustomer
    | ChangeCustomerContact
    | AddPaymentMethod
    | SwitchDefaultPaymentMethod
    | EraseCustomer
    | StartSubscription
    | ChangePlan
    | CancelSubscription
    | RevokeCancel
    | PauseSubscription
    | ResumeSubscription
    | RegisterCoupon
    | ApplyCoupon
    | SetTaxRate
    | RefundInvoice
    | VoidInvoice
    | SettlePayment
    | RecordGatewayRefund
    | RecordDispute
    | PreviewQuote
    | RegisterWebhook
    | DisableWebhook,
    Field(discriminator="type"),
]
command_adapter: TypeAdapter[AnyCommand] = TypeAdapter(AnyCommand)
# Each command's class by its wire type ("subscription.start"), in the union's order.
COMMAND_TYPES: dict[str, type[Command]] = {
    kind.model_fields["type"].default: kind for kind in get_args(get_args(AnyCommand)[0])
}


def parse_command(raw: str | bytes) -> AnyCommand:
    """A command from its JSON text; raises pydantic's ValidationError when invalid."""
    return command_adapter.validate_json(raw)
