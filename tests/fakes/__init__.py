"""Local stand-ins for the payment providers' HTTP APIs, as they document them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pytest_httpserver import HTTPServer


@contextmanager
def threaded_server() -> Iterator[HTTPServer]:
    """A threaded local server for a fake (a request that sleeps, to lose its answer, must
    not hold up the retry that follows), stopped afterwards. Stopping takes half a second:
    share one per test module (each fake installs its handlers afresh)."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()
