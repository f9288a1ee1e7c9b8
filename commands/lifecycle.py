"""What happens on its own as time passes: trials end, periods renew, scheduled cancels
take effect. The billing clock calls ``advance_subscription`` for what is due.

Each transition is keyed by the subscription's own state (a period renews once, then it
is no longer due), so running this twice, or after a crash, applies nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from commands.handlers import current_subscription
from ledger.application import Ledger
from ledger.errors import TooManyConflicts
from ledger.subscriptions import Subscription

MAX_ATTEMPTS = 8


def advance_subscription(ledger: Ledger, subscription_id: UUID, now: datetime) -> Subscription:
    """Applies and stores every transition of the subscription due by ``now``."""
    for _ in range(MAX_ATTEMPTS):
        sub, _customer, _at = current_subscription(ledger, subscription_id, now)
        try:
            ledger.save(sub)
        except IntegrityError:
            continue  # a concurrent command or clock got there first: look again
        return sub
    raise TooManyConflicts(f"subscription {subscription_id} kept changing under the clock")
