"""Proof that the stored events were not altered: ``verify`` walks the audit chain
(``ledger.chain``) from the first event to the newest, a page at a time, and names the
first broken link; ``anchor`` takes the head of the chain, to keep somewhere the database's
administrators cannot write, so that a later verify also catches the newest events deleted
(or the whole chain recomputed) after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from ledger.application import Ledger
from ledger.chain import FIRST_POSITION, GENESIS, ChainRecorder, ChainRow
from ledger.postgres_recorder import LeanPostgresApplicationRecorder
from ledger.sqlite_recorder import ChainedSQLiteApplicationRecorder

PAGE = 10_000
# (events checked, events in the chain)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Anchor:
    """The head of the chain at some moment: its position, its hash (hex), and how many
    events the chain held up to it."""

    position: int
    head: str
    count: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Anchor:
        """An anchor written by ``to_json`` (ValueError if it is not one)."""
        try:
            data = json.loads(text)
            anchor = cls(int(data["position"]), str(data["head"]), int(data["count"]))
            bytes.fromhex(anchor.head)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not an anchor: {error}") from None
        return anchor


class Break(StrEnum):
    """How a link is broken."""

    # The row's hash is not the link from the row before it over its fields.
    HASH = "hash_does_not_follow"
    # A position not above the one before it (two rows on one position).
    ORDER = "position_not_increasing"
    # The anchor's position is gone: the newest events were deleted.
    ANCHOR_MISSING = "anchor_missing"
    # The row at the anchor's position has another hash: the chain was recomputed.
    ANCHOR_MISMATCH = "anchor_mismatch"
    # The table counts rows that a walk by position does not meet.
    UNWALKED = "rows_outside_chain"


@dataclass(frozen=True)
class BrokenLink:
    position: int
    kind: Break
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What a verify found: how many events it checked, the head it reached (an anchor
    for the next verify, when intact), and the first broken link if any."""

    checked: int
    head: Anchor | None
    broken: BrokenLink | None
    anchor: Anchor | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["intact"] = self.intact
        return data


class NoChain(Exception):
    """The ledger's store keeps no audit chain (not one of the ledger's recorders)."""


def chain_recorder(ledger: Ledger) -> ChainRecorder:
    recorder = ledger.recorder
    if not isinstance(recorder, LeanPostgresApplicationRecorder | ChainedSQLiteApplicationRecorder):
        raise NoChain(f"{type(recorder).__name__} keeps no audit chain")
    return recorder


def anchor(recorder: ChainRecorder) -> Anchor:
    """The head of the chain now (of an empty chain: position 0, the genesis hash)."""
    head = recorder.select_head()
    if head is None:
        return Anchor(0, GENESIS.hex(), 0)
    row, count = head
    assert row.chain_hash is not None, "the newest row has no hash: run verify"
    return Anchor(row.position, row.chain_hash.hex(), count)


def verify(
    recorder: ChainRecorder,
    anchor: Anchor | None = None,
    progress: Progress | None = None,
    page: int = PAGE,
) -> VerifyReport:
    """Walks the chain in order and stops at the first broken link; checks the row at
    ``anchor``'s position, if given, carries its hash."""
    head = recorder.select_head()
    total = head[1] if head else 0
    head_position = head[0].position if head else 0
    previous, position, checked, up_to_head = GENESIS, 0, 0, 0
    # From the lowest position a row can have: a row put below the first is walked too.
    rows = recorder.select_chain(FIRST_POSITION, page)
    while rows:
        for index, row in enumerate(rows):
            after = rows[index + 1 : index + 2]
            broken = _broken_link(recorder, row, after, previous, position, anchor)
            if broken is not None:
                return VerifyReport(checked, _reached(previous, position, checked), broken, anchor)
            previous, position, checked = row.chain_hash or GENESIS, row.position, checked + 1
            up_to_head += row.position <= head_position
        if progress is not None:
            progress(checked, max(total, checked))
        rows = recorder.select_chain(position + 1, page)
    reached = _reached(previous, position, checked)
    if anchor is not None and position < anchor.position:
        return VerifyReport(checked, reached, _anchor_missing(anchor, position), anchor)
    if up_to_head != total:
        # Rows the table counts but no walk by position meets (stored out of order).
        unseen = BrokenLink(
            head_position,
            Break.UNWALKED,
            f"the table holds {total} rows up to position {head_position}, the walk met "
            f"{up_to_head}: rows are stored where no walk in order reaches them",
        )
        return VerifyReport(checked, reached, unseen, anchor)
    return VerifyReport(checked, reached, None, anchor)


def _broken_link(
    recorder: ChainRecorder,
    row: ChainRow,
    after: list[ChainRow],
    previous: bytes,
    position: int,
    anchor: Anchor | None,
) -> BrokenLink | None:
    """What is wrong with ``row``, coming after ``position`` whose hash is ``previous``
    (``after``: the row after it, if at hand); None if nothing."""
    if row.position <= position:
        return BrokenLink(
            row.position,
            Break.ORDER,
            f"position {row.position} comes after position {position}: two rows share a "
            "position, or the table's order was tampered with",
        )
    if not row.follows(previous):
        return _hash_broken(row, position, after or recorder.select_chain(row.position + 1, 1))
    if anchor is not None and position < anchor.position < row.position:
        return _anchor_missing(anchor, position)
    if anchor is not None and row.position == anchor.position:
        assert row.chain_hash is not None  # it follows from the row before
        if row.chain_hash.hex() != anchor.head:
            return BrokenLink(
                row.position,
                Break.ANCHOR_MISMATCH,
                f"the anchor says position {anchor.position} has hash {anchor.head}, the "
                f"chain has {row.chain_hash.hex()}: the events up to it were changed and the "
                "chain recomputed after the anchor was taken",
            )
    return None


def _hash_broken(row: ChainRow, position: int, following: list[ChainRow]) -> BrokenLink:
    """The hash failure at ``row``, with what the rows around it tell of its cause."""
    where = f"after position {position}" if position else "as the first event"
    message = f"the hash stored at position {row.position} is not the link {where}"
    if row.chain_hash is None:
        message += " (it has no hash)"
    if row.position > position + 1:
        absent = (
            f"position {position + 1} is"
            if row.position == position + 2
            else f"positions {position + 1}..{row.position - 1} are"
        )
        message += f"; {absent} absent (a deleted row, or ids a failed insert skipped)"
    if not following:
        message += ": it is the newest row; it was changed or added by hand"
    elif row.chain_hash is not None and following[0].follows(row.chain_hash):
        message += (
            ": the next row links to this row's hash, so either this row's fields were "
            "changed, or what comes before it was (a row deleted, inserted or recomputed)"
        )
    else:
        message += (
            ": the next row does not link to it either, so this row was inserted, moved "
            "or given another hash"
        )
    return BrokenLink(row.position, Break.HASH, message)


def _anchor_missing(anchor: Anchor, position: int) -> BrokenLink:
    ends = f"reaches position {position}" if position else "is empty"
    return BrokenLink(
        anchor.position,
        Break.ANCHOR_MISSING,
        f"the anchor's position {anchor.position} is not in the chain, which {ends} there: "
        "events up to the anchor were deleted (the newest ones, if the chain ends there)",
    )


def _reached(previous: bytes, position: int, checked: int) -> Anchor | None:
    return Anchor(position, previous.hex(), checked) if checked else None
