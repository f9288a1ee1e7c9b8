"""Bad input at volume: thousands of generated entries that are no command (random bytes,
JSON that is no object, cut short, nested too deep, too large), or a command of a real
schema gone wrong (random JSON objects, a wrong-typed value in one field or in every
field, an oversized string, an unknown type, a missing field), or a well-formed command
that breaks a business rule (an unknown customer or plan, a plan registered twice, a
card number for a token, resuming what is not paused...), mixed with valid commands,
through one bus worker on PostgreSQL.

Every bad entry gets a rejection record with a code (and, when it names a command id and
a reply stream, a rejected reply with that code); every valid command is accepted; the
worker answers a command sent after them all; and the ledger holds exactly what the
valid commands alone store on a clean ledger: the only trace of a bad command is the
record of its refusal, for the business rules that are recorded (so the same id gets the
same refusal again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from commands import schemas as s
from commands.accounts import derived_id
from commands.bootstrap import bootstrap
from commands.dispatch import handle_batch
from commands.streams import Streams
from commands.wire import MAX_BYTES
from ledger.application import Ledger
from ledger.clock import SimulatedClock
from tests.integration.bus_driver import Service, worker_thread

BAD = 10_000  # times --scale
GOOD_UNIT_EVERY = 10  # one valid customer's four commands after every ten bad entries
REPLY_TIMEOUT = 600.0
VICTIM = derived_id("customer", "victim")
VICTIMS_SUBSCRIPTION = derived_id("subscription", "victim-sub")
NOBODY = UUID(int=404)
SCHEMA_CODES = frozenset({"validation_failed", "unknown_type"})
NOT_A_COMMAND = frozenset({"invalid_json", *SCHEMA_CODES})
# Valid commands of real schemas, on the prelude's plan, customer and subscription.
TEMPLATES: dict[str, dict[str, Any]] = {
    "plan.create": {"code": "gold", "name": "Gold", "features": ["API"]},
    "plan.add_price": {"plan_code": "basic", "currency": "EUR", "amount": 1500, "trial_days": 7},
    "customer.register": {"email": "e@example.com", "name": "E", "currency": "EUR"},
    "customer.add_payment_method": {
        "customer_id": str(VICTIM),
        "payment_method_id": "pm_2",
        "token": "tok_2",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2030,
    },
    "subscription.start": {"customer_id": str(VICTIM), "plan_code": "basic", "trial_days": 3},
    "subscription.cancel": {"subscription_id": str(VICTIMS_SUBSCRIPTION), "when": "now"},
    "subscription.pause": {"subscription_id": str(VICTIMS_SUBSCRIPTION)},
    "coupon.create": {
        "code": "TEN",
        "percent_off": "10",
        "duration": "repeating",
        "duration_periods": 3,
    },
    "customer.set_tax_rate": {"customer_id": str(VICTIM), "percent": "19.5"},
    "invoice.refund": {"invoice_id": str(NOBODY), "amount": 100, "reason": "goodwill"},
    "invoice.settle_payment": {
        "invoice_id": str(NOBODY),
        "attempt": 1,
        "outcome": "succeeded",
        "reference": "ch_1",
    },
    "webhook.register": {"url": "https://crm.example/hooks", "event_types": ["invoice.*"]},
    "quote.preview": {"plan_code": "basic", "currency": "EUR"},
}
SUBSCRIPTION = {"subscription_id": str(VICTIMS_SUBSCRIPTION)}
START = {"type": "subscription.start", "customer_id": str(VICTIM), "plan_code": "basic"}
# Well-formed commands that break a rule, with the code of their refusal; the generated
# ones (below) add an unknown id and a date in the past.
RULE_BREAKERS: list[tuple[dict[str, Any], str]] = [
    (START | {"plan_code": "nosuch"}, "not_found"),
    ({"type": "subscription.apply_coupon", **SUBSCRIPTION, "coupon": "NOPE"}, "not_found"),
    ({"type": "plan.create", "code": "basic", "name": "Again"}, "conflict"),
    (
        TEMPLATES["customer.register"] | {"type": "customer.register", "customer_id": str(VICTIM)},
        "conflict",
    ),
    ({"type": "subscription.resume", **SUBSCRIPTION}, "rule_violation"),
    ({"type": "subscription.revoke_cancel", **SUBSCRIPTION}, "rule_violation"),
    ({"type": "subscription.change_plan", **SUBSCRIPTION, "plan_code": "basic"}, "rule_violation"),
    (
        TEMPLATES["customer.add_payment_method"]
        | {"type": "customer.add_payment_method", "token": "4242424242424242"},
        "rule_violation",
    ),
    (START | {"currency": "JPY"}, "rule_violation"),
    (START | {"interval": "fortnight"}, "rule_violation"),
]
# Before the clock of the test (31 Jan 2025).
PAST = datetime(2025, 1, 1, tzinfo=UTC)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@dataclass(frozen=True)
class Bad:
    """A bad entry: its payload, and the codes its rejection may carry. A payload given
    as an object is sent with a command id and our reply stream, so it gets a reply."""

    payload: bytes | dict[str, Any]
    codes: frozenset[str]


def addressed(payload: dict[str, Any], command_id: str, reply_to: str) -> dict[str, Any]:
    return payload | {"command_id": command_id, "reply_to": reply_to}


def is_command(payload: dict[str, Any]) -> bool:
    """Whether the bus would read ``payload``, once addressed, as a command."""
    try:
        s.parse_command(json.dumps(addressed(payload, "x", "replies")))
    except ValidationError:
        return False
    return True


def template(kind: str) -> dict[str, Any]:
    """A valid command of type ``kind``, to break (its id is replaced when sent)."""
    return {"type": kind, "command_id": "t", **TEMPLATES[kind]}


def schema_breakers() -> st.SearchStrategy[Bad]:
    """Commands of real schemas gone wrong, each refused by validation."""
    kinds = st.sampled_from(sorted(TEMPLATES))

    @st.composite
    def one_field(draw: st.DrawFn) -> dict[str, Any]:
        kind = draw(kinds)
        fields = sorted(set(s.COMMAND_TYPES[kind].model_fields) - {"command_id", "reply_to"})
        return template(kind) | {draw(st.sampled_from(fields)): draw(JSON)}

    @st.composite
    def every_field(draw: st.DrawFn) -> dict[str, Any]:
        kind = draw(st.sampled_from(sorted(s.COMMAND_TYPES)))
        fields = sorted(
            set(s.COMMAND_TYPES[kind].model_fields) - {"type", "command_id", "reply_to"}
        )
        return {"type": kind} | {name: draw(JSON) for name in fields}

    @st.composite
    def oversized(draw: st.DrawFn) -> dict[str, Any]:
        command = template(draw(kinds))
        texts = sorted(k for k, v in command.items() if isinstance(v, str) and k != "type")
        texts.remove("command_id")
        size = draw(st.integers(300, MAX_BYTES - 2_000))
        return command | {draw(st.sampled_from(texts)): "x" * size}

    @st.composite
    def missing(draw: st.DrawFn) -> dict[str, Any]:
        command = template(draw(kinds))
        del command[draw(st.sampled_from(sorted(set(command) - {"type", "command_id"})))]
        return command

    unknown = st.text(max_size=30).map(lambda kind: {"type": kind})
    payloads = (
        one_field()
        | every_field()
        | oversized()
        | missing()
        | unknown
        | st.dictionaries(st.text(max_size=8), JSON, max_size=4)
    )
    return payloads.filter(lambda p: not is_command(p)).map(lambda p: Bad(p, SCHEMA_CODES))


@st.composite
def rule_breakers(draw: st.DrawFn) -> Bad:
    """Commands the schemas accept and a business rule refuses."""
    unknown = str(draw(st.uuids()))
    past = draw(st.datetimes(max_value=PAST.replace(tzinfo=None), timezones=st.just(UTC)))
    payload, code = draw(
        st.sampled_from(
            [
                *RULE_BREAKERS,
                (START | {"customer_id": unknown}, "not_found"),
                ({"type": "invoice.refund", "invoice_id": unknown, "amount": 100}, "not_found"),
                (
                    {"type": "subscription.cancel", **SUBSCRIPTION, "when": past.isoformat()},
                    "rule_violation",
                ),
            ]
        )
    )
    return Bad(payload, frozenset({code}))


def bad_entries(streams: Streams) -> st.SearchStrategy[Bad]:
    """Roughly a third each: entries that are no command, commands of a real schema gone wrong,
    and commands that break a business rule."""
    kinds = [not_commands(streams), schema_breakers(), rule_breakers()]
    return st.sampled_from(kinds).flatmap(lambda kind: kind)


def _no_reply_to(raw: bytes) -> bool:
    """Random bytes that happen to be an object naming a reply stream could make the
    worker write to a key of the shared Redis: left out."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return True
    return not (isinstance(value, dict) and "reply_to" in value)


