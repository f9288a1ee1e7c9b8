"""``subledger serve``: a node answering the bus and ticking (projections, billing,
payments, outbox) until SIGTERM; ``subledger send`` as its shell client."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from commands.cli import app
from commands.streams import Streams
from tests.integration.bus_driver import Service, environment, subledger_process


def send(env: dict[str, str], kind: str, fields: dict[str, Any], timeout: str = "20") -> Any:
    result = CliRunner().invoke(
        app, ["send", kind, "--json", json.dumps(fields), "--timeout", timeout], env=env
    )
    return result.exit_code, json.loads(result.stdout)


def published(service: Service, kind: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        types = [json.loads(f[b"data"])["type"] for f in service.entries(service.streams.events)]
        if kind in types:
            return
        assert time.monotonic() < deadline, types
        time.sleep(0.05)


def test_a_node_answers_sends_publishes_and_stops_cleanly(
    database_url: str, redis_url: str, streams: Streams, tmp_path: Path
) -> None:
    env = environment(
        database_url,
        redis_url,
        streams,
        serve_interval="0.2",
        sandbox_path=str(tmp_path / "sandbox.db"),
    )
    log = tmp_path / "node.log"
    node = subledger_process("serve", env, log)
    try:
        code, reply = send(env, "plan.create", {"code": "basic", "name": "Basic"})
        assert (code, reply["status"]) == (0, "accepted")
        assert reply["result"]["code"] == "basic"
        code, reply = send(env, "plan.create", {"code": "basic", "name": "Again"})
        assert (code, reply["error"]["code"]) == (1, "conflict")
        assert reply["error"]["details"] == {"rule": "plan_already_registered"}
        published(Service(redis_url, streams), "plan.created")
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == 0
    assert b"integration events published" in log.read_bytes()
    code, answer = send(env, "plan.create", {"code": "pro", "name": "Pro"}, timeout="0.3")
    assert (code, answer["error"]) == (3, "no_reply")
