"""The JSON API (``subledger http``), by role: the catalog and quotes for anyone; revenue
figures for analysts; histories, replays and chain verification for auditors; the bus's
commands for services; ``admin`` keys open everything.

A request for a guarded route without a valid key gets 401 (with ``WWW-Authenticate:
Bearer``), with a key of another role 403; neither body holds anything but the refusal.
The key is checked before the request's parameters, so a refusal says nothing about them.

Routes are synchronous and run in FastAPI's thread pool; they share one connection to the
projections' database, which one lock keeps to one request at a time.
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from commands.api_keys import KeyStore, Role
from commands.audit import NoChain, chain_recorder, verify
from commands.audit_replay import replay
from commands.bus import answer_directly
from commands.quotes import quote_signup
from commands.schemas import CouponCode, CurrencyCode, IntervalText, PlanCode
from commands.streams import Streams
from commands.wire import Reply, refusal
from ledger.application import Ledger
from ledger.catalog import MAX_TRIAL_DAYS, Plan
from ledger.clock import Clock
from ledger.errors import DomainError, NotFound
from projections import stats as revenue
from projections.database import Database
from projections.history import customer_history

Responses = dict[int | str, dict[str, Any]]
UNAUTHENTICATED: Responses = {401: {"description": "no API key, or one unknown or revoked"}}
GUARDED: Responses = UNAUTHENTICATED | {
    403: {"description": "the key's role may not use this route"}
}
NOT_FOUND: dict[str, Any] = {"description": "no such customer, plan or coupon"}
NO_DATA: dict[str, Any] = {"description": "no revenue recorded (in this currency)"}
BAD_RANGE: dict[str, Any] = {"description": "to is before from"}
REFUSED: dict[str, Any] = {"description": "a business rule refused it (the body says which)"}
NO_CHAIN: dict[str, Any] = {"description": "this ledger's store keeps no audit chain"}

# Not raising itself (auto_error): our refusals say why, and carry WWW-Authenticate.
BEARER = HTTPBearer(auto_error=False, description="an API key: subledger keys create")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


@dataclass
class ApiServices:
    """What the routes need: the ledger, its clock, the projections (read after
    ``catch_up`` brings them up to date) and the API keys."""

    ledger: Ledger
    clock: Clock
    database: Database
    catch_up: Callable[[], int]
    keys: KeyStore
    streams: Streams = field(default_factory=Streams)
    lock: threading.Lock = field(default_factory=threading.Lock)


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


class StatsOut(BaseModel):
    """The figures per currency over [from, to], each with its months (``subledger
    stats --json``); docs/metrics.md defines them."""

    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    currencies: dict[str, dict[str, Any]]


class HistoryOut(BaseModel):
    customer_id: UUID
    history: list[dict[str, Any]]


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


def api_router(api: ApiServices) -> APIRouter:
    router = APIRouter()

    def allow(*roles: Role) -> Callable[..., Role]:
        allowed = {*roles, Role.ADMIN}

        def role(credentials: Credentials) -> Role:
            if credentials is None:
                raise _unauthenticated("an API key is required")
            with api.lock:
                found = api.keys.role_of(credentials.credentials)
            if found is None:
                raise _unauthenticated("the API key is unknown or revoked")
            if found not in allowed:
                raise HTTPException(403, f"a {found} key may not use this route")
            return found

        return role

    analyst = Depends(allow(Role.ANALYST))
    auditor = Depends(allow(Role.AUDITOR))
    service = Depends(allow(Role.SERVICE))

    @router.get("/plans", tags=["public"])
    def plans() -> list[PlanOut]:
        """The catalog: every plan on sale and its current prices."""
        with api.lock:
            return [plan_out(p) for p in api.ledger.plans() if not p.archived]

    @router.post("/quote", tags=["public"], responses={404: NOT_FOUND, 422: REFUSED})
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
                raise _refused(error) from None

    @router.get(
        "/stats",
        tags=["analysts"],
        dependencies=[analyst],
        response_model=StatsOut,
        responses=GUARDED | {200: {"content": {"text/csv": {}}}, 404: NO_DATA, 422: BAD_RANGE},
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

    @router.get(
        "/customers/{customer_id}/history",
        tags=["auditors"],
        dependencies=[auditor],
        responses=GUARDED | {404: NOT_FOUND},
    )
    def history(customer_id: UUID) -> HistoryOut:
        """A customer's transaction history, in order (from the projections)."""
        with api.lock:
            api.catch_up()
            lines = customer_history(api.database, customer_id)
        if not lines:
            raise HTTPException(404, f"no customer {customer_id}")
        return HistoryOut(customer_id=customer_id, history=[line.as_json() for line in lines])

    @router.get(
        "/audit/verify",
        tags=["auditors"],
        dependencies=[auditor],
        responses=GUARDED | {501: NO_CHAIN},
    )
    def audit_verify() -> dict[str, Any]:
        """Walks the hash chain over every stored event; names the first broken link."""
        with api.lock:
            try:
                return verify(chain_recorder(api.ledger)).to_dict()
            except NoChain as error:
                raise HTTPException(501, str(error)) from None

    @router.get(
        "/audit/replay/{customer_id}",
        tags=["auditors"],
        dependencies=[auditor],
        responses=GUARDED | {404: NOT_FOUND, 501: NO_CHAIN},
    )
    def audit_replay(customer_id: UUID, as_of: datetime | None = None) -> dict[str, Any]:
        """A customer's account as of an instant (UTC when it names no offset), from the
        event store."""
        if as_of is not None and as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        with api.lock:
            try:
                account = replay(api.ledger, customer_id, as_of)
            except NoChain as error:
                raise HTTPException(501, str(error)) from None
        if account.stored == 0:
            raise HTTPException(404, f"no customer {customer_id}")
        return account.as_json()

    @router.post(
        "/commands",
        tags=["services"],
        dependencies=[service],
        responses=GUARDED | {503: {"description": "the ledger is unreachable: send it again"}},
        response_model=Reply,
        # The body is read raw, as a stream entry's would be: the wire format validates it.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def commands(request: Request) -> Reply | JSONResponse:
        """One command, as sent on the bus; the reply the bus would give (``status``
        tells accepted from rejected). Idempotent by ``command_id``."""
        raw = await request.body()

        def answer() -> Reply:
            with api.lock:
                return answer_directly(raw, api.ledger, api.clock, api.streams)

        try:
            return await run_in_threadpool(answer)
        except Exception as error:  # the bus would retry it: the client should too
            return JSONResponse(
                {"detail": f"not answered: {type(error).__name__}"}, status_code=503
            )

    return router


def _stats(db: Database, start: date | None, end: date | None, currency: str | None) -> StatsOut:
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


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _refused(error: DomainError) -> HTTPException:
    return HTTPException(404 if isinstance(error, NotFound) else 422, refusal(error).model_dump())
