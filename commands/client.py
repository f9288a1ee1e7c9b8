"""A bus client for the shell and for tests: add a command to the commands stream and
wait for its reply, as any Redis client can (plain XADD, then XREAD on ``reply_to``)."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import redis

from commands.streams import Streams


def request(
    payload: dict[str, Any], redis_url: str, streams: Streams, timeout: float
) -> dict[str, Any]:
    """The reply to ``payload`` (a command without ``reply_to``: a stream of this request's
    own is used, then deleted); TimeoutError when no worker answers in time."""
    reply_to = f"{streams.prefix}:replies:{uuid4().hex}"
    with redis.Redis.from_url(redis_url) as client:
        client.xadd(streams.commands, {"data": json.dumps(payload | {"reply_to": reply_to})})
        try:
            read = client.xread({reply_to: 0}, count=1, block=max(1, int(timeout * 1000)))
        finally:
            client.delete(reply_to)
    if not read:
        raise TimeoutError(f"no reply within {timeout}s")
    [[_, [[_, fields]]]] = read
    reply: dict[str, Any] = json.loads(fields[b"data"])
    return reply
