"""Analysts' route: the plan suggestions (``projections.suggestions``), with each customer
under a pseudonym. Analysts see neither customer nor subscription ids, nor the events'
ids (which derive from the subscription)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, Field

from commands.api_keys import Role
from commands.http_api import ApiServices, guarded_router
from projections.suggestions import RetentionOffer, Suggestion, SuggestionKind, suggestions

# Customer id -> the pseudonym analysts see for that customer.
Pseudonym = Callable[[UUID], str]
# Identify a customer, directly or through their subscription or the events.
PRIVATE = ("customer_id", "subscription_id", "id")


class AnnualOut(BaseModel):
    """The plan's annual price and what it saves over 12 monthly payments (list prices)."""

    price_id: str
    amount: int = Field(description="in minor units")
    saving: int = Field(description="in minor units")


class _SuggestionOut(BaseModel):
    customer: str = Field(description="the customer's pseudonym")
    since: datetime = Field(description="when it became true")
    plan_code: str
    currency: str
    price_id: str = Field(description="the subscription's current price")
    amount: int = Field(description="the current price, in minor units")


class AnnualPlanOut(_SuggestionOut):
    """A monthly subscriber who paid 6 or more period invoices in a row."""

    kind: Literal["annual_plan"]
    paid_in_a_row: int
    annual: AnnualOut


class RetentionOfferOut(_SuggestionOut):
    """A subscriber whose cancel or downgrade is scheduled: offer to stay."""

    kind: Literal["retention_offer"]
    scheduled: Literal["cancel", "downgrade"]
    effective_at: datetime
    to_price_id: str | None = Field(description="a downgrade's price")
    mrr_at_risk: int = Field(description="in minor units")
    offer: Literal["stay"]
    annual: AnnualOut | None = Field(description="for a downgrade from monthly, if cheaper")


SuggestionOut = Annotated[AnnualPlanOut | RetentionOfferOut, Field(discriminator="kind")]


def suggestion_out(
    suggestion: Suggestion, pseudonym: Pseudonym
) -> AnnualPlanOut | RetentionOfferOut:
    shown = {k: v for k, v in suggestion.as_json().items() if k not in PRIVATE}
    shown["customer"] = pseudonym(suggestion.customer_id)
    if isinstance(suggestion, RetentionOffer):
        return RetentionOfferOut.model_validate(shown)
    return AnnualPlanOut.model_validate(shown)


def suggestion_router(api: ApiServices, pseudonym: Pseudonym) -> APIRouter:
    router = guarded_router(api, Role.ANALYST, "analysts")

    @router.get("/suggestions")
    def list_suggestions(kind: SuggestionKind | None = None) -> list[SuggestionOut]:
        """Customers for whom another plan fits better: monthly subscribers who paid 6
        months or more in a row (the annual plan and its saving), and subscribers whose
        cancel or downgrade is scheduled (a retention offer and the MRR at risk)."""
        with api.lock:
            api.catch_up()
            found = suggestions(api.database, api.ledger.plans(), api.clock.now(), kind)
        return [suggestion_out(s, pseudonym) for s in found]

    return router
