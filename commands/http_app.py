"""The HTTP face of the ledger (``subledger http``): the payment providers' webhooks,
``POST /webhooks/{gateway}``, a health check, and the JSON API by role
(``commands.http_api`` and the ``commands.api_*`` modules).

Handlers run the synchronous ledger in FastAPI's thread pool; the raw body is read as
bytes, because signatures are computed over the exact bytes the provider sent.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from commands.api_analysts import analyst_router
from commands.api_auditors import auditor_router
from commands.api_pages import SignInRequired, pages_router, sign_in_required
from commands.api_public import public_router
from commands.api_services import service_router
from commands.api_suggestions import suggestion_router
from commands.gateway_webhooks import GatewayWebhooks
from commands.http_api import ApiServices, read_limited
from commands.pseudonyms import Pseudonyms

# Providers' webhook bodies are a few kilobytes; anything far larger is not one.
MAX_WEBHOOK_BYTES = 1_000_000


def http_app(webhooks: GatewayWebhooks, api: ApiServices | None = None) -> FastAPI:
    """The app; without ``api``, only the webhooks and the health check (all a provider's
    receiver needs)."""
    # The API's pages (/docs, /redoc) with their scripts served from here: no CDN.
    app = FastAPIOffline(
        title="subledger",
        summary="The subscription ledger over HTTP: catalog, quotes, revenue figures, "
        "audits and commands by API key role, and payment providers' webhooks.",
        version="0.1.0",
    )
    if api is not None:
        for routes in (public_router, pages_router, analyst_router, auditor_router, service_router):
            app.include_router(routes(api))
        app.include_router(suggestion_router(api, Pseudonyms.of_ledger(api.ledger).of))
        app.add_exception_handler(SignInRequired, sign_in_required)

    @app.get("/health")
    def health() -> dict[str, object]:
        return {"status": "ok", "webhooks": sorted(webhooks.verifiers)}

    @app.post(
        "/webhooks/{gateway}",
        responses={
            400: {"description": "forged, altered, stale or unreadable: nothing was done"},
            404: {"description": "no webhook secret is configured for this gateway"},
            413: {"description": "the body is too large to be a webhook"},
            503: {"description": "the ledger is unreachable: the provider should send it again"},
        },
    )
    async def webhook(gateway: str, request: Request) -> JSONResponse:
        """A provider's delivery: verified, then recorded once (by its event id)."""
        body = await read_limited(request, MAX_WEBHOOK_BYTES)
        if body is None:
            return JSONResponse({"error": "body too large"}, status_code=413)
        answer = await run_in_threadpool(webhooks.receive, gateway, dict(request.headers), body)
        return JSONResponse(answer.body, status_code=answer.status)

    return app
