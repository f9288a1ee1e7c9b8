"""The machine a benchmark ran on: what a figure in bench/results.md must be read against.

Ratios are comparable between machines, rates are not: results.md names the processor,
the memory, the versions of Python, PostgreSQL and Redis, and the commit measured. Each
fact is read on its own and a missing one reads "unknown" (no Redis, no git): describing
the machine never stops a benchmark.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

UNKNOWN = "unknown"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Machine:
    """What results.md's machine table lists, each as it is printed."""

    cpu: str
    cores: str
    memory: str
    os: str
    python: str
    postgresql: str
    redis: str
    commit: str
    date: str

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) for each fact, in table order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def _or_unknown(read: Callable[[], str]) -> str:
    try:
        return read() or UNKNOWN
    except (OSError, ValueError, psycopg.Error, redis.RedisError, subprocess.SubprocessError):
        return UNKNOWN


def _proc_field(path: str, key: str) -> str:
    """The value of the first ``key: value`` line of a /proc file."""
    with open(path) as lines:
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return ""


def cpu_model() -> str:
    return _proc_field("/proc/cpuinfo", "model name")


def memory_total() -> str:
    kilobytes = int(_proc_field("/proc/meminfo", "MemTotal").split()[0])
    return f"{kilobytes / 2**20:.1f} GiB"


def postgresql_version(connect_kwargs: dict[str, Any]) -> str:
    with psycopg.connect(**connect_kwargs) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else ""


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def git_commit() -> str:
    """The commit checked out, marked ``+ changes`` when the tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short=12", "HEAD") + (" + uncommitted changes" if changed else "")


def describe(connect_kwargs: dict[str, Any], redis_url: str, now: datetime) -> Machine:
    """This machine, its servers and its checkout, at ``now``."""
    return Machine(
        cpu=_or_unknown(cpu_model),
        cores=str(os.cpu_count() or UNKNOWN),
        memory=_or_unknown(memory_total),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        postgresql=_or_unknown(lambda: postgresql_version(connect_kwargs)),
        redis=_or_unknown(lambda: redis_version(redis_url)),
        commit=_or_unknown(git_commit),
        date=now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
