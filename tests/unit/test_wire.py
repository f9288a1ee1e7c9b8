"""Reading a stream entry never raises: a command, or a rejection with a stable code and,
where the entry names them, the command id and the stream to reply to."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from faststream.redis.parser.binary import BinaryMessageFormatV1
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.schemas import COMMAND_TYPES, RegisterPlan
from commands.streams import Streams
from commands.wire import MAX_BYTES, Incoming, read_entry, rejected

STREAMS = Streams()
PLAN = {"type": "plan.create", "command_id": "p1", "code": "pro", "name": "Pro"}


def read(fields: dict[bytes, bytes]) -> Incoming:
    return read_entry(b"1-0", fields, STREAMS)


def read_json(message: Any) -> Incoming:
    return read({b"data": json.dumps(message).encode()})


def test_a_plain_entry_and_a_faststream_envelope_carry_the_same_command() -> None:
    plain = read_json(PLAN | {"reply_to": "shop:replies"})
    envelope = asyncio.run(
        BinaryMessageFormatV1.encode(
            message=PLAN | {"reply_to": "shop:replies"},
            reply_to=None,
            headers=None,
            correlation_id="c",
        )
    )
    wrapped = read({b"__data__": envelope})
    for message in (plain, wrapped):
        assert message.rejection is None
        assert isinstance(message.command, RegisterPlan)
        assert (message.command_id, message.reply_to) == ("p1", "shop:replies")
        assert message.entry_id == "1-0"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({b"other": b"{}"}, "invalid_json"),
        ({b"data": b"\xff\xfe"}, "invalid_json"),
        ({b"data": b"{"}, "invalid_json"),
        ({b"data": b"null"}, "invalid_json"),
        ({b"data": b"[" * 50_000}, "invalid_json"),
        ({b"data": b" " * (MAX_BYTES + 1)}, "too_large"),
        ({b"data": b'{"type": "plan.drop", "command_id": "x"}'}, "unknown_type"),
        ({b"data": b'{"type": 7, "command_id": "x"}'}, "unknown_type"),
        ({b"data": b'{"command_id": "x"}'}, "validation_failed"),
    ],
)
def test_garbage_gets_a_code(fields: dict[bytes, bytes], code: str) -> None:
    message = read(fields)
    assert message.command is None
    assert message.rejection is not None
    assert message.rejection.code == code


def test_a_rejection_says_where_the_problem_is() -> None:
    missing = read_json({"command_id": "x"})
    assert missing.rejection is not None
    assert missing.rejection.details == {
        "errors": [{"loc": "type", "msg": "Unable to extract tag using discriminator 'type'"}]
    }
    both = read_json(
        {
            "type": "coupon.create",
            "command_id": "c",
            "code": "X",
            "percent_off": "5",
            "amount_off": 5,
            "currency": "EUR",
        }
    )
    assert both.rejection is not None
    [problem] = both.rejection.details["errors"]
    assert problem["loc"] == "command"
    assert "not both" in problem["msg"]
    assert both.command_id == "c"


@pytest.mark.parametrize(
    ("reply_to", "answered"),
    [
        ("shop:replies", True),
        ("has space", False),
        ("", False),
        (7, False),
        ("subledger:commands", False),
    ],
)
def test_a_rejection_is_replied_only_to_a_proper_stream_not_ours(
    reply_to: Any, answered: bool
) -> None:
    message = read_json({"type": "plan.create", "command_id": "p", "reply_to": reply_to})
    assert message.rejection is not None
    assert (message.reply_to is not None) is answered


def test_a_valid_command_replying_to_a_bus_stream_is_refused_without_reply() -> None:
    message = read_json(PLAN | {"reply_to": STREAMS.events})
    assert message.command is None
    assert message.rejection is not None
    assert message.rejection.code == "validation_failed"
    assert message.reply_to is None
    assert message.command_id == "p1"


CODES = {"invalid_json", "too_large", "unknown_type", "validation_failed"}
# Lone surrogates too: what JSON.stringify gives for a string cut inside an emoji.
texts = st.lists(st.characters() | st.characters(categories=["Cs"]), max_size=12).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
# Entries a careless or hostile client might add: random bytes, random JSON, and JSON
# that looks like a command with fields of every wrong kind.
near_commands = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(COMMAND_TYPES)) | texts},
    optional={
        "command_id": texts | json_values,
        "reply_to": texts | json_values,
        "customer_id": json_values,
        "amount": json_values,
        "when": json_values,
        "code": json_values,
    },
)
payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_commands.map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=300, deadline=None)
@given(
    payload=payloads,
    other=st.dictionaries(st.binary(max_size=8), st.binary(max_size=8), max_size=3),
)
def test_no_entry_makes_reading_raise_and_every_answer_can_be_written(
    payload: bytes, other: dict[bytes, bytes]
) -> None:
    message = read({**other, b"data": payload})
    assert (message.command is None) != (message.rejection is None)
    if message.rejection is not None:
        assert message.rejection.code in CODES
        reply = rejected(message.command_id, message.rejection)
        json.loads(reply.model_dump_json())  # a reply always serialises
    if message.reply_to is not None:
        assert not STREAMS.ours(message.reply_to)
        message.reply_to.encode()
