"""The inbound webhook receiver: a provider's delivery, verified by its gateway's
verifier, becomes one command, whose id derives from the provider's event id.

A delivery the provider sends again (it retries until it gets a 2xx) therefore changes
nothing the second time: the ledger answers the first answer again. A forged, altered
or stale delivery is refused before anything is read from it.

The invoice is found from our idempotency key when the provider echoes it back
(metadata, custom id, notes), else from the gateway's charge reference in the
collections projection (``payment_attempts``), brought up to date first when it does not
know the reference; a charge the ledger still cannot find is not ours and is answered
``ignored``, and logged.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from commands import schemas as s
from commands.dispatch import UNREACHABLE, handle
from gateways.webhooks import ProviderEvent, WebhookRejected, WebhookVerifier
from ledger.application import Ledger
from ledger.clock import Clock
from ledger.errors import DomainError
from projections.database import Database
from projections.values import read_int, read_uuid

log = logging.getLogger(__name__)

GatewayCommand = s.SettlePayment | s.RecordGatewayRefund | s.RecordDispute
_KEY = re.compile(r"^([0-9a-f-]{36}):(payment|refund):([1-9][0-9]*)$")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the receiver answers the provider: a 2xx ends its retries."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Target:
    invoice_id: UUID
    number: int | None  # the attempt or refund number our key named, if it did


class GatewayWebhooks:
    """Verifies deliveries and turns them into commands on ``ledger``."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        verifiers: Mapping[str, WebhookVerifier],
        database: Database,
        catch_up: Callable[[], object],
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.verifiers = dict(verifiers)
        self.database = database
        self.catch_up = catch_up  # brings the projections (payment_attempts) up to date
        # Deliveries are handled on several threads; the projections' connection is one.
        self._projections = threading.Lock()

    def receive(self, gateway: str, headers: Mapping[str, str], body: bytes) -> Answer:
        verifier = self.verifiers.get(gateway)
        if verifier is None:
            return Answer(404, {"error": f"no webhook secret is configured for {gateway!r}"})
        lowered = {name.lower(): value for name, value in headers.items()}
        try:
            event = verifier.verify(lowered, body, self.clock.now())
        except WebhookRejected as error:
            log.warning("%s webhook refused: %s", gateway, error)
            return Answer(400, {"error": str(error)})
        if event is None:
            return Answer(200, {"status": "ignored", "reason": "an event the ledger does not use"})
        try:
            command = self._command(event)
        except UNREACHABLE:
            return Answer(503, {"error": "the ledger is unreachable; send it again later"})
        if command is None:
            log.warning(
                "%s event %s (%s): no invoice has charge %s",
                gateway,
                event.event_id,
                event.kind,
                event.charge_reference,
            )
            return Answer(200, {"status": "ignored", "reason": "no invoice has this charge"})
        try:
            result = handle(command, self.ledger, self.clock)
        except DomainError as refusal:
            # A refusal is final for this event: answering an error would only bring it
            # back. It is logged for the operator.
            log.warning("%s event %s refused: %s", gateway, event.event_id, refusal)
            return Answer(200, {"status": "refused", "code": refusal.code, "error": str(refusal)})
        except UNREACHABLE:
            return Answer(503, {"error": "the ledger is unreachable; send it again later"})
        return Answer(200, {"status": "accepted", "command": command.type, "result": result})

    def _command(self, event: ProviderEvent) -> GatewayCommand | None:
        command_id = f"webhook:{event.gateway}:{event.event_id}"
        target = self._target(event)
        if target is None:
            return None
        if event.kind in ("payment_succeeded", "payment_failed"):
            if target.number is None or event.charge_reference is None:
                return None
            return s.SettlePayment(
                command_id=command_id,
                invoice_id=target.invoice_id,
                attempt=target.number,
                outcome="succeeded" if event.kind == "payment_succeeded" else "failed",
                reference=event.charge_reference,
                code=event.code or "payment_failed",
                message=event.message[:500],
            )
        if event.amount is None or event.object_reference is None:
            return None
        if event.kind == "refund_succeeded":
            return s.RecordGatewayRefund(
                command_id=command_id,
                invoice_id=target.invoice_id,
                reference=event.object_reference,
                amount=event.amount.amount,
                currency=event.amount.currency,
                refund_number=target.number,
            )
        return s.RecordDispute(
            command_id=command_id,
            invoice_id=target.invoice_id,
            reference=event.object_reference,
            status={"dispute_opened": "opened", "dispute_won": "won"}.get(event.kind, "lost"),
            amount=event.amount.amount,
            currency=event.amount.currency,
            reason=(event.code or "")[:200],
        )

    def _target(self, event: ProviderEvent) -> _Target | None:
        """The invoice (and attempt or refund number) the event is about."""
        wanted = "refund" if event.kind == "refund_succeeded" else "payment"
        key = _KEY.match(event.idempotency_key or "")
        if key is not None:
            invoice_id, kind, number = key.groups()
            return _Target(UUID(invoice_id), int(number) if kind == wanted else None)
        if event.charge_reference is None:
            return None
        with self._projections:
            rows = self._attempts_of(event.gateway, event.charge_reference)
            if not rows:  # maybe charged since the projections last ran
                self.catch_up()
                rows = self._attempts_of(event.gateway, event.charge_reference)
        if not rows:
            return None
        invoice_id, attempt = rows[0]
        return _Target(read_uuid(invoice_id), read_int(attempt) if wanted == "payment" else None)

    def _attempts_of(self, gateway: str, reference: str) -> list[tuple[object, ...]]:
        return [
            tuple(row)
            for row in self.database.query(
                "SELECT invoice_id, attempt FROM payment_attempts"
                " WHERE gateway = ? AND reference = ? ORDER BY attempt DESC",
                (gateway, reference),
            )
        ]
