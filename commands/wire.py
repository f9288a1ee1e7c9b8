"""The bus's wire format: a stream entry in, a command (or the reason there is none) out;
an answer out as a reply.

An entry carries the command as JSON text in its field ``data`` (what ``XADD stream *
data '<json>'`` writes from any Redis client); FastStream's own publisher wraps it in its
binary envelope under ``__data__``, which we open too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from faststream.redis.parser.binary import BinaryMessageFormatV1
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from commands.schemas import COMMAND_TYPES, Command, CommandId, StreamName, command_adapter
from commands.streams import Streams
from ledger.errors import (
    CommandIdReused,
    CouponAlreadyRegistered,
    CustomerAlreadyRegistered,
    DomainError,
    NotFound,
    PaymentInFlight,
    PlanAlreadyRegistered,
    TooManyConflicts,
)

# Far above any real command; a bigger entry is refused unread.
MAX_BYTES = 64 * 1024
stream_name: TypeAdapter[str] = TypeAdapter(StreamName)
command_id_type: TypeAdapter[str] = TypeAdapter(CommandId)
# Refusals that say "already so, or busy" rather than "against the rules".
CONFLICTS = (
    CommandIdReused,
    CouponAlreadyRegistered,
    CustomerAlreadyRegistered,
    PaymentInFlight,
    PlanAlreadyRegistered,
    TooManyConflicts,
)


class ReplyError(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class Reply(BaseModel):
    """What a command's ``reply_to`` stream receives (JSON in the entry's ``data``)."""

    command_id: str | None
    status: Literal["accepted", "rejected"]
    result: dict[str, Any] | None = None
    error: ReplyError | None = None


class RejectionRecord(BaseModel):
    """What the rejections stream keeps of every rejected entry (JSON in ``data``)."""

    entry_id: str
    command_id: str | None
    reply_to: str | None
    error: ReplyError
    received: str = ""  # the start of the entry's payload, as text


class DeadLetter(BaseModel):
    """An entry of the dead-letter stream (one field each): the command's JSON (``data``:
    re-send it as is), why and after how many deliveries it was given up, and the
    original entry's fields as a JSON object."""

    entry_id: str
    deliveries: int
    reason: str
    data: str
    fields: str


@dataclass(frozen=True)
class Incoming:
    """A stream entry read: its command, or why there is none, and where to reply."""

    entry_id: str
    command: Command | None = None
    rejection: ReplyError | None = None
    command_id: str | None = None
    reply_to: str | None = None
    fields: dict[bytes, bytes] = field(default_factory=dict, repr=False)


def read_entry(entry_id: bytes, fields: dict[bytes, bytes], streams: Streams) -> Incoming:
    """The command an entry carries; never raises, whatever the entry holds."""
    ident = entry_id.decode()
    raw = payload(fields)
    if raw is None:
        return Incoming(ident, rejection=_invalid("an entry carries its command as JSON in 'data'"))
    if len(raw) > MAX_BYTES:
        error = ReplyError(code="too_large", message=f"a command is at most {MAX_BYTES} bytes")
        return Incoming(ident, rejection=error, fields=fields)
    try:
        command = command_adapter.validate_json(raw)
    except ValidationError as error:
        return _refused(ident, raw, error, streams, fields)
    if command.reply_to is not None and streams.ours(command.reply_to):
        ours = _reply_to_ours(command.reply_to)
        return Incoming(ident, rejection=ours, command_id=command.command_id, fields=fields)
    return Incoming(ident, command, None, command.command_id, command.reply_to, fields)


def payload(fields: dict[bytes, bytes]) -> bytes | None:
    """The command's JSON an entry carries, plain or in FastStream's envelope."""
    if (raw := fields.get(b"data")) is not None:
        return raw
    if (envelope := fields.get(b"__data__")) is not None:
        return BinaryMessageFormatV1.parse(envelope)[0]
    return None


def _refused(
    ident: str, raw: bytes, error: ValidationError, streams: Streams, fields: dict[bytes, bytes]
) -> Incoming:
    """Why a payload is not a command, with the command id and reply stream it names (if
    they can be read), so that the sender hears of it."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError) as bad:
        return Incoming(ident, rejection=_invalid(f"not JSON: {bad}"), fields=fields)
    if not isinstance(message, dict):
        return Incoming(ident, rejection=_invalid("a command is a JSON object"), fields=fields)
    command_id = message.get("command_id")
    if not _valid(command_id, command_id_type):
        command_id = None
    reply_to = message.get("reply_to")
    if not (_valid(reply_to, stream_name) and not streams.ours(reply_to)):
        reply_to = None
    return Incoming(ident, None, _why(error, message), command_id, reply_to, fields)


def _valid(value: Any, kind: TypeAdapter[str]) -> TypeGuard[str]:
    """Whether ``value`` is a ``kind``, and so can be written back: pydantic refuses a
    lone surrogate (a string cut inside an emoji), which no reply could hold."""
    try:
        kind.validate_python(value)
    except ValidationError:
        return False
    return True


def _why(error: ValidationError, message: dict[str, Any]) -> ReplyError:
    problems = error.errors(include_url=False, include_input=False)
    if any(p["type"] == "union_tag_invalid" for p in problems):
        return ReplyError(
            code="unknown_type",
            message=f"unknown command type {message.get('type')!r}",
            details={"known": list(COMMAND_TYPES)},
        )
    listed = [{"loc": _location(p), "msg": p["msg"]} for p in problems]
    summary = "; ".join(f"{p['loc']}: {p['msg']}" for p in listed)
    return ReplyError(code="validation_failed", message=summary, details={"errors": listed})


def _location(problem: ErrorDetails) -> str:
    """Where a problem is, as ``field.path``: ``type`` when the type is missing,
    ``command`` for a rule across fields."""
    if problem["type"] == "union_tag_not_found":
        return "type"
    # The first part of a location is the command type the union tried.
    return ".".join(str(part) for part in problem["loc"][1:]) or "command"


def _invalid(message: str) -> ReplyError:
    return ReplyError(code="invalid_json", message=message)


def _reply_to_ours(stream: str) -> ReplyError:
    message = f"reply_to {stream!r} is one of the bus's own streams"
    return ReplyError(
        code="validation_failed",
        message=message,
        details={"errors": [{"loc": "reply_to", "msg": message}]},
    )


def refusal(error: DomainError) -> ReplyError:
    """A business rule's refusal, by its stable code class."""
    if isinstance(error, NotFound):
        code = "not_found"
    elif isinstance(error, CONFLICTS):
        code = "conflict"
    else:
        code = "rule_violation"
    return ReplyError(code=code, message=str(error), details={"rule": error.code})


def accepted(command_id: str | None, result: dict[str, Any]) -> Reply:
    return Reply(command_id=command_id, status="accepted", result=result)


def rejected(command_id: str | None, error: ReplyError) -> Reply:
    return Reply(command_id=command_id, status="rejected", error=error)
