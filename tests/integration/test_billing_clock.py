"""Two billing clocks tick at the same instant, a clock ticks twice, two payment
processors run at once: each period is invoiced once and each invoice charged once.

Fifty customers sign up to Basic (10 EUR a month) on 31 Jan and are paid up; on 28 Feb
all fifty renew at 09:00.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from typer.testing import CliRunner

from commands.billing_clock import BillingClock
from commands.bootstrap import bootstrap, projector
from commands.cli import app
from commands.streams import Streams
from gateways.sandbox import SandboxGateway
from ledger.invoices import InvoiceStatus, payment_key, period_invoice_id
from tests.conftest import REDIS_URL
from tests.integration.conftest import Shop

SUBSCRIBERS = 50
RENEWAL = datetime(2025, 2, 28, 9, tzinfo=UTC)
T = TypeVar("T")


def at_once(*jobs: Callable[[], T]) -> list[T]:
    """Runs each job on a thread of its own, all released together; their results (an
    exception in any is raised here)."""
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], T]) -> T:
        start.wait()
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        return [future.result() for future in futures]


@pytest.mark.parametrize("second", ["same ledger", "own ledger"])
def test_two_clocks_and_two_processors_at_once_renew_and_charge_each_period_once(
    shop: Shop, database_url: str, second: str
) -> None:
    subs = [shop.subscribe(shop.customer()) for _ in range(SUBSCRIBERS)]
    assert shop.pay().charged == SUBSCRIBERS
    shop.clock.advance_to(RENEWAL)
    # The second clock and processor share the shop's ledger, or have one of their own
    # on the same database, as another process would.
    with nullcontext(shop.ledger) if second == "same ledger" else bootstrap(database_url) as other:
        with projector(shop.ledger, database_url) as mine, projector(other, database_url) as its:
            clocks = [
                BillingClock(shop.ledger, mine, shop.clock),
                BillingClock(other, its, shop.clock),
            ]
            at_once(*(clock.tick for clock in clocks))
            counts = shop.ledger.event_counts_by_type()
            # 50 signups and 50 renewals, each invoiced once, each with one payment request.
            assert counts["Subscription.Renewed"] == SUBSCRIBERS
            assert counts["Invoice.Issued"] == counts["Invoice.PaymentRequested"] == 2 * SUBSCRIBERS
            # A clock that ticks again at the same instant finds nothing left to do.
            assert clocks[1].tick().total == 0
            assert shop.ledger.event_counts_by_type() == counts
        with shop.processor() as one, shop.processor(ledger=other) as two:
            reports = at_once(one.run, two.run)
    assert sum(report.charged for report in reports) == SUBSCRIBERS
    renewals = [shop.ledger.invoice(period_invoice_id(sub_id, 1)) for sub_id in subs]
    assert {(i.status, i.attempts, i.total.amount) for i in renewals} == {
        (InvoiceStatus.PAID, 1, 1000)
    }
    charges = shop.sandbox.charges()
    assert len(charges) == 2 * SUBSCRIBERS
    assert {c.key for c in charges[SUBSCRIBERS:]} == {payment_key(i.id, 1) for i in renewals}
    assert shop.ledger.event_counts_by_type()["Invoice.PaymentSucceeded"] == 2 * SUBSCRIBERS


def test_serve_once_renews_and_collects_what_is_due_by_the_system_clock(
    shop: Shop, database_url: str, tmp_path: Path, streams: Streams
) -> None:
    """The simulated shop lives in 2025: by the system clock, every period since is due."""
    ann = shop.customer()
    sub_id = shop.subscribe(ann, "basic", trial_days=0)
    bo = shop.customer()
    shop.subscribe(bo, "pro", trial_days=0)  # monthly, and Pro has an annual price
    env = {
        "SUBLEDGER_SANDBOX_PATH": str(tmp_path / "sandbox.db"),
        "SUBLEDGER_BUS_PREFIX": streams.prefix,
    }
    result = CliRunner().invoke(app, ["serve", "--once", "--database-url", database_url], env=env)
    assert result.exit_code == 0, result.output
    sub = shop.ledger.subscription(sub_id)
    assert sub.period.end > datetime.now(UTC)
    first = shop.ledger.invoice(period_invoice_id(sub_id, 0))
    latest = shop.ledger.invoice(period_invoice_id(sub_id, sub.period.index))
    assert first.status is latest.status is InvoiceStatus.PAID
    with SandboxGateway(str(tmp_path / "sandbox.db")) as sandbox:
        assert len(sandbox.charges()) == 2 * (sub.period.index + 1)  # one per period, none twice
    # The tick's outbox published every stored event as an integration event.
    with redis.Redis.from_url(REDIS_URL) as client:
        published = [json.loads(f[b"data"])["type"] for _, f in client.xrange(streams.events)]
    assert published.count("invoice.paid") == 2 * (sub.period.index + 1)
    # Bo has paid far more than 6 months in a row: the annual plan is suggested, once.
    assert published.count("suggestion.annual_plan") == 1