def not_commands(streams: Streams) -> st.SearchStrategy[Bad]:
    """Entries that name no command id or reply stream the bus can use: no reply, only a
    rejection record."""
    kinds = st.sampled_from(sorted(TEMPLATES))
    garbage = st.binary(max_size=200).filter(_no_reply_to).map(lambda raw: Bad(raw, NOT_A_COMMAND))
    not_objects = JSON.filter(lambda v: not isinstance(v, dict)).map(
        lambda value: Bad(json.dumps(value).encode(), frozenset({"invalid_json"}))
    )

    @st.composite
    def cut_short(draw: st.DrawFn) -> Bad:
        raw = json.dumps(template(draw(kinds))).encode()
        return Bad(raw[: draw(st.integers(1, len(raw) - 1))], frozenset({"invalid_json"}))

    deep = st.integers(100, 20_000).map(
        lambda n: Bad(b"[" * n + b"]" * n, frozenset({"invalid_json"}))
    )
    too_large = st.integers(MAX_BYTES, 4 * MAX_BYTES).map(
        lambda size: Bad(
            json.dumps(template("plan.create") | {"description": "x" * size}).encode(),
            frozenset({"too_large"}),
        )
    )
    ours = kinds.map(
        lambda kind: Bad(
            json.dumps(template(kind) | {"reply_to": streams.commands}).encode(),
            frozenset({"validation_failed"}),
        )
    )
    return garbage | not_objects | cut_short() | deep | too_large | ours


