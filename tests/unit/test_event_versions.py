"""Every stored event class has a version, and its shape is pinned in event_shapes.json:
changing an event's fields fails here until its ``class_version`` goes up, with an
upcaster (``upcast_v1_v2``...) that brings older stored shapes to the new one, and the
pinned shapes are written again (``python -m tests.unit.test_event_versions``)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

import ledger
from ledger.application import Ledger
from ledger.customers import Customer

SHAPES = Path(__file__).with_name("event_shapes.json")
# Fields every event has; their shape is the library's.
ENVELOPE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def event_classes() -> list[type[Aggregate.Event]]:
    """Every event class of the ledger's aggregates, the classes of stored events."""
    for module in pkgutil.iter_modules(ledger.__path__, "ledger."):
        importlib.import_module(module.name)  # every aggregate, whatever else was imported
    found: list[type[Aggregate.Event]] = []
    aggregates = list(Aggregate.__subclasses__())
    while aggregates:
        aggregate = aggregates.pop()
        aggregates.extend(aggregate.__subclasses__())
        if not aggregate.__module__.startswith("ledger."):
            continue
        for name, cls in vars(aggregate).items():
            is_event = isinstance(cls, type) and issubclass(cls, Aggregate.Event)
            if is_event and name not in {"Event", "Created"}:
                found.append(cls)
    return sorted(found, key=get_topic)


def version(cls: type) -> int:
    return int(getattr(cls, "class_version", 1))


def shapes() -> dict[str, Any]:
    return {
        get_topic(cls): {
            "version": version(cls),
            "fields": {f.name: str(f.type) for f in fields(cls) if f.name not in ENVELOPE},
        }
        for cls in event_classes()
    }


def test_each_event_has_the_pinned_shape_for_its_version() -> None:
    pinned = json.loads(SHAPES.read_text())
    current = shapes()
    assert set(current) == set(pinned), "an event class was added or removed: pin it"
    for topic, shape in current.items():
        was = pinned[topic]
        assert shape == was, (
            f"{topic} changed shape: raise its class_version (was {was['version']}), add an "
            "upcaster for the stored older shape, then run python -m tests.unit.test_event_versions"
        )


def test_every_version_after_the_first_has_its_upcaster() -> None:
    for cls in event_classes():
        for old in range(1, version(cls)):
            upcast = getattr(cls, f"upcast_v{old}_v{old + 1}", None)
            assert callable(upcast), f"{get_topic(cls)} v{old + 1} has no upcast_v{old}_v{old + 1}"


def test_events_stored_in_their_first_shape_still_load(ledger: Ledger) -> None:
    """A customer registered and renamed before phones existed: stored as version 1 (no
    ``phone``, no ``class_version``), read back through the current classes."""
    customer_id = uuid4()
    registered = {
        "timestamp": "2024-03-01T09:00:00+00:00",
        "originator_topic": get_topic(Customer),
        "email": "old@example.com",
        "name": "Old Shape",
        "currency": "EUR",
    }
    changed = {
        "timestamp": "2024-04-01T09:00:00+00:00",
        "email": "old@example.org",
        "name": "Old Shape",
    }
    stored = [
        StoredEvent(customer_id, version, get_topic(cls), _old_state(ledger, state))
        for version, cls, state in (
            (1, Customer.Registered, registered),
            (2, Customer.ContactChanged, changed),
        )
    ]
    ledger.recorder.insert_events(stored)

    customer = ledger.customer(customer_id)

    assert (customer.email, customer.name, customer.phone) == ("old@example.org", "Old Shape", None)
    assert customer.currency == "EUR"
    assert customer.version == 2


def _old_state(ledger: Ledger, state: dict[str, Any]) -> bytes:
    """Stored bytes as the mapper of the time wrote them: the JSON of the fields."""
    values = {k: datetime.fromisoformat(v) if k == "timestamp" else v for k, v in state.items()}
    encoded = ledger.mapper.transcoder.encode(values)
    if ledger.mapper.compressor:
        encoded = ledger.mapper.compressor.compress(encoded)
    return encoded


if __name__ == "__main__":
    SHAPES.write_text(json.dumps(shapes(), indent=2, sort_keys=True) + "\n")
