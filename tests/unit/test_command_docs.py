"""docs/commands.md is what services code against: every command type has a redis-cli
example the bus would accept, the examples chain like one real session (an id used is
one an earlier reply gave), and the rejection codes are the stable ones."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from commands.accounts import derived_id
from commands.bootstrap import bootstrap, projector
from commands.bus import answer_directly
from commands.payments import PaymentProcessor
from commands.schemas import COMMAND_TYPES, parse_command
from commands.streams import Streams
from commands.wire import Reply
from gateways.port import Gateways
from gateways.sandbox import SandboxGateway
from ledger.clock import SimulatedClock
from ledger.errors import DomainError
from ledger.invoices import change_invoice_id, period_invoice_id

DOC = (Path(__file__).parents[2] / "docs" / "commands.md").read_text(encoding="utf-8")
REJECTION_CODES = {
    "invalid_json",
    "too_large",
    "unknown_type",
    "validation_failed",
    "not_found",
    "conflict",
    "rule_violation",
}
# `redis-cli XADD <stream> '*' data '<json>'`: the quoted JSON may span several lines.
XADD = re.compile(r"^redis-cli XADD (?P<stream>\S+) '\*' data '(?P<json>[^']*)'", re.M)
# `subledger send TYPE [--direct] --json '<json>'`: the type is given apart.
SEND = re.compile(r"^subledger send (?P<type>\S+) (?:--direct )?--json '(?P<json>[^']*)'", re.M)
JSON_BLOCK = re.compile(r"^```json\n(.*?)^```", re.M | re.S)
# The page's replies were given with the clock here (those after its ten-day jump are
# shown as excerpts only).
SESSION_START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def examples() -> list[dict[str, Any]]:
    """Every command the page sends, in the page's order, as the bus would read it."""
    found: list[tuple[int, dict[str, Any]]] = []
    for match in XADD.finditer(DOC):
        assert match["stream"] == "subledger:commands", match[0]
        found.append((match.start(), json.loads(match["json"])))
    for match in SEND.finditer(DOC):
        fields = json.loads(match["json"])
        assert fields.get("type", match["type"]) == match["type"], match[0]
        found.append((match.start(), {"type": match["type"], **fields}))
    return [command for _, command in sorted(found, key=lambda pair: pair[0])]


EXAMPLES = examples()


def replies() -> list[dict[str, Any]]:
    """The replies the page shows whole (a JSON block with a ``command_id`` and a
    ``status``; excerpts of a result have no ``command_id``)."""
    blocks = (json.loads(block) for block in JSON_BLOCK.findall(DOC))
    return [block for block in blocks if {"command_id", "status"} <= set(block)]


def test_every_redis_cli_and_send_line_is_read_as_an_example() -> None:
    # A line the patterns miss (other quoting, a typo) would go unchecked.
    lines = re.findall(r"^(?:redis-cli XADD|subledger send \S+ (?:--direct )?--json)", DOC, re.M)
    assert len(lines) == len(EXAMPLES) > len(COMMAND_TYPES)


def test_every_command_type_has_a_section_and_an_example() -> None:
    sections = set(re.findall(r"^### `([a-z_]+\.[a-z_]+)`$", DOC, re.M))
    assert sections == set(COMMAND_TYPES)
    assert set(COMMAND_TYPES) - {example["type"] for example in EXAMPLES} == set()


def test_no_example_uses_a_type_that_does_not_exist() -> None:
    assert {example["type"] for example in EXAMPLES} - set(COMMAND_TYPES) == set()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["command_id"] for e in EXAMPLES])
def test_every_example_is_a_valid_command(example: dict[str, Any]) -> None:
    command = parse_command(json.dumps(example))
    assert command.type == example["type"]
    assert command.reply_to is None or not Streams().ours(command.reply_to)


