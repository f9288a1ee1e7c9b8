"""Typed domain errors: each names the rule that was broken.

Every error carries a stable machine ``code`` (for bus replies and HTTP answers) and a
human message.
"""


class DomainError(Exception):
    """A business rule refused a command."""

    code = "domain_error"
    # A refusal is the command's final answer, recorded for its id; not one that may
    # change by itself once other commands land.
    final = True


class NotFound(DomainError):
    """What a command refers to does not exist (or not yet: messages can overtake)."""

    code = "not_found"
    final = False


class InvalidMoney(DomainError):
    code = "invalid_money"


class UnknownCurrency(InvalidMoney):
    code = "unknown_currency"


class CurrencyMismatch(InvalidMoney):
    code = "currency_mismatch"


class InvalidInterval(DomainError):
    code = "invalid_interval"


class ClockCannotGoBack(DomainError):
    code = "clock_cannot_go_back"


class InvalidPlan(DomainError):
    code = "invalid_plan"


class PlanAlreadyRegistered(DomainError):
    code = "plan_already_registered"


class PlanArchived(DomainError):
    code = "plan_archived"


class PriceArchived(DomainError):
    code = "price_archived"


class UnknownPrice(DomainError):
    code = "unknown_price"


class NoPriceInCurrency(DomainError):
    code = "no_price_in_currency"


class InvalidPrice(DomainError):
    code = "invalid_price"


class InvalidCustomer(DomainError):
    code = "invalid_customer"


class CustomerAlreadyRegistered(InvalidCustomer):
    code = "customer_already_registered"


class CardNumberNotAllowed(DomainError):
    """A payment method token looked like a raw card number: we never store those."""

    code = "card_number_not_allowed"


class InvalidPaymentMethod(DomainError):
    code = "invalid_payment_method"


class UnknownPaymentMethod(DomainError):
    code = "unknown_payment_method"


class InvalidTransition(DomainError):
    """Base of the subscription state-machine refusals."""

    code = "invalid_transition"


class SubscriptionAlreadyCanceled(InvalidTransition):
    code = "subscription_already_canceled"


class SubscriptionEnded(InvalidTransition):
    code = "subscription_ended"


class SamePrice(InvalidTransition):
    code = "same_price"


class InvalidTrial(InvalidTransition):
    code = "invalid_trial"


class NoScheduledCancel(InvalidTransition):
    code = "no_scheduled_cancel"


class CancelDateNotInFuture(InvalidTransition):
    code = "cancel_date_not_in_future"


class ResumeDateNotInFuture(InvalidTransition):
    code = "resume_date_not_in_future"


class CannotChangeNowWhilePaused(InvalidTransition):
    code = "cannot_change_now_while_paused"


class CannotChangeNowWhilePastDue(InvalidTransition):
    code = "cannot_change_now_while_past_due"


class SubscriptionNotPausable(InvalidTransition):
    code = "subscription_not_pausable"


class SubscriptionNotPaused(InvalidTransition):
    code = "subscription_not_paused"


class InvalidCoupon(DomainError):
    code = "invalid_coupon"


class CouponAlreadyRegistered(InvalidCoupon):
    code = "coupon_already_registered"


class CouponExpired(InvalidCoupon):
    code = "coupon_expired"


class CouponExhausted(InvalidCoupon):
    """The coupon reached its maximum number of redemptions."""

    code = "coupon_exhausted"


class CouponNotApplicable(InvalidCoupon):
    """The coupon is restricted to other plans, or is in another currency."""

    code = "coupon_not_applicable"


class DiscountInForce(InvalidCoupon):
    code = "discount_in_force"


class InvalidTaxRate(DomainError):
    code = "invalid_tax_rate"


class InvoiceNotOpen(DomainError):
    code = "invoice_not_open"


class PaymentInFlight(DomainError):
    """A payment request awaits the gateway's answer: nothing else may happen to the
    invoice's collection until it is recorded."""

    code = "payment_in_flight"
    final = False  # answered once the gateway's answer is recorded: a retry may succeed


class NoRetryDue(DomainError):
    code = "no_retry_due"


class InvalidRefund(DomainError):
    code = "invalid_refund"


class RefundExceedsPaid(InvalidRefund):
    """Refunds of an invoice never add up to more than was paid for it."""

    code = "refund_exceeds_paid"


class TooManyConflicts(DomainError):
    """Concurrent writers kept changing the same aggregates; the command was not applied."""

    code = "too_many_conflicts"


class CommandIdReused(DomainError):
    """The same command id came with a different command: refuse rather than guess."""

    code = "command_id_reused"


def refusal_for(code: str, message: str) -> DomainError:
    """The error of a recorded refusal, of the class that has ``code``."""
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        kind = pending.pop()
        if kind.code == code:
            return kind(message)
        pending.extend(kind.__subclasses__())
    refusal = DomainError(message)
    refusal.code = code
    return refusal