def examples(strategy: st.SearchStrategy[Bad], count: int) -> list[Bad]:
    """``count`` examples of ``strategy``, the same ones every run."""
    found: list[Bad] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def keep(example: Bad) -> None:
        found.append(example)

    keep()
    return found


def prelude() -> list[s.Command]:
    """The plan, and the customer and subscription the rule breakers aim at (which no
    valid command touches, so that each rule breaks the same way every time)."""
    return [
        s.RegisterPlan(command_id="plan", code="basic", name="Basic"),
        s.AddPrice(command_id="price", plan_code="basic", currency="EUR", amount=1000),
        s.RegisterCustomer(command_id="victim", email="v@example.com", name="V", currency="EUR"),
        s.AddPaymentMethod(
            command_id="victim-card",
            customer_id=VICTIM,
            payment_method_id="pm_1",
            token="tok_victim",
            last4="4242",
            exp_month=12,
            exp_year=2030,
        ),
        s.StartSubscription(command_id="victim-sub", customer_id=VICTIM, plan_code="basic"),
    ]


def good_unit(n: int) -> list[dict[str, Any]]:
    """A customer registers, adds a card, subscribes and asks for a quote."""
    customer_id = str(derived_id("customer", f"good-{n}"))
    return [
        {
            "type": "customer.register",
            "command_id": f"good-{n}",
            "email": f"g{n}@example.com",
            "name": f"Good {n}",
            "currency": "EUR",
        },
        template("customer.add_payment_method")
        | {"command_id": f"good-{n}-card", "customer_id": customer_id},
        {
            "type": "subscription.start",
            "command_id": f"good-{n}-sub",
            "customer_id": customer_id,
            "plan_code": "basic",
        },
        template("quote.preview") | {"command_id": f"good-{n}-quote", "customer_id": customer_id},
    ]


@dataclass(repr=False)
class Sent:
    """What went on the stream: the bad entries by entry id, the good commands, and the
    command ids that get a reply, with the codes their rejection may carry (empty: it
    is accepted)."""

    bad: dict[bytes, Bad] = field(default_factory=dict)
    replied: dict[str, frozenset[str]] = field(default_factory=dict)
    good: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:  # a failing test shows it: thousands of payloads
        return f"Sent({len(self.bad)} bad, {len(self.good)} good)"


