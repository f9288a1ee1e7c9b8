"""Private Redis and PostgreSQL servers for tests that stop, kill and restart them, on
spare ports and in folders of their own, so that the shared servers stay untouched."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

REDIS_SERVER = "redis-server"
INITDB = "initdb"
PG_CTL = "pg_ctl"
# PostgreSQL refuses to run as root: it then runs as this user.
POSTGRES_USER = "postgres"
READY_SECONDS = 30.0


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def missing(*binaries: str) -> list[str]:
    """The binaries not found on PATH (for a skip's reason)."""
    return [name for name in binaries if shutil.which(name) is None]


def postgres_unavailable() -> str | None:
    """Why no private PostgreSQL can run here (a skip's reason), or None."""
    if absent := missing(INITDB, PG_CTL):
        return f"needs {', '.join(absent)} for a private PostgreSQL"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            return f"PostgreSQL will not run as root, and there is no user {POSTGRES_USER!r}"
    return None


def _wait_until(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {READY_SECONDS:.0f}s")
        time.sleep(0.05)


class PrivateRedis:
    """A redis-server persisting every write to its append-only file before answering
    (``appendfsync always``): a restart, even after kill -9, loses no acknowledged write."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always"]
        argv += ["--save", "", "--logfile", str(self.folder / "redis.log")]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        _wait_until(self._answers, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        """Whether our process answers on the port (not another one that took it)."""
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {self.folder / 'redis.log'}")
        try:
            with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                return bool(client.info("server")["process_id"] == self._process.pid)
        except redis.RedisError:  # not listening yet, or still loading its file
            return False

    def stop(self, kill: bool = False) -> None:
        """SHUTDOWN (the append-only file flushed), or with ``kill`` a SIGKILL."""
        process = self._process
        if process is None:
            return
        if kill:
            process.kill()
        else:
            with redis.Redis.from_url(self.url) as client:
                client.shutdown()  # redis-py expects the connection to close
        process.wait(READY_SECONDS)
        self._process = None

    def restart(self, kill: bool = False) -> None:
        """Stops it (see ``stop``) and starts it again on the same port and files."""
        self.stop(kill)
        self.start()


class PrivatePostgres:
    """A PostgreSQL cluster made by initdb in a temporary folder (trust authentication,
    user ``postgres``), listening on a spare port and a socket in that folder."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        # Not under pytest's tmp_path: when we are root the server runs as another user,
        # who must be able to reach its folder.
        self.folder = Path(tempfile.mkdtemp(prefix="subledger-pg-"))
        self.data = self.folder / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = POSTGRES_USER if os.geteuid() == 0 else None
        if self._user is not None:
            owner = pwd.getpwnam(self._user)
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)

    def _run(self, *argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, user=self._user, check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")

    def initdb(self) -> None:
        self._run(INITDB, "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "postgres.log")
        self._run(PG_CTL, "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clients disconnected, a clean shutdown; ``immediate``: the server
        quits at once, as a crash, and recovers from its write-ahead log at start."""
        self._run(PG_CTL, "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        """Stops it if it runs, and deletes its folder."""
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
