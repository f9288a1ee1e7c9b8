"""Services' route: ``POST /commands``, the bus's commands and replies over HTTP."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from commands.api_keys import Role
from commands.bus import answer_directly
from commands.http_api import ApiServices, guarded_router
from commands.wire import Reply


def service_router(api: ApiServices) -> APIRouter:
    router = guarded_router(api, Role.SERVICE, "services")

    @router.post(
        "/commands",
        responses={503: {"description": "the ledger is unreachable: send it again"}},
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
