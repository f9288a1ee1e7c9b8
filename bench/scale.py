"""``scale``: does the cost of an event stay the same as the ledger grows to 1,000,000?

One run (not repeated: it takes minutes), in a schema of its own:

1. store: ``bench.population.populate`` stores ``events`` events (1,000,000 by default),
   a cohort of customers per save, as ``rebuild`` and ``audit`` do;
2. rebuild: ``Projector.rebuild()`` replays them into every projection.

Both are sampled as they go (after each cohort saved, after each page projected): the
time elapsed and the process's resident memory (/proc/self/statm). Reported per
segment, 0-10 %, 10-30 % and 30-100 % of ``events`` (0-100k, 100k-300k and 300k-1M at the
default size): microseconds per event over the segment, and the resident memory at its
end. The claims checked: the time per event of a later segment is at most
``TIME_TOLERANCE`` times the first's (an index or a query whose cost grows with the table
would show here), and memory at the end is at most ``MEMORY_TOLERANCE_MB`` above its
value at the end of the first segment (nothing kept per event).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from time import perf_counter

from bench import ignore, scratch_schema
from bench.memory import resident_megabytes
from bench.population import populate
from commands.bootstrap import bootstrap, projector

DEFAULT_EVENTS = 1_000_000
# Segment ends, as fractions of the events: 100k, 300k and 1M of 1M.
BOUNDS = (0.1, 0.3, 1.0)
TIME_TOLERANCE = 1.25
MEMORY_TOLERANCE_MB = 25.0


@dataclass(frozen=True)
class Mark:
    """``events`` done after ``seconds``, with ``megabytes`` resident."""

    events: int
    seconds: float
    megabytes: float


class Trace:
    """Marks taken as work goes, from the moment it is made."""

    def __init__(self) -> None:
        self.started = perf_counter()
        self.marks = [Mark(0, 0.0, resident_megabytes())]

    def mark(self, events: int) -> None:
        self.marks.append(Mark(events, perf_counter() - self.started, resident_megabytes()))


@dataclass(frozen=True)
class Segment:
    """From ``first`` to ``last`` events: microseconds per event, memory at the end;
    ``label`` names the bounds it stands for (``100k-300k``)."""

    label: str
    first: int
    last: int
    microseconds_per_event: float
    megabytes: float


def _short(events: int) -> str:
    if events >= 1_000_000:
        return f"{events / 1_000_000:.3g}M"
    return f"{events / 1000:.3g}k" if events >= 1000 else str(events)


def labels(total: int) -> list[str]:
    """The segments' names: ``0-100k``, ``100k-300k``, ``300k-1M`` of 1M."""
    bounds = [0, *(round(total * fraction) for fraction in BOUNDS)]
    return [f"{_short(a)}-{_short(b)}" for a, b in itertools.pairwise(bounds)]


def segments(marks: Sequence[Mark], total: int) -> list[Segment]:
    """The marks cut at ``BOUNDS`` of ``total`` (the events asked for): each cut is at
    the first mark that reaches it, the last at the last mark (marks come after whole
    cohorts or pages, and a few more events than asked are stored, so a cut can lie a
    little past its bound; the figures are per event actually done). A segment with no
    mark of its own (a small run, pages larger than it) is left out."""
    reached = [
        (next((m for m in marks if m.events >= round(total * fraction)), marks[-1]), label)
        for fraction, label in zip(BOUNDS[:-1], labels(total), strict=False)
    ]
    reached.append((marks[-1], labels(total)[-1]))
    # A mark past two bounds ends the later segment only.
    kept = [cut for cut, later in itertools.pairwise(reached) if later[0].events > cut[0].events]
    cuts = [(marks[0], ""), *kept, reached[-1]]
    return [
        Segment(
            label,
            a.events,
            b.events,
            (b.seconds - a.seconds) / (b.events - a.events) * 1e6,
            b.megabytes,
        )
        for (a, _), (b, label) in itertools.pairwise(cuts)
    ]


@dataclass(frozen=True)
class Phase:
    """One of the two phases, cut into segments, and whether it stays flat."""

    name: str
    segments: list[Segment]

    @property
    def time_growth(self) -> float:
        """The slowest later segment's time per event over the first's."""
        first, *later = (s.microseconds_per_event for s in self.segments)
        return max(later, default=first) / first if first > 0 else 0.0

    @property
    def memory_growth_mb(self) -> float:
        """Resident memory at the end, less at the end of the first segment."""
        return self.segments[-1].megabytes - self.segments[0].megabytes

    @property
    def flat(self) -> bool:
        return self.time_growth <= TIME_TOLERANCE and self.memory_growth_mb <= MEMORY_TOLERANCE_MB

    def line(self) -> str:
        parts = "  ".join(
            f"{s.label}: {s.microseconds_per_event:.1f} µs/event {s.megabytes:.0f} MB"
            for s in self.segments
        )
        verdict = "flat" if self.flat else "GROWS"
        return (
            f"scale-{self.name}: {parts}  time x{self.time_growth:.2f}  "
            f"memory {self.memory_growth_mb:+.0f} MB  {verdict}"
        )

    def json(self) -> str:
        return json.dumps(
            {
                "name": f"scale-{self.name}",
                "segments": [asdict(s) for s in self.segments],
                "time_growth": round(self.time_growth, 3),
                "memory_growth_mb": round(self.memory_growth_mb, 1),
                "flat": self.flat,
            }
        )


@dataclass(frozen=True)
class ScaleResult:
    """``events`` asked for, ``stored`` (a few more), and the two phases."""

    events: int
    stored: int
    phases: tuple[Phase, Phase]

    def line(self) -> str:
        return "\n".join(p.line() for p in self.phases)

    def json(self) -> str:
        return "\n".join(p.json() for p in self.phases)


def measure(
    database_url: str, events: int = DEFAULT_EVENTS, log: Callable[[str], None] = ignore
) -> ScaleResult:
    """Stores ``events`` events, rebuilds every projection from them, and cuts both."""
    with scratch_schema(database_url) as scratch, bootstrap(scratch.database_url) as ledger:
        store = Trace()
        populate(ledger, events, log=log, progress=store.mark)
        stored = store.marks[-1].events
        log(f"scale: {stored:,} events stored in {store.marks[-1].seconds:.0f} s")
        with projector(ledger, scratch.database_url) as projections:
            rebuild = Trace()
            projections.rebuild(progress=lambda position, head: rebuild.mark(position))
        log(f"scale: rebuilt in {rebuild.marks[-1].seconds:.0f} s")
    return ScaleResult(
        events,
        stored,
        (
            Phase("store", segments(store.marks, events)),
            Phase("rebuild", segments(rebuild.marks, events)),
        ),
    )
