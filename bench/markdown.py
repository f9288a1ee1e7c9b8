"""bench/results.md: the figures of one run, their ratios to raw, the targets, the machine.

``make bench`` writes it (``python -m bench all --markdown bench/results.md``); any run
can (``python -m bench billing --markdown /tmp/billing.md``). A ratio is ours / raw,
both measured in the same repetition (see ``bench.report``); ``TARGETS`` are the ratios
issue 9 asks for, and the table says which are met.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bench.machine import Machine
from bench.report import Result, figure
from bench.scale import MEMORY_TOLERANCE_MB, TIME_TOLERANCE, ScaleResult, Segment, labels

# The lowest acceptable ratio to raw of each benchmark that has one.
TARGETS = {"commands": 0.6, "bus": 2.0, "rebuild": 0.5, "billing": 0.35, "audit": 0.6}


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _rows(result: Result) -> list[list[str]]:
    """The result's row, then one per variant."""
    target = TARGETS.get(result.name)
    met = "" if target is None else ("yes" if result.ratio >= target else "**no**")
    figures = ", ".join(f"{key} {figure(value)}" for key, value in result.figures.items())
    own = [
        f"`{result.name}`",
        f"{result.value:,.0f}",
        f"{result.raw:,.0f}",
        result.unit if result.unit.endswith("/s") else f"{result.unit}/s",
        f"{result.ratio:.2f}",
        "" if target is None else f">= {target}",
        met,
        figures,
    ]
    return [own, *(row for variant in result.variants for row in _rows(variant))]


def _cell(segments: Sequence[Segment], label: str) -> str:
    segment = next((s for s in segments if s.label == label), None)
    if segment is None:
        return "(within the next)"
    return f"{segment.microseconds_per_event:.1f} µs/event, {segment.megabytes:.0f} MB"


def _scale(scale: ScaleResult) -> list[str]:
    names = labels(scale.events)
    rows = [
        [
            phase.name,
            *(_cell(phase.segments, label) for label in names),
            f"x{phase.time_growth:.2f}",
            f"{phase.memory_growth_mb:+.0f} MB",
            "flat" if phase.flat else "**grows**",
        ]
        for phase in scale.phases
    ]
    return [
        f"## Scale: {scale.stored:,} events",
        "",
        "Time per event over each segment and resident memory at its end. Flat means no "
        f"later segment costs more than {TIME_TOLERANCE}x the first per event, and memory "
        f"grows by at most {MEMORY_TOLERANCE_MB:.0f} MB after the first.",
        "",
        *_table(["phase", *names, "time growth", "memory growth", "verdict"], rows),
        "",
    ]


def document(
    machine: Machine,
    command: str,
    repeat: int,
    results: Sequence[Result],
    scale: ScaleResult | None,
) -> str:
    """The whole of results.md."""
    lines = ["# Benchmark results", "", f"Written by `{command}`.", ""]
    if results:
        lines += [
            f"Each figure is the median of {repeat} repetitions; raw is plain psycopg doing "
            "the equivalent work in the same repetition (for the bus: one locked single-row "
            "transaction per command; see each benchmark's docstring in bench/), and the "
            "ratio is the median of the repetitions' ours / raw. Only ratios compare "
            "between machines.",
            "",
        ]
        header = ["benchmark", "ours", "raw", "unit", "ratio", "target", "met", "figures"]
        lines += _table(header, (row for r in results for row in _rows(r)))
        lines.append("")
    if scale is not None:
        lines += _scale(scale)
    lines += ["## Machine", "", *_table(["", ""], machine.rows()), ""]
    return "\n".join(lines)
