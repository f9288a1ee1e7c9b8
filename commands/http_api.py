"""What the JSON API's routes share (``subledger http``): the services they read, and the
guard that lets each audience's routes answer only keys of its role. The routes are in
``commands.api_public`` (the catalog and quotes, for anyone), ``commands.api_analysts``
(revenue figures), ``commands.api_auditors`` (histories, replays, the chain) and
``commands.api_services`` (the bus's commands); ``admin`` keys open everything.

A request for a guarded route without a valid key gets 401 (with ``WWW-Authenticate:
Bearer``), with a key of another role 403; neither body holds anything but the refusal.
The key is checked before the request's parameters, so a refusal says nothing about them.

Routes are synchronous and run in FastAPI's thread pool; they share one connection to the
projections' database, which one lock keeps to one request at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from commands.api_keys import KeyStore, Role
from commands.streams import Streams
from commands.wire import refusal
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.errors import DomainError, NotFound
from projections.database import Database

Responses = dict[int | str, dict[str, Any]]
UNAUTHENTICATED: Responses = {401: {"description": "no API key, or one unknown or revoked"}}
GUARDED: Responses = UNAUTHENTICATED | {
    403: {"description": "the key's role may not use this route"}
}
NOT_FOUND: dict[str, Any] = {"description": "no such customer, plan or coupon"}
REFUSED: dict[str, Any] = {"description": "a business rule refused it (the body says which)"}

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


def check_key(api: ApiServices, secret: str | None, role: Role) -> Role:
    """The role of the key ``secret`` if it may act as ``role``; else 401 (no key, or an
    unknown or revoked one) or 403 (a key of another role)."""
    if not secret:
        raise _unauthenticated("an API key is required")
    with api.lock:
        found = api.keys.role_of(secret)
    if found is None:
        raise _unauthenticated("the API key is unknown or revoked")
    if found not in (role, Role.ADMIN):
        raise HTTPException(403, f"a {found} key may not use this route")
    return found


def guarded_router(api: ApiServices, role: Role, tag: str) -> APIRouter:
    """A router whose every route answers only keys of ``role`` (or admin)."""

    def check(credentials: Credentials) -> Role:
        return check_key(api, credentials.credentials if credentials else None, role)

    return APIRouter(tags=[tag], dependencies=[Depends(check)], responses=GUARDED)


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request's body, or None past ``limit`` bytes (declared or sent): read as it
    arrives, so that an oversized body is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


def refused(error: DomainError) -> HTTPException:
    """A business rule's refusal: 404 for what does not exist, else 422."""
    return HTTPException(404 if isinstance(error, NotFound) else 422, refusal(error).model_dump())


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
