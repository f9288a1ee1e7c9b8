"""The HTML pages: the public pricing page, and the analysts' revenue dashboard with the
sign-in that lets a browser open it.

A browser cannot send ``Authorization: Bearer``, so ``POST /login`` takes an analyst (or
admin) key from a form and keeps it in an HttpOnly, SameSite=Strict cookie that only
``/dashboard`` reads; every JSON route still wants the header, so the cookie cannot be
used to send commands from another site. Without a valid key the dashboard answers 401
(403 for a key of another role) with the sign-in form, never figures; the app turns
``SignInRequired`` into that page (``sign_in_required``).
"""

from __future__ import annotations

from datetime import date
from html import escape
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from commands.api_keys import Role
from commands.dashboard import BadPeriod, dashboard_figures, dashboard_html, period
from commands.http_api import ApiServices, Credentials, check_key, read_limited
from commands.pricing_page import pricing_html
from commands.schemas import CurrencyCode
from projections import stats

COOKIE = "subledger_key"
SESSION_SECONDS = 8 * 3600  # a working day; then the key is asked for again
MAX_FORM_BYTES = 4_096  # a key and a little more: nothing else is posted here
HTML: dict[int | str, dict[str, Any]] = {200: {"content": {"text/html": {}}}}
PAGE_STYLE = (
    "body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}"
    "main{max-width:420px;margin:48px auto;padding:16px}"
    "input{width:100%;padding:8px;margin:8px 0;box-sizing:border-box}"
    "button{padding:8px 16px}.why{color:#8c1d18}"
)


def page(title: str, body: str, status: int = 200, **headers: str) -> HTMLResponse:
    """A small page of ours (sign-in, refusals, no data yet)."""
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{PAGE_STYLE}</style></head><body><main>"
        f"<h1>{escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
        headers=headers,
    )


def sign_in(reason: str, status: int) -> HTMLResponse:
    """The sign-in form, answering a request that had no usable key."""
    form = (
        f'<p class="why">{escape(reason)}</p>'
        '<form method="post" action="/login"><label>Analyst API key '
        '<input type="password" name="key" autocomplete="off" required></label>'
        '<button type="submit">Sign in</button></form>'
    )
    extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return page("Sign in to the revenue dashboard", form, status, **extra)


class SignInRequired(Exception):
    """No usable key for a page: answered with the sign-in form (``sign_in_required``)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


async def sign_in_required(request: Request, refusal: Exception) -> Response:
    """The app's handler of ``SignInRequired``."""
    assert isinstance(refusal, SignInRequired)
    return sign_in(refusal.reason, refusal.status)


def pages_router(api: ApiServices) -> APIRouter:
    router = APIRouter(tags=["pages"], default_response_class=HTMLResponse)

    @router.get("/pricing", tags=["public"])
    def pricing() -> str:
        """The pricing table: plans side by side with their features, a monthly/annual
        toggle, trial lengths and the promotion codes marked public that can be redeemed
        now."""
        with api.lock:
            now = api.clock.now()
            plans = api.ledger.plans()
            offers = [c for c in api.ledger.coupons() if c.public and c.is_redeemable(now)]
        return pricing_html(plans, offers)

    def signed_in(request: Request, credentials: Credentials) -> None:
        """A dependency, so that the key is checked before the parameters are read."""
        secret = credentials.credentials if credentials else request.cookies.get(COOKIE)
        try:
            check_key(api, secret, Role.ANALYST)
        except HTTPException as refusal:
            raise SignInRequired(str(refusal.detail), refusal.status_code) from None

    @router.get(
        "/dashboard",
        tags=["analysts"],
        dependencies=[Depends(signed_in)],
        responses=HTML
        | {
            401: {"description": "no key: the sign-in form"},
            403: {"description": "a key of another role"},
            404: {"description": "no revenue recorded (in this currency)"},
            422: {"description": "a period reversed, too long, or out of range"},
        },
    )
    def dashboard(
        currency: CurrencyCode | None = None,
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
    ) -> Response:
        """The revenue dashboard over [from, to] (default: the last 12 whole calendar
        months before the last day with revenue events) in ``currency`` (default: the
        first with revenue).
        Signed in by the header or by the cookie ``POST /login`` sets."""
        with api.lock:
            api.catch_up()
            try:
                chosen, first, last = _choose(api, currency, start, end)
                figures = dashboard_figures(api.database, chosen, first, last)
            except stats.NoRevenueData as error:
                return page("No revenue yet", f"<p>{escape(str(error))}</p>", 404)
            except BadPeriod as error:
                return page("No such period", f"<p>{escape(str(error))}</p>", 422)
        return HTMLResponse(dashboard_html(figures))

    @router.post(
        "/login",
        tags=["analysts"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"key": {"type": "string"}},
                            "required": ["key"],
                        }
                    }
                },
            }
        },
        responses={
            303: {"description": "signed in: on to /dashboard"},
            401: {"description": "no key, or one unknown or revoked"},
            403: {"description": "not an analyst or admin key"},
            413: {"description": "the form is too large"},
        },
    )
    async def login(request: Request) -> Response:
        """Signs a browser in with an analyst or admin key (form field ``key``)."""
        body = await read_limited(request, MAX_FORM_BYTES)
        if body is None:
            return page("Too large", "<p>The form is too large.</p>", 413)
        fields = parse_qs(body.decode("utf-8", "replace"))
        secret = (fields.get("key") or [""])[0].strip()
        try:
            check_key(api, secret, Role.ANALYST)
        except HTTPException as refusal:
            return sign_in(str(refusal.detail), refusal.status_code)
        signed_in = RedirectResponse("/dashboard", status_code=303)
        signed_in.set_cookie(
            COOKIE,
            secret,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return signed_in

    @router.post("/logout", tags=["analysts"], responses={303: {"description": "signed out"}})
    def logout() -> Response:
        """Forgets the browser's key."""
        signed_out = RedirectResponse("/login", status_code=303)
        signed_out.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return signed_out

    @router.get("/login", tags=["analysts"])
    def login_form() -> Response:
        """The sign-in form."""
        return sign_in("Sign in with an analyst or admin API key.", 200)

    return router


def _choose(
    api: ApiServices, currency: str | None, start: date | None, end: date | None
) -> tuple[str, date, date]:
    """The currency and period to show (defaults filled in), or why there is none."""
    known = stats.currencies(api.database)
    if not known:
        raise stats.NoRevenueData("no revenue events have been projected yet")
    if currency is not None and currency not in known:
        raise stats.NoRevenueData(f"no revenue in {currency}; there is: {', '.join(known)}")
    first, last = period(api.database, start, end)
    return currency or known[0], first, last
