"""The revenue dashboard of `make demo`'s business, in a real Chromium: the snapshot the
demo writes, opened from disk on a laptop and on a phone, and the live ``GET /dashboard``
with an analyst's key (by header, and signed in through the form). Every chart is laid
out with its marks, labels do not overlap, the tiles show the projections' figures, and
nothing is fetched from elsewhere, logged as an error or thrown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from commands.dashboard import DashboardFigures, dashboard_figures, default_period
from ledger.money import Money
from projections import stats
from projections.runner import Projector
from tests.browser.conftest import PHONE, Demo, Live, Visit, visit

pytestmark = pytest.mark.browser

# What the page looks like once laid out, read in one go in the browser.
LAYOUT = """() => {
  const box = (el) => el.getBoundingClientRect();
  const overlapping = (rects, start, end) => rects
    .sort((a, b) => a[start] - b[start])
    .some((r, i) => i > 0 && r[start] < rects[i - 1][end] - 0.5);
  const svgs = [...document.querySelectorAll("figure.chart svg")];
  return {
    captions: [...document.querySelectorAll("figure.chart figcaption")].map(c => c.textContent),
    svgs: document.querySelectorAll("svg").length,
    drawn_svgs: svgs.filter(s => box(s).width > 0 && box(s).height > 0).length,
    marks: document.querySelectorAll("svg .bar, svg .point").length,
    empty_marks: [...document.querySelectorAll("svg .bar, svg .point")]
      .filter(m => !(box(m).width > 0 && box(m).height > 0))
      .map(m => m.querySelector("title").textContent),
    lines: document.querySelectorAll("svg polyline, svg polygon").length,
    overlapping_labels: svgs.filter(s =>
      overlapping([...s.querySelectorAll("text[text-anchor=middle]")].map(box), "left", "right")
      || overlapping([...s.querySelectorAll("text[text-anchor=end]")].map(box), "top", "bottom")
    ).map(s => s.getAttribute("aria-label")),
    cut_labels: svgs.filter(s => [...s.querySelectorAll("text")].some(t =>
      box(t).left < box(s).left || box(t).right > box(s).right))
      .map(s => s.getAttribute("aria-label")),
    past_right_edge: svgs.filter(s => box(s).right > window.innerWidth)
      .map(s => s.getAttribute("aria-label")),
    // Values on more than one line, or cut at their tile's edge.
    wrapped_values: [...document.querySelectorAll(".tile .value")].filter(v =>
      v.getClientRects().length !== 1
      || box(v).height > 1.5 * parseFloat(getComputedStyle(v).fontSize)
      || v.scrollWidth > v.clientWidth
      || box(v).right > box(v.parentElement).right)
      .map(v => v.textContent),
    headings: [...document.querySelectorAll("h1, .filters")].map(e => e.textContent),
    tiles: Object.fromEntries([...document.querySelectorAll(".tile")].map(
      t => [t.querySelector(".label").textContent, t.querySelector(".value").textContent])),
  };
}"""


@dataclass(frozen=True)
class Layout:
    captions: list[str]
    svgs: int
    drawn_svgs: int
    marks: int
    empty_marks: list[str]  # the tooltips of bars or points laid out with no area
    lines: int
    overlapping_labels: list[str]  # charts whose axis labels overlap
    cut_labels: list[str]  # charts with a label reaching past the chart's edge
    past_right_edge: list[str]  # charts that stick out of the window
    wrapped_values: list[str]  # tile values on two lines or cut off
    headings: list[str]  # the heading, and the filters' text under it
    tiles: dict[str, str]

    @classmethod
    def of(cls, opened: Visit) -> Layout:
        found: dict[str, Any] = opened.page.evaluate(LAYOUT)
        return cls(**found)


def captions(f: DashboardFigures) -> list[str]:
    code = f.current.currency
    return [
        f"MRR by plan ({code})",
        f"MRR movements per month ({code})",
        "Churn per month",
        f"Collected and refunded per month ({code})",
        "Failed payments and dunning recoveries per month",
        "Trials ended per month",
        "Trial conversion rate",
        f"Subscribers by plan and status on {f.current.end}",
    ]


def assert_rendered(opened: Visit, f: DashboardFigures) -> None:
    """Each chart drawn with every mark the HTML holds, the tiles equal to ``f``, and the
    page quiet and offline."""
    layout = Layout.of(opened)
    assert layout.captions == captions(f)
    assert layout.svgs == layout.drawn_svgs == 8
    assert layout.marks == opened.source.count('class="bar"') + opened.source.count('class="point"')
    assert layout.marks > 100  # a year of a dozen series: not an empty page
    assert layout.empty_marks == []
    assert layout.lines > 0  # churn, trial conversion, and the MRR by plan areas
    assert layout.overlapping_labels == []
    assert layout.cut_labels == []
    assert layout.past_right_edge == []
    assert layout.wrapped_values == []
    code = f.current.currency
    assert layout.tiles["MRR"] == separated(Money(f.current.mrr, code))
    assert layout.tiles["ARR"] == separated(Money(f.current.arr, code))
    assert layout.tiles["Paying customers"] == str(f.current.paying_customers)
    opened.assert_clean()


def separated(money: Money) -> str:
    """``money`` as the tiles show it: 18,456.84 EUR."""
    return f"{money.to_decimal():,f} {money.currency}"


def choose_usd(page: Page) -> None:
    page.select_option("select[name=currency]", "USD")
    page.click("button[type=submit]")


def figures_in(projections: Projector, currency: str) -> DashboardFigures:
    db = projections.database
    return dashboard_figures(db, currency, *default_period(db))


@pytest.fixture(scope="module")
def eur(demo_projections: Projector) -> DashboardFigures:
    """What the demo's snapshot shows: the first currency with revenue."""
    assert stats.currencies(demo_projections.database) == ["EUR", "USD"]
    figures = figures_in(demo_projections, "EUR")
    assert figures.current.mrr > 0
    return figures


