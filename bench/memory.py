"""The resident memory of this process, as benchmarks that must stay flat sample it."""

from __future__ import annotations

import os

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_megabytes() -> float:
    """Resident set size, from /proc/self/statm (Linux): pages resident times page size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES / 2**20
