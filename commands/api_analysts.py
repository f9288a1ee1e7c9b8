"""Analysts' routes: revenue figures as JSON and CSV; customers and subscriptions as they
stand, filtered and a page at a time; a customer's transactions.

Analysts see no personal data: a customer is named by a pseudonym
(``commands.pseudonyms``), never by id, name, email, phone or address. Each response
model is an allowlist of fields: whatever else a projection's row holds is left out."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from commands.api_keys import Role
from commands.dashboard import EARLIEST, LATEST
from commands.http_api import ApiServices, guarded_router, refused
from commands.pseudonyms import PREFIX, BadCursor, Pseudonyms
from commands.schemas import CurrencyCode, IntervalText, PlanCode
from ledger.calendar import Interval
from ledger.errors import InvalidInterval
from ledger.subscriptions import SubscriptionStatus
from projections import listings
from projections import stats as revenue
from projections.database import Database
from projections.history import customer_history
from projections.subscriptions import SubscriptionRow

NO_DATA: dict[str, Any] = {"description": "no revenue recorded (in this currency)"}
BAD_RANGE: dict[str, Any] = {"description": "to is before from, or a day out of range"}
BAD_LISTING: dict[str, Any] = {"description": "a filter, the limit or the cursor is not valid"}
NO_PSEUDONYM: dict[str, Any] = {"description": "no customer has this pseudonym"}

Limit = Annotated[int, Query(ge=1, le=500, description="items per page")]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="the previous page's next_cursor; none: the first page"),
]
Pseudonym = Annotated[
    str, Path(pattern=f"^{PREFIX}[a-z2-7]{{26}}$", examples=["cus_3xk2mfq7d4kq6w2lqz5n7oa4pe"])
]


class StatsOut(BaseModel):
    """The figures per currency over [from, to], each with its months (``subledger
    stats --json``); docs/metrics.md defines them."""

    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    currencies: dict[str, dict[str, Any]]


def stats_csv(stats: StatsOut) -> str:
    """One row per currency for the whole range (period ``total``), then one per month;
    nested figures flattened (``mrr_movements.new``), subscribers by plan left out."""
    rows = []
    for figures in stats.currencies.values():
        rows.append({"period": "total"} | _flat(figures))
        rows += [{"period": m["month"]} | _flat(m) for m in figures["months"]]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _flat(figures: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            flat |= {f"{key}.{inner}": v for inner, v in value.items()}
        elif not isinstance(value, list) and key != "month":
            flat[key] = value
    return flat


class CustomerOut(BaseModel):
    """A customer as analysts see them (``listings.CustomerSummary``)."""

    customer: str = Field(description="the customer's pseudonym")
    currency: str
    mrr: int = Field(description="minor units: the sum of their subscriptions' MRR")
    status: SubscriptionStatus = Field(
        description="the first of past_due, unpaid, active, trialing, paused, canceled, "
        "expired that any of their subscriptions has"
    )
    plans: list[str] = Field(description="the plans of their subscriptions that have not ended")
    first_subscribed_at: datetime
    paying: bool = Field(description="MRR above 0")


class CustomersPage(BaseModel):
    items: list[CustomerOut]
    next_cursor: str | None = Field(description="the next page's cursor; none on the last")


class SubscriptionOut(BaseModel):
    """A row of ``current_subscriptions``, its customer by pseudonym; amounts in minor units."""

    subscription_id: UUID
    customer: str = Field(description="the customer's pseudonym")
    plan_code: str
    price_id: str
    amount: int
    currency: str
    interval: str
    status: SubscriptionStatus
    current_period_start: datetime
    current_period_end: datetime
    mrr: int
    trial_end: datetime | None
    scheduled_price_id: str | None = Field(description="a plan change due at the period's end")
    cancel_at: datetime | None
    cancel_at_period_end: bool
    resume_at: datetime | None


class SubscriptionsPage(BaseModel):
    items: list[SubscriptionOut]
    next_cursor: str | None = Field(description="the next page's cursor; none on the last")


class TransactionOut(BaseModel):
    """A line of the customer's history (``HistoryLine``) without its description, which
    may quote free text (refund, credit and dispute reasons), gateway references and card
    details; what happened is in ``kind`` and the amounts (minor units)."""

    # An allowlist: whatever else a history line holds is dropped.
    model_config = ConfigDict(extra="ignore")

    position: int
    occurred_at: datetime
    kind: str
    subscription_id: UUID | None
    invoice_id: UUID | None
    price_id: str | None
    previous_price_id: str | None
    currency: str | None
    amount: int | None
    proration_credit: int | None
    proration_charge: int | None
    effective_at: datetime | None


class TransactionsOut(BaseModel):
    customer: str = Field(description="the customer's pseudonym")
    transactions: list[TransactionOut]


def analyst_router(api: ApiServices) -> APIRouter:
    router = guarded_router(api, Role.ANALYST, "analysts")
    pseudonyms = Pseudonyms.of_ledger(api.ledger)

    @router.get(
        "/stats",
        response_model=StatsOut,
        responses={200: {"content": {"text/csv": {}}}, 404: NO_DATA, 422: BAD_RANGE},
    )
    def stats(
        request: Request,
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
        currency: CurrencyCode | None = None,
        format: Literal["json", "csv"] | None = None,
    ) -> StatsOut | Response:
        """Revenue figures over [from, to] (default: the 30 days up to the last day with
        revenue events), per currency and per month; CSV with ``format=csv`` or
        ``Accept: text/csv``."""
        with api.lock:
            api.catch_up()
            result = _stats(api.database, start, end, currency)
        wants_csv = format == "csv" or (
            format is None and "text/csv" in request.headers.get("accept", "")
        )
        if wants_csv:
            return Response(stats_csv(result), media_type="text/csv")
        return result

    @router.get("/customers", responses={422: BAD_LISTING})
    def customers(
        limit: Limit = 50,
        cursor: Cursor = None,
        currency: CurrencyCode | None = None,
        plan: PlanCode | None = None,
        status: SubscriptionStatus | None = None,
        paying: bool | None = None,
    ) -> CustomersPage:
        """Customers who have subscribed, in a stable order, a page at a time."""
        only = listings.CustomerFilter(currency, plan, status, paying)
        after = _resume_after(pseudonyms, "customers", cursor)
        with api.lock:
            api.catch_up()
            found = listings.customers(api.database, only, after, limit + 1)
            return CustomersPage(
                items=[_customer_out(pseudonyms, c) for c in found[:limit]],
                next_cursor=_next_cursor(
                    pseudonyms, "customers", [c.customer_id for c in found], limit
                ),
            )

    @router.get("/subscriptions", responses={422: BAD_LISTING})
    def subscriptions(
        limit: Limit = 50,
        cursor: Cursor = None,
        status: SubscriptionStatus | None = None,
        plan: PlanCode | None = None,
        currency: CurrencyCode | None = None,
        interval: Annotated[IntervalText | None, Query(examples=["month", "year"])] = None,
    ) -> SubscriptionsPage:
        """Subscriptions as they stand, ended ones included, a page at a time."""
        only = listings.SubscriptionFilter(status, plan, currency, _interval(interval))
        after = _resume_after(pseudonyms, "subscriptions", cursor)
        with api.lock:
            api.catch_up()
            found = listings.subscriptions(api.database, only, after, limit + 1)
            return SubscriptionsPage(
                items=[_subscription_out(pseudonyms, s) for s in found[:limit]],
                next_cursor=_next_cursor(
                    pseudonyms, "subscriptions", [s.subscription_id for s in found], limit
                ),
            )

    @router.get("/customers/{pseudonym}/transactions", responses={404: NO_PSEUDONYM})
    def transactions(pseudonym: Pseudonym) -> TransactionsOut:
        """The customer's transactions in order (their history, without personal data)."""
        with api.lock:
            api.catch_up()
            customer_id = pseudonyms.customer(
                pseudonym, lambda: listings.subscribed_customers(api.database)
            )
            if customer_id is None:
                raise HTTPException(404, f"no customer {pseudonym}")
            lines = customer_history(api.database, customer_id)
        return TransactionsOut(
            customer=pseudonym,
            transactions=[TransactionOut.model_validate(line.as_json()) for line in lines],
        )

    return router


