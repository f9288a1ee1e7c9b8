"""A bus client for the shell and for tests: add a command to the commands stream and
wait for its reply, as any Redis client can (plain XADD, then XREAD on ``reply_to``)."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import redis

from commands.streams import Streams

# How long a reply stream outlives a request that stopped waiting for it.
REPLY_KEPT_SECONDS = 3600


def request(
    payload: dict[str, Any], redis_url: str, streams: Streams, timeout: float
) -> dict[str, Any]:
    """The reply to ``payload`` (a command without ``reply_to``: a stream of this request's
    own is used, then deleted); TimeoutError when no worker answers in time."""
    reply_to = f"{streams.prefix}:replies:{uuid4().hex}"
    with redis.Redis.from_url(redis_url) as client:
        # The stream exists from now on, with an expiry that a late reply (after we
        # stopped waiting) keeps: it does not stay for ever.
        client.xgroup_create(reply_to, "expiry", mkstream=True)
        client.expire(reply_to, max(REPLY_KEPT_SECONDS, int(timeout) * 2))
        client.xadd(streams.commands, {"data": json.dumps(payload | {"reply_to": reply_to})})
        read = client.xread({reply_to: 0}, count=1, block=max(1, int(timeout * 1000)))
        if not read:
            raise TimeoutError(f"no reply within {timeout}s")
        client.delete(reply_to)
    [[_, [[_, fields]]]] = read
    reply: dict[str, Any] = json.loads(fields[b"data"])
    return reply
