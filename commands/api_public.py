"""Public routes: the pricing catalog and prospects' quotes (the pre-signup stage)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from commands.http_api import NOT_FOUND, REFUSED, ApiServices, refused
from commands.quotes import quote_signup
from commands.schemas import CouponCode, CurrencyCode, IntervalText, PlanCode
from ledger.catalog import MAX_TRIAL_DAYS, Plan
from ledger.errors import DomainError

# FastAPI's own answer to a body it cannot decode (not UTF-8), before any validation.
NOT_JSON: dict[str, Any] = {"description": "the body is not JSON text"}


class PriceOut(BaseModel):
    price_id: str
    amount: int = Field(description="in minor units")
    currency: str
    interval: str
    trial_days: int


class PlanOut(BaseModel):
    """A plan on sale and its current prices (archived plans and prices are not shown)."""

    plan: str
    name: str
    description: str
    features: list[str]
    prices: list[PriceOut]


class QuoteRequest(BaseModel):
    """A prospect's signup. Quotes for a customer or a plan change need a service key:
    send ``quote.preview`` to ``POST /commands``."""

    plan_code: PlanCode
    currency: CurrencyCode
    interval: IntervalText = "month"
    coupon: CouponCode | None = None
    trial_days: Annotated[int, Field(strict=True, ge=0, le=MAX_TRIAL_DAYS)] | None = None


def plan_out(plan: Plan) -> PlanOut:
    return PlanOut(
        plan=plan.code,
        name=plan.name,
        description=plan.description,
        features=plan.features,
        prices=[
            PriceOut(
                price_id=price.id,
                amount=price.amount.amount,
                currency=price.currency,
                interval=str(price.interval),
                trial_days=price.trial_days,
            )
            for price in plan.prices.values()
            if price.id not in plan.archived_price_ids
        ],
    )


def public_router(api: ApiServices) -> APIRouter:
    router = APIRouter(tags=["public"])

    @router.get("/plans")
    def plans() -> list[PlanOut]:
        """The catalog: every plan on sale and its current prices."""
        with api.lock:
            return [plan_out(p) for p in api.ledger.plans() if not p.archived]

    @router.post("/quote", responses={400: NOT_JSON, 404: NOT_FOUND, 422: REFUSED})
    def quote(body: QuoteRequest) -> dict[str, Any]:
        """What a prospect's signup would invoice, with coupon and trial; nothing is
        recorded."""
        with api.lock:
            try:
                return quote_signup(
                    api.ledger,
                    body.plan_code,
                    body.interval,
                    api.clock.now(),
                    currency=body.currency,
                    coupon=body.coupon,
                    trial_days=body.trial_days,
                )
            except DomainError as error:
                raise refused(error) from None

    return router
