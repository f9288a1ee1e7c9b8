"""Inline SVG charts for pages that must render with no internet: no script, no font, no
stylesheet of their own; every text escaped.

Each chart is a ``<figure>`` holding an ``<svg>`` (scaled to its container's width by its
``viewBox``) and an HTML legend. Every bar is a ``<rect class="bar">`` and every point a
``<circle class="point">``, each with a ``<title>`` (the browser's tooltip, no script
needed) and ``data-series``/``data-label``/``data-value`` attributes that tests and
scrapers read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from math import floor, log10

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 28  # margins for the axis labels
# Distinct on white and for the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#000")

# Tick counts a reader takes in at a glance; the tightest round scale within them wins.
FEWEST_TICKS, MOST_TICKS = 4, 7


@dataclass(frozen=True)
class Units:
    """How a chart's values read: divided by ``per`` (100 cents a euro), with ``places``
    decimals in tooltips, thousands separated, followed by ``suffix``."""

    places: int = 0
    per: int = 1
    suffix: str = ""

    def value(self, value: float) -> str:
        """One value, exactly as far as ``places`` go: a tooltip."""
        return f"{value / self.per:,.{self.places}f}{self.suffix}"

    def ticks(self, ticks: Sequence[float], step: float) -> list[str]:
        """An axis's labels, all with the same decimals: none when every tick is whole,
        else at least ``places`` (0.50, 1.00, 1.50 for money) and as many as ``step`` needs."""
        shown = step / self.per
        whole = shown == round(shown)
        places = 0 if whole else max(self.places, -floor(round(log10(shown), 9)))
        return [f"{tick / self.per:,.{places}f}{self.suffix}" for tick in ticks]


COUNT = Units()


@dataclass(frozen=True)
class Series:
    """A named row of values, one per label; ``None`` where there is no value (a gap)."""

    name: str
    values: Sequence[float | None]


def _number(value: float) -> str:
    return f"{value:g}"


def _steps(span: float, whole: bool) -> list[float]:
    """Round steps (1, 2 or 5 times a power of ten) from about a tenth to about the whole of
    ``span``; none below 1 when the values are ``whole`` (counts, minor units)."""
    power = floor(log10(span))
    steps = [m * 10.0**k for k in range(power - 2, power + 2) for m in (1, 2, 5)]
    return [step for step in steps if step >= 1 or not whole]


@dataclass(frozen=True)
class _Scale:
    low: float
    high: float
    step: float

    @classmethod
    def around(cls, values: Sequence[float]) -> _Scale:
        """A "nice numbers" scale: zero and ``values`` covered by ticks a round step apart,
        the ends rounded outward to the step only. Of the steps giving ``FEWEST_TICKS`` to
        ``MOST_TICKS`` ticks (or nearest that), the one wasting least room, then the one
        with fewest ticks: a refund of 1 EUR under 2,300 collected costs one step of 500,
        not a quarter of the chart."""
        low, high = min([*values, 0.0]), max([*values, 0.0])
        if high == low:
            high = low + 1
        whole = all(float(v).is_integer() for v in values)

        def fitted(step: float) -> _Scale:
            return cls(floor(low / step) * step, -floor(-high / step) * step, step)

        def cost(scale: _Scale) -> tuple[int, float, int]:
            count = len(scale.ticks())
            return max(FEWEST_TICKS - count, count - MOST_TICKS, 0), scale.high - scale.low, count

        return min((fitted(step) for step in _steps(high - low, whole)), key=cost)

    def y(self, value: float) -> float:
        plot = HEIGHT - TOP - BOTTOM
        return TOP + plot * (self.high - value) / (self.high - self.low)

    def ticks(self) -> list[float]:
        count = round((self.high - self.low) / self.step)
        return [self.low + i * self.step for i in range(count + 1)]


def _frame(scale: _Scale, labels: Sequence[str], units: Units) -> list[str]:
    """Grid lines, y tick labels and x labels (thinned so that they never overlap)."""
    parts = []
    ticks = scale.ticks()
    for tick, text in zip(ticks, units.ticks(ticks, scale.step), strict=True):
        y = scale.y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>'
        )
    every = max(1, -(-len(labels) * 56 // (WIDTH - LEFT - RIGHT)))  # ~56 px per label
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for i, label in enumerate(labels):
        if i % every == 0:
            x = LEFT + slot * (i + 0.5)
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(label)}</text>'
            )
    zero = scale.y(0)
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{zero:.1f}" y2="{zero:.1f}"/>'
    )
    return parts


def _figure(title: str, series: Sequence[Series], body: list[str], empty: bool) -> str:
    legend = "".join(
        f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
        f"{escape(s.name)}</li>"
        for i, s in enumerate(series)
    )
    note = '<p class="empty">No data in this period.</p>' if empty else ""
    return (
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMidYMid meet">{"".join(body)}</svg>'
        f'{note}<ul class="legend">{legend}</ul></figure>'
    )


def _mark(kind: str, series: str, label: str, value: float, units: Units, shape: str) -> str:
    """A bar or a point with its tooltip and data attributes."""
    tip = escape(f"{series}, {label}: {units.value(value)}")
    return (
        f'<{kind} class="{"bar" if kind == "rect" else "point"}" data-series="{escape(series)}" '
        f'data-label="{escape(label)}" data-value="{_number(value)}" {shape}>'
        f"<title>{tip}</title></{kind}>"
    )


def bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    units: Units = COUNT,
    stacked: bool = True,
) -> str:
    """Bars per label: stacked (positives up from zero, negatives down, so an MRR bridge
    shows its losses below the axis) or side by side. Zero and missing values draw nothing."""
    if stacked:
        highs = [sum(max(s.values[i] or 0, 0) for s in series) for i in range(len(labels))]
        lows = [sum(min(s.values[i] or 0, 0) for s in series) for i in range(len(labels))]
    else:
        values = [v or 0 for s in series for v in s.values]
        highs, lows = values, values
    scale = _Scale.around([*lows, *highs])
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    width = slot * 0.7 / (1 if stacked else max(len(series), 1))
    body = _frame(scale, labels, units)
    for i, label in enumerate(labels):
        up = down = 0.0
        for n, s in enumerate(series):
            value = s.values[i]
            if not value:
                continue
            if stacked:
                base = up if value > 0 else down
                x = LEFT + slot * (i + 0.15)
            else:
                base = 0.0
                x = LEFT + slot * (i + 0.15) + width * n
            top, bottom = sorted((scale.y(base), scale.y(base + value)))
            if stacked and value > 0:
                up += value
            elif stacked:
                down += value
            shape = (
                f'x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{bottom - top:.1f}" '
                f'fill="{PALETTE[n % len(PALETTE)]}"'
            )
            body.append(_mark("rect", s.name, label, value, units, shape))
    return _figure(title, series, body, not any(v for s in series for v in s.values))


def lines(title: str, labels: Sequence[str], series: Sequence[Series], units: Units = COUNT) -> str:
    """A line per series with a point per value; a missing value breaks the line."""
    known = [v for s in series for v in s.values if v is not None]
    scale = _Scale.around(known)
    body = _frame(scale, labels, units)
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for n, s in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, (label, value) in enumerate(zip(labels, s.values, strict=True)):
            if value is None:
                runs.append([])
                continue
            x, y = LEFT + slot * (i + 0.5), scale.y(value)
            runs[-1].append(f"{x:.1f},{y:.1f}")
            shape = f'cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"'
            body.append(_mark("circle", s.name, label, value, units, shape))
        body.extend(
            f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"/>'
            for run in runs
            if len(run) > 1
        )
    return _figure(title, series, body, not known)


def stacked_area(
    title: str, labels: Sequence[str], series: Sequence[Series], units: Units = COUNT
) -> str:
    """Layers stacked from zero (e.g. MRR by plan), a point on each layer's top edge per
    label. Values are levels of the same sign; a missing value counts as zero."""
    tops = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    scale = _Scale.around(tops)
    body = _frame(scale, labels, units)
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    xs = [LEFT + slot * (i + 0.5) for i in range(len(labels))]
    below = [0.0] * len(labels)
    for n, s in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        above = [b + (v or 0) for b, v in zip(below, s.values, strict=True)]
        edge = [f"{x:.1f},{scale.y(a):.1f}" for x, a in zip(xs, above, strict=True)]
        base = [f"{x:.1f},{scale.y(b):.1f}" for x, b in zip(xs, below, strict=True)]
        if len(xs) > 1:
            body.append(
                f'<polygon class="area" points="{" ".join(edge + base[::-1])}" '
                f'fill="{colour}" fill-opacity="0.55" stroke="{colour}"/>'
            )
        for x, a, label, value in zip(xs, above, labels, s.values, strict=True):
            shape = f'cx="{x:.1f}" cy="{scale.y(a):.1f}" r="3" fill="{colour}"'
            body.append(_mark("circle", s.name, label, value or 0, units, shape))
        below = above
    return _figure(title, series, body, not any(tops))
