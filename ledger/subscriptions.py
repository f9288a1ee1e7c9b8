"""Subscriptions: the state machine of one customer's subscription to one price.

``trialing -> active -> canceled``; ``trialing -> expired`` when a trial ends without a
payment method; ``active <-> paused`` (a pause may name the day it resumes);
``active -> past_due`` while an invoice is in dunning, back to ``active`` when it is paid,
and ``canceled`` or ``unpaid`` (suspended, not billed) when dunning runs out.
A discount (from a coupon) covers a range of periods and is in force until its last.
Periods are numbered from the billing anchor; the trial, when there is one, is period -1
and the anchor is the trial's end. Due transitions (trial end, renewal, scheduled cancel or
resume) are applied by ``advance`` at the instant they fell due, and every command first advances
the subscription, so the history is always in time order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.calendar import Period, boundary
from ledger.catalog import MAX_TRIAL_DAYS, Price
from ledger.clock import ensure_utc
from ledger.discounts import Discount, discounted_mrr
from ledger.errors import (
    CancelDateNotInFuture,
    CannotChangeNowWhilePastDue,
    CannotChangeNowWhilePaused,
    CurrencyMismatch,
    DiscountInForce,
    InvalidMoney,
    InvalidTrial,
    NoScheduledCancel,
    ResumeDateNotInFuture,
    SamePrice,
    SubscriptionAlreadyCanceled,
    SubscriptionEnded,
    SubscriptionNotPausable,
    SubscriptionNotPaused,
)
from ledger.money import Money
from ledger.proration import Proration, prorate_change, unused_part


# A plain Enum, not a StrEnum: json would store a str subclass as a bare string and
# give back a str, so the registered transcoding would never run.
class SubscriptionStatus(Enum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    UNPAID = "unpaid"
    CANCELED = "canceled"
    EXPIRED = "expired"


ENDED = frozenset({SubscriptionStatus.CANCELED, SubscriptionStatus.EXPIRED})
# Statuses in which the customer is paying for the current period.
BILLED = frozenset({SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE})


class ChangeTiming(StrEnum):
    NOW = "now"
    PERIOD_END = "period_end"


class Subscription(Aggregate):
    # Version 2 added ``resume_at``, version 3 ``discount`` and ``failing_invoices``:
    # older snapshots are upcast on loading.
    class_version = 3

    # State set by the events' apply(); under TYPE_CHECKING because eventsourcing would
    # turn class annotations into constructor fields.
    if TYPE_CHECKING:
        customer_id: UUID
        price: Price
        status: SubscriptionStatus
        anchor: datetime
        anchor_index: int
        period: Period
        period_billed: bool
        trial_end: datetime | None
        cancel_at: datetime | None
        cancels_at_period_end: bool
        pending_price: Price | None
        resume_at: datetime | None
        ended_at: datetime | None
        discount: Discount | None
        failing_invoices: list[UUID]

    @staticmethod
    def upcast_v1_v2(state: dict[str, object]) -> None:
        state["resume_at"] = None

    @staticmethod
    def upcast_v2_v3(state: dict[str, object]) -> None:
        state["discount"] = None
        state["failing_invoices"] = []

    class Started(Aggregate.Created):
        customer_id: UUID
        price: Price
        status: SubscriptionStatus
        period: Period
        trial_end: datetime | None

        def apply(self, sub: Subscription) -> None:
            sub.customer_id = self.customer_id
            sub.price = self.price
            sub.status = self.status
            sub.period = self.period
            sub.period_billed = self.trial_end is None
            sub.trial_end = self.trial_end
            sub.anchor = self.trial_end or self.period.start
            sub.anchor_index = 0
            sub.cancel_at = None
            sub.cancels_at_period_end = False
            sub.pending_price = None
            sub.resume_at = None
            sub.ended_at = None
            sub.discount = None
            sub.failing_invoices = []

    class TrialEnded(Aggregate.Event):
        converted: bool
        price: Price
        period: Period

        def apply(self, sub: Subscription) -> None:
            sub.pending_price = None
            if self.converted:
                sub.status = SubscriptionStatus.ACTIVE
                sub.price = self.price
                sub.period = self.period
                sub.period_billed = True
            else:
                sub.status = SubscriptionStatus.EXPIRED
                sub.ended_at = self.timestamp
                sub.cancel_at = None
                sub.cancels_at_period_end = False
                sub.resume_at = None

    class Renewed(Aggregate.Event):
        price: Price
        period: Period
        anchor: datetime
        anchor_index: int
        billed: bool  # False for a period that starts while paused

        def apply(self, sub: Subscription) -> None:
            sub.price = self.price
            sub.period = self.period
            sub.period_billed = self.billed
            sub.anchor = self.anchor
            sub.anchor_index = self.anchor_index
            sub.pending_price = None

    class PlanChanged(Aggregate.Event):
        from_price: Price
        to_price: Price
        credit: Money
        charge: Money
        period: Period
        anchor: datetime
        anchor_index: int
        billed: bool  # whether the (possibly new) current period is billed

        def apply(self, sub: Subscription) -> None:
            sub.period_billed = self.billed
            sub.price = self.to_price
            sub.period = self.period
            sub.anchor = self.anchor
            sub.anchor_index = self.anchor_index
            sub.pending_price = None
            if sub.cancels_at_period_end:
                # A new cycle moves "cancel at period end" to the end of the new period.
                sub.cancel_at = self.period.end

    class ChangeScheduled(Aggregate.Event):
        to_price: Price
        effective_at: datetime

        def apply(self, sub: Subscription) -> None:
            sub.pending_price = self.to_price

    class ScheduledChangeCanceled(Aggregate.Event):
        def apply(self, sub: Subscription) -> None:
            sub.pending_price = None

    class CancelScheduled(Aggregate.Event):
        cancel_at: datetime
        at_period_end: bool

        def apply(self, sub: Subscription) -> None:
            sub.cancel_at = self.cancel_at
            sub.cancels_at_period_end = self.at_period_end

    class CancelRevoked(Aggregate.Event):
        def apply(self, sub: Subscription) -> None:
            sub.cancel_at = None
            sub.cancels_at_period_end = False

    class Canceled(Aggregate.Event):
        refund: Money
        scheduled: bool

        def apply(self, sub: Subscription) -> None:
            sub.status = SubscriptionStatus.CANCELED
            sub.ended_at = self.timestamp
            sub.cancel_at = None
            sub.cancels_at_period_end = False
            sub.pending_price = None
            sub.resume_at = None

    class Paused(Aggregate.Event):
        def apply(self, sub: Subscription) -> None:
            sub.status = SubscriptionStatus.PAUSED

    class ResumeScheduled(Aggregate.Event):
        resume_at: datetime

        def apply(self, sub: Subscription) -> None:
            sub.resume_at = self.resume_at

    class Resumed(Aggregate.Event):
        def apply(self, sub: Subscription) -> None:
            sub.status = SubscriptionStatus.ACTIVE
            sub.resume_at = None

    class DiscountApplied(Aggregate.Event):
        discount: Discount

        def apply(self, sub: Subscription) -> None:
            sub.discount = self.discount

    class DiscountEnded(Aggregate.Event):
        discount: Discount

        def apply(self, sub: Subscription) -> None:
            sub.discount = None

    class PastDue(Aggregate.Event):
        """A charge for the subscription failed: its invoice is in dunning."""

        invoice_id: UUID

        def apply(self, sub: Subscription) -> None:
            sub.failing_invoices.append(self.invoice_id)
            sub.status = SubscriptionStatus.PAST_DUE

    class Recovered(Aggregate.Event):
        invoice_id: UUID

        def apply(self, sub: Subscription) -> None:
            sub.failing_invoices.remove(self.invoice_id)
            if not sub.failing_invoices:
                sub.status = SubscriptionStatus.ACTIVE

    class DunningExhausted(Aggregate.Event):
        """Dunning gave up on an invoice: the subscription ends, or is left unpaid."""

        invoice_id: UUID
        canceled: bool

        def apply(self, sub: Subscription) -> None:
            sub.failing_invoices = []
            sub.resume_at = None
            if self.canceled:
                sub.status = SubscriptionStatus.CANCELED
                sub.ended_at = self.timestamp
                sub.cancel_at = None
                sub.cancels_at_period_end = False
                sub.pending_price = None
            else:
                sub.status = SubscriptionStatus.UNPAID

    @classmethod
    def start(
        cls, id: UUID, customer_id: UUID, price: Price, at: datetime, trial_days: int | None
    ) -> Subscription:
        """Starts now; ``trial_days`` None means the price's own trial."""
        days = price.trial_days if trial_days is None else trial_days
        if not 0 <= days <= MAX_TRIAL_DAYS:
            raise InvalidTrial(f"trial days must be between 0 and {MAX_TRIAL_DAYS}, got {days}")
        if days:
            trial_end = at + timedelta(days=days)
            first = Period(-1, at, trial_end)
            status = SubscriptionStatus.TRIALING
        else:
            trial_end = None
            first = Period(0, at, boundary(at, price.interval, 1))
            status = SubscriptionStatus.ACTIVE
        return cls._create(
            cls.Started,
            id=id,
            timestamp=at,
            customer_id=customer_id,
            price=price,
            status=status,
            period=first,
            trial_end=trial_end,
        )

    # Queries

    @property
    def is_ended(self) -> bool:
        return self.status in ENDED

    @property
    def due_at(self) -> datetime | None:
        """The next instant at which something happens on its own, if any."""
        if self.is_ended:
            return None
        return min(at for at in (self.period.end, self.cancel_at, self.resume_at) if at)

    @property
    def mrr(self) -> Money:
        """Monthly recurring revenue: the discounted price normalised to a month, while
        billed."""
        return discounted_mrr(self.price, self.discount) if self.status in BILLED else self._zero

    @property
    def next_discountable_period(self) -> int:
        """The first period a coupon applied now can discount: the first paid one of a
        trial, else the next (the current one was invoiced already)."""
        return 0 if self.status is SubscriptionStatus.TRIALING else self.period.index + 1

    # Commands

    def advance(self, now: datetime, can_pay: Callable[[datetime], bool]) -> int:
        """Applies every transition due by ``now``, each at its own instant; returns how many.

        A trial converts when ``can_pay(trial_end)``: the customer had a usable payment
        method at the trial's end (not one added later), else it expires. Idempotent by
        construction: a period renews once, then it is no longer due.
        """
        applied = 0
        while (due := self.due_at) is not None and due <= now:
            if self.cancel_at == due:
                self.trigger_event(
                    self.Canceled, timestamp=self.cancel_at, refund=self._zero, scheduled=True
                )
            elif self.resume_at == due:
                # Before a renewal at the same instant, so that the new period is billed.
                self.trigger_event(self.Resumed, timestamp=due)
            elif self.status is SubscriptionStatus.TRIALING:
                price = self.pending_price or self.price
                self._end_discount(0, price, due)
                self.trigger_event(
                    self.TrialEnded,
                    timestamp=due,
                    converted=can_pay(due),
                    price=price,
                    period=Period(0, self.anchor, boundary(self.anchor, price.interval, 1)),
                )
            else:
                price = self.pending_price or self.price
                anchor, anchor_index = self._anchor_for(price, due)
                index = self.period.index + 1
                steps = index - anchor_index
                self._end_discount(index, price, due)
                self.trigger_event(
                    self.Renewed,
                    timestamp=due,
                    price=price,
                    period=Period(
                        index,
                        boundary(anchor, price.interval, steps),
                        boundary(anchor, price.interval, steps + 1),
                    ),
                    anchor=anchor,
                    anchor_index=anchor_index,
                    # A period that starts while paused is not billed.
                    billed=self.status in BILLED,
                )
            applied += 1
        return applied

    def change_price(
        self, new: Price, at: datetime, timing: ChangeTiming | None = None
    ) -> Proration | None:
        """Changes plan. By default an upgrade (a higher monthly amount) takes effect now
        with time-based proration and a downgrade at the end of the period. Returns the
        proration of a change made now (zero while trialing or paused)."""
        self._ensure_not_ended("change plan")
        old = self.price
        if (new.plan_code, new.interval, new.currency) == (
            old.plan_code,
            old.interval,
            old.currency,
        ):
            # A newer version of the same price is not a change: subscribers keep theirs.
            if self.pending_price is None:
                raise SamePrice(f"the subscription is already on {old.id!r}")
            # Back to the current price: the scheduled change is called off.
            self.trigger_event(self.ScheduledChangeCanceled, timestamp=at)
            return None
        if new.currency != self.price.currency:
            raise CurrencyMismatch(f"cannot move a {self.price.currency} subscription to {new.id}")
        if self.status in (SubscriptionStatus.PAUSED, SubscriptionStatus.UNPAID):
            # Nothing is collected while paused or unpaid: a change waits for the next period.
            if timing is ChangeTiming.NOW:
                raise CannotChangeNowWhilePaused(
                    "a paused subscription changes plan at period end; resume it first"
                )
            timing = ChangeTiming.PERIOD_END
        if timing is None:
            is_upgrade = new.monthly_amount > self.price.monthly_amount
            timing = ChangeTiming.NOW if is_upgrade else ChangeTiming.PERIOD_END
        if timing is ChangeTiming.NOW and self.status is SubscriptionStatus.PAST_DUE:
            # Proration credits time as paid: it is not while an invoice is in dunning.
            raise CannotChangeNowWhilePastDue(
                "an invoice of this subscription is unpaid: settle it, or change at period end"
            )
        if timing is ChangeTiming.PERIOD_END:
            if self.pending_price == new:
                return None  # already scheduled: nothing new to record
            self.trigger_event(
                self.ChangeScheduled, timestamp=at, to_price=new, effective_at=self.period.end
            )
            return None
        proration, current, anchor, anchor_index = self._change_now(new, at)
        self._end_discount(current.index, new, at)
        self.trigger_event(
            self.PlanChanged,
            timestamp=at,
            from_price=self.price,
            to_price=new,
            credit=proration.credit,
            charge=proration.charge,
            period=current,
            anchor=anchor,
            anchor_index=anchor_index,
            # A new cycle is charged in full; the same period keeps what it was.
            billed=current.index != self.period.index or self.period_billed,
        )
        return proration

    def _change_now(self, new: Price, at: datetime) -> tuple[Proration, Period, datetime, int]:
        zero = Proration(self._zero, self._zero)
        if self.status is SubscriptionStatus.TRIALING or new.interval == self.price.interval:
            # Same period: prorated only if it was billed (a trial or a period that began
            # while paused was not).
            if not self.period_billed:
                return zero, self.period, self.anchor, self.anchor_index
            proration = prorate_change(
                self._charged(self.price), self._charged(new), self.period, at
            )
            return proration, self.period, self.anchor, self.anchor_index
        # A new interval starts a new, billed cycle now: credit the unused old period if it
        # was billed, charge a whole new one (as Stripe does when the interval changes).
        index = self.period.index + 1
        current = Period(index, at, boundary(at, new.interval, 1))
        return Proration(self.unused_value(at), new.amount), current, at, index

    def _charged(self, price: Price) -> Money:
        """What ``price`` costs for the current period, after the discount covering it."""
        discount = self.discount
        if discount and discount.covers(self.period.index) and discount.applies_to(price.plan_code):
            return price.amount - discount.off(price.amount)
        return price.amount

    def _anchor_for(self, price: Price, start: datetime) -> tuple[datetime, int]:
        """Keeps the anchor while the interval stays; a new interval anchors at ``start``."""
        if price.interval == self.price.interval:
            return self.anchor, self.anchor_index
        return start, self.period.index + 1

    def _end_discount(self, index: int, price: Price, at: datetime) -> None:
        """Ends the discount before period ``index`` at ``price`` if it does not cover it:
        its last period is past, or the coupon is restricted to other plans."""
        discount = self.discount
        if discount is not None and (
            discount.ends_before(index) or not discount.applies_to(price.plan_code)
        ):
            self.trigger_event(self.DiscountEnded, timestamp=at, discount=discount)

    def apply_discount(self, discount: Discount, at: datetime) -> None:
        """Applies a coupon's discount; one at a time (a new one once the last ended)."""
        self._ensure_not_ended("discount")
        if self.discount is not None:
            raise DiscountInForce(
                f"coupon {self.discount.coupon_code!r} is in force on this subscription"
            )
        self.trigger_event(self.DiscountApplied, timestamp=at, discount=discount)

    # Collection outcomes (recorded by the payment processor and the billing clock)

    def payment_failed(self, invoice_id: UUID, at: datetime) -> None:
        """A charge for this subscription failed: past due while it is in dunning."""
        if self.status in BILLED and invoice_id not in self.failing_invoices:
            self.trigger_event(self.PastDue, timestamp=at, invoice_id=invoice_id)

    def payment_recovered(self, invoice_id: UUID, at: datetime) -> None:
        if invoice_id in self.failing_invoices and not self.is_ended:
            self.trigger_event(self.Recovered, timestamp=at, invoice_id=invoice_id)

    def dunning_exhausted(self, invoice_id: UUID, cancel: bool, at: datetime) -> None:
        if invoice_id in self.failing_invoices and not self.is_ended:
            self.trigger_event(
                self.DunningExhausted, timestamp=at, invoice_id=invoice_id, canceled=cancel
            )

    def unused_value(self, at: datetime) -> Money:
        """What the rest of the period is worth at its current price, after discount (zero
        when the period was not billed). A plan change made now already settled the time
        before it, so the current price is what the rest of the period is worth."""
        if not self.period_billed:
            return self._zero
        return unused_part(self._charged(self.price), self.period, at)

    def cancel_now(self, at: datetime, refund: Money | None = None) -> None:
        """Cancels at once, recording the ``refund`` the caller requests for the rest of
        the period (through the gateway that took the payment): what is returned, not
        what the time was worth."""
        self._ensure_not_ended("cancel")
        refund = refund or self._zero
        if refund.currency != self.price.currency:
            raise CurrencyMismatch(
                f"a refund in {refund.currency} of a {self.price.currency} subscription"
            )
        if refund.amount < 0:
            raise InvalidMoney(f"a negative refund: {refund}")
        self.trigger_event(self.Canceled, timestamp=at, refund=refund, scheduled=False)

    def cancel_at_period_end(self, at: datetime) -> datetime:
        self._ensure_not_ended("cancel")
        if self.cancels_at_period_end:
            return self.period.end  # already scheduled: nothing new to record
        self.trigger_event(
            self.CancelScheduled, timestamp=at, cancel_at=self.period.end, at_period_end=True
        )
        return self.period.end

    def cancel_on(self, when: datetime, at: datetime) -> None:
        self._ensure_not_ended("cancel")
        when = ensure_utc(when)
        if when == self.cancel_at and not self.cancels_at_period_end:
            return  # already scheduled for that instant: nothing new to record
        if when <= at:
            raise CancelDateNotInFuture(
                f"cancel date {when.isoformat()} is not after now ({at.isoformat()})"
            )
        self.trigger_event(self.CancelScheduled, timestamp=at, cancel_at=when, at_period_end=False)

    def revoke_cancel(self, at: datetime) -> None:
        self._ensure_not_ended("revoke a cancellation of")
        if self.cancel_at is None:
            raise NoScheduledCancel("the subscription has no scheduled cancellation to revoke")
        self.trigger_event(self.CancelRevoked, timestamp=at)

    def pause(self, at: datetime, resume_at: datetime | None = None) -> None:
        """Pauses collection: the calendar runs on, periods are not billed, MRR is 0.
        With ``resume_at``, it resumes on its own then."""
        self._ensure_not_ended("pause")
        if self.status is not SubscriptionStatus.ACTIVE:
            raise SubscriptionNotPausable(
                f"only an active subscription can pause (it is {self.status.value})"
            )
        if resume_at is not None:
            resume_at = ensure_utc(resume_at)
            if resume_at <= at:
                raise ResumeDateNotInFuture(
                    f"resume date {resume_at.isoformat()} is not after now ({at.isoformat()})"
                )
        self.trigger_event(self.Paused, timestamp=at)
        if resume_at is not None:
            self.trigger_event(self.ResumeScheduled, timestamp=at, resume_at=resume_at)

    def resume(self, at: datetime) -> None:
        """Resumes a paused subscription (an unpaid one is not: its debt stands)."""
        self._ensure_not_ended("resume")
        if self.status is not SubscriptionStatus.PAUSED:
            raise SubscriptionNotPaused(f"the subscription is {self.status.value}, not paused")
        self.trigger_event(self.Resumed, timestamp=at)

    @property
    def _zero(self) -> Money:
        return Money.zero(self.price.currency)

    def _ensure_not_ended(self, action: str) -> None:
        if self.status is SubscriptionStatus.CANCELED:
            raise SubscriptionAlreadyCanceled(f"cannot {action} a canceled subscription")
        if self.status is SubscriptionStatus.EXPIRED:
            raise SubscriptionEnded(f"cannot {action} an expired subscription")
