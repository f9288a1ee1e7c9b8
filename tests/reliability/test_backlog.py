"""A backlog: tens of thousands of commands wait on the stream before any worker runs
(customers register, add a card, subscribe, ask for a quote); one ``subledger worker``
process on PostgreSQL drains it while its resident memory is sampled from /proc.

Its memory must not grow with what it has answered: the highest RSS in the second half
of the drain stays within ``MARGIN`` of the RSS once a tenth was answered. Every command
is applied once, none rejected or given up.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from commands.accounts import derived_id
from commands.streams import Streams
from ledger.application import Ledger
from tests.integration.bus_driver import Service, worker_process
from tests.reliability.crashing_worker import terminated

BACKLOG = 20_000  # commands, times --scale
# Measured growth: +4.5 MB at 20,000 commands, +9 to +12 MB at 100,000 (the bounded
# per-customer key cache). A worker keeping 2 kB per command grew 40 MB at 20,000, which
# the earlier margin of 50 MB let pass.
MARGIN_KB = 20 * 1024
PIPELINE = 5_000
SAMPLE_EVERY = 0.25  # seconds
DRAIN_TIMEOUT = 60 + BACKLOG / 100  # seconds per BACKLOG commands: a generous 100/s


def customer_commands(n: int) -> list[dict[str, Any]]:
    """Customer ``n`` registers, adds a card, subscribes and asks for a quote."""
    command_id = f"customer-{n}"
    customer_id = str(derived_id("customer", command_id))
    return [
        {
            "type": "customer.register",
            "command_id": command_id,
            "email": f"c{n}@example.com",
            "name": f"Customer {n}",
            "currency": "EUR",
        },
        {
            "type": "customer.add_payment_method",
            "command_id": f"{command_id}-card",
            "customer_id": customer_id,
            "payment_method_id": "pm_1",
            "token": f"tok_{n}",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
        },
        {
            "type": "subscription.start",
            "command_id": f"{command_id}-sub",
            "customer_id": customer_id,
            "plan_code": "basic",
        },
        {
            "type": "quote.preview",
            "command_id": f"{command_id}-quote",
            "plan_code": "basic",
            "customer_id": customer_id,
        },
    ]


CATALOG: list[dict[str, Any]] = [
    {"type": "plan.create", "command_id": "plan", "code": "basic", "name": "Basic"},
    {
        "type": "plan.add_price",
        "command_id": "price",
        "plan_code": "basic",
        "currency": "EUR",
        "amount": 1000,
    },
]


def add_backlog(service: Service, customers: int) -> int:
    """The catalog and each customer's commands, without replies, pipelined; how many."""
    commands = CATALOG + [c for n in range(customers) for c in customer_commands(n)]
    for start in range(0, len(commands), PIPELINE):
        with service.client.pipeline(transaction=False) as pipe:
            for command in commands[start : start + PIPELINE]:
                pipe.xadd(service.streams.commands, {b"data": json.dumps(command).encode()})
            pipe.execute()
    return len(commands)


def rss_kb(pid: int) -> int:
    """The process's resident set size, in kB (``VmRSS`` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}: has it exited?")


@dataclass(frozen=True)
class Sample:
    done: float  # the share of the backlog answered
    rss_kb: int


@pytest.mark.postgres
def test_a_backlog_drains_in_bounded_memory(
    ledger: Ledger,
    postgres_url: str,
    redis_url: str,
    streams: Streams,
    tmp_path: Path,
    scale: int,
) -> None:
    customers = BACKLOG * scale // 4
    service = Service(redis_url, streams)
    total = add_backlog(service, customers)
    log = tmp_path / "worker.log"
    worker = worker_process(postgres_url, redis_url, streams, log)
    try:
        started = time.monotonic()
        samples = drain(service, worker, total, DRAIN_TIMEOUT * scale)
        seconds = time.monotonic() - started
    finally:
        code = terminated(worker)
    assert code == 0, log.read_text()[-2000:]
    baseline = next(s.rss_kb for s in samples if s.done >= 0.1)
    peak = max(s.rss_kb for s in samples if s.done >= 0.5)
    print(
        f"\n{total:,} commands in {seconds:.0f} s ({total / seconds:,.0f}/s); worker RSS "
        f"{baseline / 1024:.0f} MB at 10%, at most {peak / 1024:.0f} MB in the second half "
        f"({(peak - baseline) / 1024:+.1f} MB), {max(s.rss_kb for s in samples) / 1024:.0f} "
        f"MB overall, {len(samples)} samples"
    )
    assert peak - baseline <= MARGIN_KB
    counts = ledger.event_counts_by_type()
    assert (counts["Customer.Registered"], counts["Subscription.Started"]) == (customers, customers)
    assert counts["CommandRecord.Handled"] == 2 + 3 * customers  # quotes record nothing
    client = service.client
    assert client.xlen(streams.rejections) == client.xlen(streams.dead) == 0


def drain(
    service: Service, worker: subprocess.Popen[bytes], total: int, timeout: float
) -> list[Sample]:
    """Samples the worker's memory until the stream is empty (answered entries are
    deleted from it); fails if the worker exits or the time runs out."""
    deadline = time.monotonic() + timeout
    samples: list[Sample] = []
    while True:
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        left = service.client.xlen(service.streams.commands)
        samples.append(Sample(1 - left / total, rss_kb(worker.pid)))
        if left == 0:
            return samples
        assert time.monotonic() < deadline, f"{left:,} of {total:,} commands still waiting"
        time.sleep(SAMPLE_EVERY)
