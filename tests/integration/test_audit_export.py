"""An auditor exports the ledger (or one account) and checks the file with the standalone
verifier of docs/, which knows nothing of subledger: it passes on the export as written,
and names the first line that an edit, a deletion or a swap broke."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from commands import schemas as s
from commands.audit_export import export
from commands.audit_replay import replay
from commands.cli import app
from ledger.chain import GENESIS
from tests.integration.conftest import Shop
from tests.integration.test_audit_replay import tell

VERIFIER = Path(__file__).parents[2] / "docs" / "verify_chain.py"


def not_linked(events: int) -> str:
    """What the verifier says of a consistent one-customer export (it cannot say more)."""
    return (
        f"CONSISTENT, NOT LINKED: {events} events each match their own hash; "
        "check those hashes against a whole export or `subledger audit verify`"
    )


def verify(path: Path) -> tuple[int, str]:
    """The standalone verifier's exit code and what it printed."""
    done = subprocess.run(
        [sys.executable, str(VERIFIER), str(path)], capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout.strip()


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_whole_export_verifies_with_nothing_but_the_file(shop: Shop, tmp_path: Path) -> None:
    tell(shop)
    path = tmp_path / "ledger.jsonl"
    with path.open("w") as out:
        summary = export(shop.ledger, out)
    *events, last = lines_of(path)
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert events[0]["previous_hash"] == GENESIS.hex()
    assert all(b["previous_hash"] == a["hash"] for a, b in pairwise(events))
    assert last == {
        "summary": {
            "customer_id": None,
            "events": len(events),
            "head_position": events[-1]["position"],
            "head_hash": events[-1]["hash"],
        }
    }
    assert summary.events == len(events)
    assert verify(path) == (0, f"OK: {len(events)} events verified")


def test_each_line_carries_the_stored_bytes_and_a_readable_event(
    shop: Shop, tmp_path: Path
) -> None:
    story = tell(shop)
    out = io.StringIO()
    export(shop.ledger, out, story.ann)
    lines = [json.loads(line) for line in out.getvalue().splitlines()[:-1]]
    registered, card = lines[0], lines[1]
    assert registered["event"]["type"] == "Customer.Registered"
    assert registered["event"]["timestamp"] == "2025-01-31T09:00:00+00:00"
    assert registered["event"]["fields"]["currency"] == "EUR"
    assert (registered["originator_id"], registered["originator_version"]) == (str(story.ann), 1)
    assert registered["topic"] == "ledger.customers:Customer.Registered"
    assert card["event"]["fields"]["method"]["last4"] == "4242"
    assert "token" not in card["event"]["fields"]["method"]  # a credential, never shown
    issued = next(line for line in lines if line["event"]["type"] == "Invoice.Issued")
    assert issued["event"]["fields"]["lines"][0]["amount"]["amount"] == 1000
    # ``state`` is what was hashed: the stored bytes, which the mapper decodes.
    stored = base64.b64decode(registered["state"])
    assert stored == shop.ledger.recorder.select_events(story.ann, limit=1)[0].state


def test_a_one_customer_export_holds_that_account_alone_and_verifies(
    shop: Shop, tmp_path: Path
) -> None:
    story = tell(shop)
    path = tmp_path / "ann.jsonl"
    with path.open("w") as out:
        export(shop.ledger, out, story.ann)
    *events, last = lines_of(path)
    assert {e["account_id"] for e in events} == {str(story.ann)}
    assert [e["position"] for e in events] == [
        e.position for e in replay(shop.ledger, story.ann).events
    ]
    assert last["summary"]["customer_id"] == str(story.ann)
    assert verify(path) == (3, not_linked(len(events)))


def test_the_verifier_names_the_first_line_an_edit_broke(shop: Shop, tmp_path: Path) -> None:
    tell(shop)
    path = tmp_path / "ledger.jsonl"
    with path.open("w") as out:
        export(shop.ledger, out)
    lines = lines_of(path)
    # A refund of 3 EUR becomes one of 1 EUR, in the stored bytes.
    number = next(i for i, line in enumerate(lines, 1) if "RefundRequested" in line["topic"])
    edited = [dict(line) for line in lines]
    state = base64.b64decode(edited[number - 1]["state"])
    assert b"300" in state
    edited[number - 1]["state"] = base64.b64encode(state.replace(b"300", b"100")).decode()
    assert verify(write(tmp_path / "edited.jsonl", edited)) == (
        1,
        f"line {number}: the hash does not match the stored fields",
    )
    # Recomputing that line's hash does not help: the next line no longer follows it.
    edited[number - 1]["hash"] = "00" * 32
    assert verify(write(tmp_path / "rehashed.jsonl", edited))[1].startswith(f"line {number}")


def test_the_verifier_finds_a_deleted_line_a_swap_and_a_truncation(
    shop: Shop, tmp_path: Path
) -> None:
    tell(shop)
    path = tmp_path / "ledger.jsonl"
    with path.open("w") as out:
        export(shop.ledger, out)
    lines = lines_of(path)
    deleted = lines[:10] + lines[11:]
    assert verify(write(tmp_path / "deleted.jsonl", deleted)) == (
        1,
        "line 11: previous_hash is not the hash of the line before it",
    )
    swapped = [*lines[:10], lines[11], lines[10], *lines[12:]]
    assert verify(write(tmp_path / "swapped.jsonl", swapped))[0] == 1
    assert verify(write(tmp_path / "truncated.jsonl", lines[:-2])) == (
        1,
        "the last line is not the summary: the export is truncated",
    )


def test_an_erased_customers_export_reads_erased_and_still_verifies(
    shop: Shop, tmp_path: Path
) -> None:
    story = tell(shop)
    shop.send(s.EraseCustomer, customer_id=story.ann)
    path = tmp_path / "ann.jsonl"
    with path.open("w") as out:
        export(shop.ledger, out, story.ann)
    registered = lines_of(path)[0]
    assert registered["event"]["fields"]["email"] == "erased"
    assert b"ann@example.com" not in base64.b64decode(registered["state"])
    assert verify(path) == (3, not_linked(20))


def test_a_page_boundary_changes_nothing(shop: Shop) -> None:
    tell(shop)
    whole, paged = io.StringIO(), io.StringIO()
    export(shop.ledger, whole)
    export(shop.ledger, paged, page=7)
    assert paged.getvalue() == whole.getvalue()


def test_the_cli_writes_an_export(shop: Shop, database_url: str, tmp_path: Path) -> None:
    story = tell(shop)
    path = tmp_path / "ann.jsonl"
    result = CliRunner().invoke(
        app, ["audit", "export", str(story.ann), "--out", str(path), "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    assert verify(path) == (3, not_linked(19))
    answer = json.loads(result.stdout)
    assert answer["out"] == str(path)
    assert (answer["customer_id"], answer["events"]) == (str(story.ann), 19)
