"""Command records: the proof that a command id was handled, and what it answered.

A record's id derives from the command id, and it is saved in the same transaction as
the events the command produced. A second command with the same id therefore cannot
commit: it collides on the record, and gets the first answer back.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.errors import DomainError, refusal_for
from ledger.ids import IDS_KEPT


# A batch derives each command's record id twice (to load it, then to make it); uuid5 is
# slow Python (a twentieth of handling a batch went to deriving ids).
@lru_cache(maxsize=IDS_KEPT)
def command_record_id(command_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"subledger:command:{command_id}")


def fingerprint(command_type: str, payload: dict[str, Any]) -> str:
    """A digest of what a command asked for, to tell a redelivery from a reused id."""
    canonical = json.dumps([command_type, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class CommandRecord(Aggregate):
    """What a command id answered: a result, or the refusal of a business rule."""

    # State set by the events' apply(); under TYPE_CHECKING because eventsourcing would
    # turn class annotations into constructor fields.
    if TYPE_CHECKING:
        command_id: str
        command_type: str
        fingerprint: str
        result: dict[str, Any]
        refusal: dict[str, str] | None

    class Handled(Aggregate.Created):
        command_id: str
        command_type: str
        fingerprint: str
        result: dict[str, Any]

        def apply(self, record: CommandRecord) -> None:
            record.command_id = self.command_id
            record.command_type = self.command_type
            record.fingerprint = self.fingerprint
            record.result = dict(self.result)
            record.refusal = None

    class Rejected(Aggregate.Created):
        command_id: str
        command_type: str
        fingerprint: str
        code: str
        message: str

        def apply(self, record: CommandRecord) -> None:
            record.command_id = self.command_id
            record.command_type = self.command_type
            record.fingerprint = self.fingerprint
            record.result = {}
            record.refusal = {"code": self.code, "message": self.message}

    @classmethod
    def handled(
        cls,
        command_id: str,
        command_type: str,
        fingerprint: str,
        result: dict[str, Any],
        at: datetime,
    ) -> CommandRecord:
        return cls._create(
            cls.Handled,
            id=command_record_id(command_id),
            timestamp=at,
            command_id=command_id,
            command_type=command_type,
            fingerprint=fingerprint,
            result=result,
        )

    @classmethod
    def rejected(
        cls,
        command_id: str,
        command_type: str,
        fingerprint: str,
        refusal: DomainError,
        at: datetime,
    ) -> CommandRecord:
        """A refusal is an answer too: the same command id must get it again."""
        return cls._create(
            cls.Rejected,
            id=command_record_id(command_id),
            timestamp=at,
            command_id=command_id,
            command_type=command_type,
            fingerprint=fingerprint,
            code=refusal.code,
            message=str(refusal),
        )

    def answer(self) -> dict[str, Any]:
        """The first answer again: its result, or its refusal raised anew."""
        if self.refusal is not None:
            raise refusal_for(self.refusal["code"], self.refusal["message"])
        return self.result