def test_the_demo_snapshot_renders_offline_on_a_laptop(
    browser: Browser, demo: Demo, eur: DashboardFigures
) -> None:
    with visit(browser, demo.snapshot.as_uri()) as opened:
        assert_rendered(opened, eur)
        assert opened.no_horizontal_overflow()
        # The ARR of a year of the demo runs into the thousands: separated, on one line.
        assert eur.current.arr >= 100_000
        assert "," in Layout.of(opened).tiles["ARR"]
        # The heading says the currency and period once: no filters to repeat it.
        title = f"Revenue dashboard: EUR, {eur.current.start} to {eur.current.end}"
        assert Layout.of(opened).headings == [title]
        opened.screenshot("dashboard.png")


def test_the_demo_snapshot_fits_a_phone(
    browser: Browser, demo: Demo, eur: DashboardFigures
) -> None:
    with visit(browser, demo.snapshot.as_uri(), PHONE) as opened:
        assert_rendered(opened, eur)
        assert opened.no_horizontal_overflow()
        opened.screenshot("dashboard-phone.png")


def test_the_live_dashboard_answers_an_analyst_key_and_filters_by_currency(
    browser: Browser, live: Live, eur: DashboardFigures, demo_projections: Projector
) -> None:
    key = {"Authorization": f"Bearer {live.analyst_key}"}
    with visit(browser, f"{live.base}/dashboard", headers=key) as opened:
        assert opened.status == 200
        assert_rendered(opened, eur)
        opened.screenshot("dashboard-live.png")

        opened.follow(choose_usd)
        assert "currency=USD" in opened.page.url
        assert_rendered(opened, figures_in(demo_projections, "USD"))


def test_a_browser_signs_in_with_an_analyst_key_through_the_form(
    browser: Browser, live: Live, eur: DashboardFigures
) -> None:
    with visit(browser, f"{live.base}/dashboard") as opened:
        assert opened.status == 401
        assert Layout.of(opened).svgs == 0  # the sign-in form, not a figure
        opened.errors.clear()  # Chromium logs the 401 itself: expected here
        opened.page.fill("input[name=key]", live.analyst_key)
        opened.follow(lambda page: page.click("button[type=submit]"))
        assert opened.status == 200
        assert opened.page.url == f"{live.base}/dashboard"
        assert_rendered(opened, eur)
