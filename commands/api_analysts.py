"""Analysts' routes: revenue figures as JSON and CSV."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from commands.api_keys import Role
from commands.http_api import ApiServices, guarded_router
from commands.schemas import CurrencyCode
from projections import stats as revenue
from projections.database import Database

NO_DATA: dict[str, Any] = {"description": "no revenue recorded (in this currency)"}
BAD_RANGE: dict[str, Any] = {"description": "to is before from"}


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


def analyst_router(api: ApiServices) -> APIRouter:
    router = guarded_router(api, Role.ANALYST, "analysts")

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