def send_mixed(service: Service, bad: list[Bad]) -> Sent:
    """Adds the bad entries, a good unit after every ``GOOD_UNIT_EVERY``, in one pipeline."""
    sent = Sent()
    entries: list[tuple[bytes, Bad | None]] = []
    for n, entry in enumerate(bad):
        payload = entry.payload
        if isinstance(payload, dict):
            command_id = f"bad-{n}"
            payload = json.dumps(addressed(payload, command_id, service.reply_to)).encode()
            sent.replied[command_id] = entry.codes
        entries.append((payload, entry))
        if n % GOOD_UNIT_EVERY == GOOD_UNIT_EVERY - 1:
            for command in good_unit(n // GOOD_UNIT_EVERY):
                sent.good.append(command)
                sent.replied[command["command_id"]] = frozenset()
                replied = addressed(command, command["command_id"], service.reply_to)
                entries.append((json.dumps(replied).encode(), None))
    with service.client.pipeline(transaction=False) as pipe:
        for raw, _ in entries:
            pipe.xadd(service.streams.commands, {b"data": raw})
        ids = cast(list[bytes], pipe.execute())
    sent.bad = {i: entry for i, (_, entry) in zip(ids, entries, strict=True) if entry is not None}
    return sent


def wait_for(done: Callable[[], bool], what: str, timeout: float = REPLY_TIMEOUT) -> None:
    """Polls ``done`` until it holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.1)


def apply(commands: Sequence[s.Command], ledger: Ledger, clock: SimulatedClock) -> None:
    """Applies ``commands`` in one transaction, as a worker's batch; each is accepted."""
    answers = handle_batch(commands, ledger, clock)
    assert not [answer for answer in answers if isinstance(answer, Exception)]


@pytest.mark.postgres
def test_bad_entries_are_each_rejected_with_a_code_and_store_nothing_but_their_refusal(
    ledger: Ledger,
    clock: SimulatedClock,
    redis_url: str,
    streams: Streams,
    tmp_path: Path,
    scale: int,
) -> None:
    count = BAD * scale
    bad = examples(bad_entries(streams), count)
    assert len(bad) == count
    service = Service(redis_url, streams)
    client = service.client
    apply(prelude(), ledger, clock)
    with worker_thread(ledger, clock, redis_url, streams):
        sent = send_mixed(service, bad)
        service.wait_for_replies(len(sent.replied), REPLY_TIMEOUT)
        wait_for(lambda: client.xlen(streams.commands) == 0, "every entry answered")
        # The worker still answers, after all that.
        service.send(template("quote.preview") | {"command_id": "after"})
        replies = service.wait_for_replies(len(sent.replied) + 1)
    assert replies[-1]["command_id"] == "after"
    assert replies[-1]["status"] == "accepted"
    assert_each_rejected_with_its_code(service, sent, replies[:-1])
    assert_nothing_stored_but_refusals(ledger, clock, tmp_path, sent)
    assert client.xlen(streams.dead) == client.hlen(streams.failures) == 0


def assert_each_rejected_with_its_code(
    service: Service, sent: Sent, replies: list[dict[str, Any]]
) -> None:
    """Each bad entry, and only those, has a rejection record with one of its codes; each
    command id has one reply: accepted for the good ones, else rejected with its code."""
    records = [json.loads(f[b"data"]) for f in service.entries(service.streams.rejections)]
    codes = {r["entry_id"].encode(): r["error"]["code"] for r in records}
    assert len(codes) == len(records)
    assert codes.keys() == sent.bad.keys()
    wrong = [(i, codes[i], e.payload) for i, e in sent.bad.items() if codes[i] not in e.codes]
    assert wrong == []
    # Every kind of refusal was met.
    assert set(codes.values()) == {
        "invalid_json",
        "too_large",
        "validation_failed",
        "unknown_type",
        "not_found",
        "conflict",
        "rule_violation",
    }
    assert len(replies) == len({r["command_id"] for r in replies}) == len(sent.replied)
    answered = {r["command_id"]: r for r in replies}
    for command_id, expected in sent.replied.items():
        reply = answered[command_id]
        if expected:
            assert reply["status"] == "rejected", reply
            assert reply["error"]["code"] in expected, reply
        else:
            assert (reply["status"], reply["error"]) == ("accepted", None), reply


def assert_nothing_stored_but_refusals(
    ledger: Ledger, clock: SimulatedClock, tmp_path: Path, sent: Sent
) -> None:
    """The ledger holds what the valid commands alone store on a clean ledger, plus one
    refusal record per recorded refusal; no bad command id has a record of success."""
    with bootstrap(f"sqlite:///{tmp_path / 'clean.db'}") as clean:
        apply(prelude(), clean, clock)
        good = [s.parse_command(json.dumps(command)) for command in sent.good]
        for start in range(0, len(good), 200):
            apply(good[start : start + 200], clean, clock)
        expected = clean.event_counts_by_type()
    stored = ledger.event_counts_by_type()
    refusals = stored.pop("CommandRecord.Rejected", 0)
    assert stored == expected
    recorded = [
        command_id
        for command_id, codes in sent.replied.items()
        if codes and codes <= {"conflict", "rule_violation"}
    ]
    assert refusals == len(recorded) > 0
    for command_id in sent.replied.keys() - {c["command_id"] for c in sent.good}:
        record = ledger.command_record(command_id)
        assert record is None or record.refusal is not None, command_id
