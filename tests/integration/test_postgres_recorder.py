"""The ledger's PostgreSQL recorder keeps the library's guarantees with fewer round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from commands.bootstrap import bootstrap
from ledger.customers import Customer
from ledger.postgres_recorder import LeanPostgresApplicationRecorder

pytestmark = pytest.mark.postgres
AT = datetime(2025, 1, 1, tzinfo=UTC)


def test_saves_are_numbered_in_order_and_all_or_nothing(postgres_url: str) -> None:
    with bootstrap(postgres_url) as ledger:
        assert isinstance(ledger.recorder, LeanPostgresApplicationRecorder)
        ann = Customer.register(uuid4(), "ann@example.com", "Ann", "EUR", AT)
        bo = Customer.register(uuid4(), "bo@example.com", "Bo", "EUR", AT)
        recordings = ledger.save(ann, bo)
        ids = [r.notification.id for r in recordings]
        assert ids[1] == ids[0] + 1

        stale = ledger.customer(ann.id)
        ann.change_contact("ann@example.org", "Ann", AT)
        ledger.save(ann)
        stale.change_contact("ann@example.net", "Ann", AT)  # a concurrent writer
        cid = Customer.register(uuid4(), "cid@example.com", "Cid", "EUR", AT)
        with pytest.raises(IntegrityError):
            ledger.save(cid, stale)
        assert cid.id not in ledger.repository  # nothing of the failed save was kept
        assert ledger.customer(ann.id).email == "ann@example.org"
