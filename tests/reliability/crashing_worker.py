"""A ``subledger worker`` process that the test kills with SIGKILL and starts again."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from commands.streams import Streams
from tests.integration.bus_driver import worker_process


class CrashingWorker:
    """One worker process at a time. Each start runs under the worker's steady consumer
    name (it then answers what it held at once) or, as a new process of a node would, a
    name of its own (what the dead one held is claimed after the idle timeout)."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        streams: Streams,
        log: Path,
        rng: random.Random,
        **settings: str,
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.streams = streams
        self.log = log
        self.rng = rng
        self.settings = settings
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        name = "steady" if self.rng.random() < 0.5 else f"start-{self.starts}"
        self.process = worker_process(
            self.database_url,
            self.redis_url,
            self.streams,
            self.log,
            **self.settings,
            bus_consumer=name,
        )

    def kill(self) -> None:
        """kill -9: whatever it was doing (reading, storing, replying) stops mid-way."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        assert self.process.returncode == -9, f"the worker had exited: {self.process.returncode}"

    def stop(self) -> None:
        """SIGTERM, which a worker answers by finishing its batch and exiting cleanly."""
        if self.process is not None and self.process.poll() is None:
            assert terminated(self.process) == 0


def terminated(process: subprocess.Popen[bytes], seconds: float = 60) -> int:
    """Its exit code after SIGTERM; killed if it is still running after ``seconds``,
    so that no process is left behind on a shared machine."""
    process.terminate()
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