def _interval(text: str | None) -> Interval | None:
    try:
        return None if text is None else Interval.parse(text)
    except InvalidInterval as error:
        raise refused(error) from None


def _resume_after(pseudonyms: Pseudonyms, listing: str, cursor: str | None) -> UUID | None:
    try:
        return None if cursor is None else pseudonyms.resume_after(listing, cursor)
    except BadCursor as error:
        raise HTTPException(422, str(error)) from None


def _next_cursor(pseudonyms: Pseudonyms, listing: str, keys: list[UUID], limit: int) -> str | None:
    """After the page's last row, if a row beyond the page was found (``limit + 1`` asked)."""
    return pseudonyms.cursor(listing, keys[limit - 1]) if len(keys) > limit else None


def _customer_out(pseudonyms: Pseudonyms, customer: listings.CustomerSummary) -> CustomerOut:
    return CustomerOut(
        customer=pseudonyms.of(customer.customer_id),
        currency=customer.currency,
        mrr=customer.mrr,
        status=customer.status,
        plans=list(customer.plans),
        first_subscribed_at=customer.first_subscribed_at,
        paying=customer.paying,
    )


def _subscription_out(pseudonyms: Pseudonyms, row: SubscriptionRow) -> SubscriptionOut:
    price = row.price
    return SubscriptionOut(
        subscription_id=row.subscription_id,
        customer=pseudonyms.of(row.customer_id),
        plan_code=price.plan_code,
        price_id=price.id,
        amount=price.amount.amount,
        currency=price.currency,
        interval=str(price.interval),
        status=SubscriptionStatus(row.status),
        current_period_start=row.period_start,
        current_period_end=row.period_end,
        mrr=row.mrr,
        trial_end=row.trial_end,
        scheduled_price_id=row.pending_price_id,
        cancel_at=row.cancel_at,
        cancel_at_period_end=row.cancel_at_period_end,
        resume_at=row.resume_at,
    )


def _stats(db: Database, start: date | None, end: date | None, currency: str | None) -> StatsOut:
    # The dashboard's bounds: the default range's arithmetic overflows near date.min/max.
    for day in (start, end):
        if day is not None and not EARLIEST <= day <= LATEST:
            raise HTTPException(422, f"{day} is outside {EARLIEST} to {LATEST}")
    try:
        to_day = end or revenue.last_day(db)
    except revenue.NoRevenueData as error:
        raise HTTPException(404, str(error)) from None
    from_day = start or to_day - timedelta(days=revenue.DEFAULT_DAYS - 1)
    if to_day < from_day:
        raise HTTPException(422, f"to ({to_day}) is before from ({from_day})")
    known = revenue.currencies(db)
    if currency is not None and currency not in known:
        raise HTTPException(404, f"no revenue in {currency}; there is: {known}")
    chosen = [currency] if currency else known
    return StatsOut(
        start=from_day,
        end=to_day,
        currencies={
            c: revenue.figures(db, c, from_day, to_day).as_json()
            | {
                "months": [
                    m.as_json() | {"month": f"{m.start:%Y-%m}"}
                    for m in revenue.months(db, c, from_day, to_day)
                ]
            }
            for c in chosen
        },
    )
