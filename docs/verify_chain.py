#!/usr/bin/env python3
"""Checks a subledger audit export (``subledger audit export``) with nothing but the file
and the Python standard library: each line's hash from its ``previous_hash`` and stored
fields, positions in increasing order, the summary line's count, and for an export of the
whole ledger, that each line's ``previous_hash`` is the hash of the line before it (the
first: 32 zero bytes) and the last hash is the summary's head.

    python3 docs/verify_chain.py export.jsonl

Prints OK, or the first broken line and why; exits 0 if the file verifies, 1 if not, 2 if
it cannot be read, 3 for a one-customer export whose lines are each consistent: such a
file cannot prove it is what was stored (a line edited and its own hash recomputed still
passes), only that it agrees with itself; check its hashes against a whole export, or
against ``subledger audit verify`` on the database. The recipe is the one docs/audit.md
states.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import uuid
from typing import Any

GENESIS = bytes(32)


def link(previous: bytes, line: dict[str, Any]) -> bytes:
    """SHA-256 over the previous hash and the event's stored fields."""
    topic = line["topic"].encode("utf-8")
    state = base64.b64decode(line["state"], validate=True)
    account = line["account_id"]
    digest = hashlib.sha256(previous)
    digest.update(uuid.UUID(line["originator_id"]).bytes)
    digest.update(int(line["originator_version"]).to_bytes(8, "big", signed=True))
    digest.update(len(topic).to_bytes(4, "big") + topic)
    digest.update(uuid.UUID(account).bytes if account is not None else bytes(16))
    digest.update(len(state).to_bytes(4, "big") + state)
    return digest.digest()


def verify(lines: list[str]) -> str | None:
    """None if the export verifies; otherwise what is wrong, and where."""
    try:
        summary = json.loads(lines[-1])["summary"]
        customer, count, head = summary["customer_id"], summary["events"], summary["head_hash"]
    except (IndexError, ValueError, KeyError, TypeError):
        return "the last line is not the summary: the export is truncated"
    whole = customer is None
    previous, position = GENESIS, 0
    for number, text in enumerate(lines[:-1], start=1):
        try:
            line = json.loads(text)
            stated = bytes.fromhex(line["previous_hash"])
            if whole and stated != previous:
                return f"line {number}: previous_hash is not the hash of the line before it"
            if line["position"] <= position:
                return f"line {number}: position {line['position']} is out of order"
            if link(stated, line).hex() != line["hash"]:
                return f"line {number}: the hash does not match the stored fields"
            if not whole and line["account_id"] != customer:
                return f"line {number}: an event of another account"
        except (ValueError, KeyError, TypeError) as error:
            return f"line {number}: unreadable ({error!r})"
        previous, position = bytes.fromhex(line["hash"]), line["position"]
    if count != len(lines) - 1:
        return f"the summary counts {count} events, the file holds {len(lines) - 1}"
    if whole and previous.hex() != head:
        return "the last line's hash is not the summary's head_hash"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} EXPORT.jsonl", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as export:
            lines = [text for text in export.read().splitlines() if text.strip()]
    except OSError as error:
        print(f"cannot read {argv[1]}: {error}", file=sys.stderr)
        return 2
    problem = verify(lines)
    if problem:
        print(problem)
        return 1
    if json.loads(lines[-1])["summary"]["customer_id"] is not None:
        print(
            f"CONSISTENT, NOT LINKED: {len(lines) - 1} events each match their own hash; "
            "check those hashes against a whole export or `subledger audit verify`"
        )
        return 3
    print(f"OK: {len(lines) - 1} events verified")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
