"""The right to be forgotten: ``customer.erase`` destroys the customer's personal data
key, then records ``Customer.Erased``.

The key goes first, outside the command's transaction (it is not an event): should the
event not be saved (a crash, a conflict), the personal data is unreadable already, and
the command sent again records the event. Afterwards the customer's email and name read
as "erased" everywhere (their events, snapshots, the integration events published from
then on, the outbound webhook deliveries; see docs/audit.md), while the bytes stored stay
as they were, so the audit chain still verifies, and billing goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from commands import schemas as s
from commands.accounts import Outcome
from ledger.application import Ledger


class PersonalDataNotSealed(RuntimeError):
    """A ledger made without a master key keeps personal data as it is: it cannot erase."""


def erase_customer(cmd: s.EraseCustomer, ledger: Ledger, now: datetime) -> Outcome:
    customer = ledger.customer(cmd.customer_id)
    if ledger.personal_data is None:
        raise PersonalDataNotSealed("this ledger has no personal data key: nothing to destroy")
    ledger.personal_data.forget(customer.id, now)
    customer.erase(now)
    return Outcome({"customer_id": str(customer.id), "erased": True}, (customer,))


PRIVACY_HANDLERS: dict[type[s.Command], Callable[[Any, Ledger, datetime], Outcome]] = {
    s.EraseCustomer: erase_customer,
}
