"""What a benchmark measures and how its figure is reported.

A benchmark run is repeated; each repetition yields a ``Sample``: how many operations
our code did in how many seconds, and how many the raw psycopg equivalent did in how many.
The reported ``Result`` holds the median rate of each side over the repetitions, and
``ratio``, the median of the repetitions' ratios ours / raw (1.0 would mean our stack costs
nothing over plain SQL; the machines are noisy, so only the ratio is comparable between
runs). Two formats:

    <name>: <n>/s  raw: <n>/s  ratio: <r>
    {"name": ..., "value": ..., "raw": ..., "ratio": ..., "unit": ...}

A sample may carry further figures (latencies, say), each reported as its median after
the ratio (``  <figure>: <x>``, or a key of its own in JSON), and variants: the same
figures measured in the same repetition under other conditions (two workers, say), each
reported on a line of its own named ``<name>-<variant>``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def ratio(ours: float, raw: float) -> float:
    return ours / raw if raw > 0 else 0.0


@dataclass(frozen=True)
class Rate:
    """``operations`` done in ``seconds`` of wall-clock time."""

    operations: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.operations + other.operations, self.seconds + other.seconds)


def figure(value: float) -> str:
    """A further figure as printed: a ratio with two decimals, a latency with one."""
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


@dataclass(frozen=True)
class Sample:
    """One repetition: our figure and the raw psycopg figure, measured in the same run."""

    ours: Rate
    raw: Rate
    figures: Mapping[str, float] = field(default_factory=dict)
    variants: Mapping[str, Sample] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return ratio(self.ours.per_second, self.raw.per_second)


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    raw: float
    ratio: float
    unit: str
    figures: Mapping[str, float] = field(default_factory=dict)
    variants: tuple[Result, ...] = ()

    @classmethod
    def from_samples(cls, name: str, unit: str, samples: Sequence[Sample]) -> Result:
        """The medians of both sides over ``samples``, and the median of their ratios.

        Each repetition measures both sides back to back, so its ratio is what the noise
        of the machine disturbs least; the median of medians could pair a fast run of one
        side with a slow run of the other.
        """
        if not samples:
            raise ValueError(f"benchmark {name!r} produced no samples")
        ours = statistics.median(s.ours.per_second for s in samples)
        raw = statistics.median(s.raw.per_second for s in samples)
        figures = {
            key: statistics.median(s.figures[key] for s in samples) for key in samples[0].figures
        }
        variants = tuple(
            cls.from_samples(f"{name}-{key}", unit, [s.variants[key] for s in samples])
            for key in samples[0].variants
        )
        median_ratio = statistics.median(s.ratio for s in samples)
        return cls(name, ours, raw, median_ratio, unit, figures, variants)

    def line(self) -> str:
        """One line for this result, then one per variant."""
        figures = "".join(f"  {key}: {figure(value)}" for key, value in self.figures.items())
        own = f"{self.name}: {self.value:.0f}/s  raw: {self.raw:.0f}/s  ratio: {self.ratio:.2f}"
        return "\n".join([own + figures, *(variant.line() for variant in self.variants)])

    def json(self) -> str:
        """One JSON object for this result, then one line for each variant's."""
        own = json.dumps(
            {
                "name": self.name,
                "value": round(self.value, 1),
                "raw": round(self.raw, 1),
                "ratio": round(self.ratio, 3),
                "unit": self.unit,
            }
            | {key: round(value, 3) for key, value in self.figures.items()}
        )
        return "\n".join([own, *(variant.json() for variant in self.variants)])
