"""Auditors' routes: transaction histories, accounts replayed as of an instant from the
event store, and the hash chain's verification."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from commands.api_keys import Role
from commands.audit import NoChain, chain_recorder, verify
from commands.audit_export import export
from commands.audit_replay import replay
from commands.http_api import NOT_FOUND, ApiServices, guarded_router
from projections.history import customer_history

NO_CHAIN: dict[str, Any] = {"description": "this ledger's store keeps no audit chain"}
# An export is written aside before it is sent: past this size, to a temporary file, so
# that a whole ledger's export never sits in memory.
SPOOL_BYTES = 8 * 1024 * 1024
CHUNK_CHARS = 64 * 1024


class HistoryOut(BaseModel):
    customer_id: UUID
    history: list[dict[str, Any]]


def auditor_router(api: ApiServices) -> APIRouter:
    router = guarded_router(api, Role.AUDITOR, "auditors")

    @router.get("/customers/{customer_id}/history", responses={404: NOT_FOUND})
    def history(customer_id: UUID) -> HistoryOut:
        """A customer's transaction history, in order (from the projections)."""
        with api.lock:
            api.catch_up()
            lines = customer_history(api.database, customer_id)
        if not lines:
            raise HTTPException(404, f"no customer {customer_id}")
        return HistoryOut(customer_id=customer_id, history=[line.as_json() for line in lines])

    @router.get("/audit/verify", responses={501: NO_CHAIN})
    def audit_verify() -> dict[str, Any]:
        """Walks the hash chain over every stored event; names the first broken link."""
        with api.lock:
            try:
                return verify(chain_recorder(api.ledger)).to_dict()
            except NoChain as error:
                raise HTTPException(501, str(error)) from None

    @router.get("/audit/replay/{customer_id}", responses={404: NOT_FOUND, 501: NO_CHAIN})
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

    @router.get(
        "/audit/export",
        responses={
            200: {"content": {"application/x-ndjson": {}}},
            404: NOT_FOUND,
            501: NO_CHAIN,
        },
    )
    def audit_export(customer_id: UUID | None = None) -> StreamingResponse:
        """The stored events (of one customer's account, or all) as JSON Lines, each with
        its position and chain hash, then a summary line: docs/audit.md gives the recipe
        to check it with nothing but the file."""
        # Not a with block: the response streams it, and closes it when done.
        spool = tempfile.SpooledTemporaryFile(SPOOL_BYTES, mode="w+", encoding="utf-8")  # noqa: SIM115
        try:
            with api.lock:
                summary = export(api.ledger, spool, customer_id)
        except NoChain as error:
            spool.close()
            raise HTTPException(501, str(error)) from None
        if customer_id is not None and summary.events == 0:
            spool.close()
            raise HTTPException(404, f"no customer {customer_id}")
        spool.seek(0)
        name = f"subledger-{customer_id or 'ledger'}.jsonl"
        return StreamingResponse(
            _chunks(spool),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router


def _chunks(spool: IO[str]) -> Iterator[str]:
    with spool:
        while chunk := spool.read(CHUNK_CHARS):
            yield chunk