def test_the_examples_chain_like_one_session() -> None:
    """Each id an example names was given by an earlier example's reply (or by the
    example that registered it); a command id sent twice carries the same command."""
    plans: set[str] = set()
    coupons: set[str] = set()
    customers: set[UUID] = set()
    subscriptions: set[UUID] = set()
    sent: dict[str, dict[str, Any]] = {}
    for example in EXAMPLES:
        command_id, kind = example["command_id"], example["type"]
        assert sent.setdefault(command_id, example) == example, f"{command_id} reused"
        if "plan_code" in example:
            assert example["plan_code"] in plans, f"{command_id}: no plan.create before it"
        if "coupon" in example:
            assert example["coupon"] in coupons, f"{command_id}: no coupon.create before it"
        if "subscription_id" in example:
            assert UUID(example["subscription_id"]) in subscriptions, command_id
        if "invoice_id" in example:
            assert UUID(example["invoice_id"]) in invoices_of(subscriptions), command_id
        if kind == "customer.register":
            given = example.get("customer_id")
            customers.add(UUID(given) if given else derived_id("customer", command_id))
        elif "customer_id" in example:
            assert UUID(example["customer_id"]) in customers, command_id
        if kind == "plan.create":
            plans.add(example["code"])
        if kind == "coupon.create":
            coupons.add(example["code"])
        if kind == "subscription.start":
            subscriptions.add(derived_id("subscription", command_id))


def invoices_of(subscriptions: set[UUID]) -> set[UUID]:
    """The ids the invoices of these subscriptions' first periods and changes get."""
    return {
        invoice
        for sub in subscriptions
        for n in range(-1, 24)
        for invoice in (period_invoice_id(sub, n), change_invoice_id(sub, n))
    }


def test_every_reply_shown_has_the_wire_shape() -> None:
    commands = {example["command_id"] for example in EXAMPLES}
    shown = replies()
    assert {reply["status"] for reply in shown} == {"accepted", "rejected"}
    for reply in shown:
        wire = Reply.model_validate(reply)
        assert wire.model_dump(mode="json") == reply  # no key missing, none extra
        if wire.error is None:
            assert wire.command_id in commands, f"a reply to no example: {reply}"
            assert wire.result is not None
        else:
            assert wire.result is None
            assert wire.error.code in REJECTION_CODES
            assert wire.error.details.get("rule") in {None, *domain_codes()}


def domain_codes() -> set[str]:
    """The code of every domain error (a refusal's ``details.rule``)."""
    codes, pending = set(), [DomainError]
    while pending:
        kind = pending.pop()
        codes.add(kind.code)
        pending.extend(kind.__subclasses__())
    return codes


def test_the_rejection_code_table_lists_each_stable_code_once() -> None:
    section = DOC.split("\n## Rejection codes\n", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert sorted(codes) == sorted(REJECTION_CODES)


def test_every_business_rule_code_is_listed_with_its_bus_code() -> None:
    """Each domain error's code is in the table of `details.rule` values, with the bus
    code it comes with, or named among those no command raises."""
    section = DOC.split("\n## Business rule codes\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| `([a-z_]+)` \|", section, re.M))
    unused = section.split("Defined but not raised by any command:", 1)[1]
    never_raised = set(re.findall(r"`([a-z_]+)`", unused.split("\n\n", 1)[0]))
    assert set(rows) | never_raised == domain_codes()
    assert not set(rows) & never_raised
    assert set(rows.values()) <= REJECTION_CODES
    assert rows["not_found"] == "not_found"


def test_the_session_runs_and_answers_as_the_page_shows(sqlite_url: str) -> None:
    """Every example, sent in order (the payment processor collecting in between), is
    accepted but those the page shows rejected, and each reply shown whole is, to the
    byte, what a worker replies (``send --direct`` gives the worker's reply)."""
    shown: dict[str, list[dict[str, Any]]] = {}
    for reply in replies():
        shown.setdefault(reply["command_id"], []).append(reply)
    clock = SimulatedClock(SESSION_START)
    with (
        bootstrap(sqlite_url) as ledger,
        projector(ledger, sqlite_url) as projections,
        SandboxGateway() as sandbox,
    ):
        processor = PaymentProcessor(
            ledger, Gateways([sandbox]), projections.database, clock, wait=lambda *_: None
        )
        for example in EXAMPLES:
            raw = json.dumps(example).encode()
            reply = answer_directly(raw, ledger, clock, Streams()).model_dump(mode="json")
            expected = shown.get(example["command_id"], [reply | {"status": "accepted"}])
            assert all(reply == one for one in expected), example["command_id"]
            processor.run()
