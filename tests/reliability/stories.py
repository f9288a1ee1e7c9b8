"""A realistic stream of commands: customers register, most add a card, subscribe to
Basic or Pro, then change plan, pause, resume, cancel or revoke a cancellation a few
times (some of which the business rules refuse, as they would in life).

Ids are derived from command ids, so every command can be written up front; a customer's
commands go out one round after another, each round after the replies to the previous.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import zip_longest
from typing import Any

from commands.accounts import derived_id
from tests.integration.test_bus import PLAN, PRICE, card, customer, signup
from tests.reliability.producers import Command, Rounds

PRO_PLAN: Command = {"type": "plan.create", "command_id": "plan-pro", "code": "pro", "name": "Pro"}
PRO_PRICE: Command = {
    "type": "plan.add_price",
    "command_id": "price-pro",
    "plan_code": "pro",
    "currency": "EUR",
    "amount": 2000,
    "trial_days": 14,
}
CATALOG = [PLAN, PRICE, PRO_PLAN, PRO_PRICE]


def on_subscription(kind: str, **fields: Any) -> Callable[[str], Command]:
    """A command of ``kind`` on the subscription it is given."""
    return lambda subscription_id: {
        "type": f"subscription.{kind}",
        "subscription_id": subscription_id,
        **fields,
    }


# What a subscriber may do after signing up, and how often, relatively.
CHANGES: dict[str, tuple[Callable[[str], Command], int]] = {
    "upgrade": (on_subscription("change_plan", plan_code="pro"), 3),
    "downgrade": (on_subscription("change_plan", plan_code="basic"), 2),
    "pause": (on_subscription("pause"), 2),
    "resume": (on_subscription("resume"), 2),
    "cancel": (on_subscription("cancel", when="period_end"), 2),
    "revoke": (on_subscription("revoke_cancel"), 1),
    "cancel_now": (on_subscription("cancel", when="now"), 1),
}


def story(n: int, rng: random.Random) -> list[Command]:
    """Customer ``n``'s commands, in the order they must be applied."""
    commands = [customer(n)]
    if rng.random() < 0.8:
        commands.append(card(n))
    commands.append(signup(n) | {"plan_code": rng.choice(["basic", "pro"])})
    subscription_id = str(derived_id("subscription", f"signup-{n}"))
    kinds = rng.choices(list(CHANGES), [w for _, w in CHANGES.values()], k=rng.randint(0, 4))
    for step, kind in enumerate(kinds):
        make = CHANGES[kind][0]
        commands.append(make(subscription_id) | {"command_id": f"{kind}-{n}-{step}"})
    return commands


def stories(total: int, seed: int) -> list[list[Command]]:
    """Customers' stories adding up to ``total`` commands (the last one cut short)."""
    rng = random.Random(seed)
    found: list[list[Command]] = []
    left = total
    while left > 0:
        found.append(story(len(found), rng)[:left])
        left -= len(found[-1])
    return found


def rounds(customers: list[list[Command]], group: int) -> Rounds:
    """The stories ``group`` customers at a time: their first commands in one round, their
    second ones in the next, and so on; then the next group."""
    found: list[list[Command]] = []
    for start in range(0, len(customers), group):
        steps = zip_longest(*customers[start : start + group])
        found += [[c for c in step if c is not None] for step in steps]
    return found


def workload(total: int, producers: int, seed: int, group: int = 40) -> list[Rounds]:
    """``total`` commands after the catalog, the customers dealt out among ``producers``."""
    customers = stories(total, seed)
    return [rounds(customers[p::producers], group) for p in range(producers)]
