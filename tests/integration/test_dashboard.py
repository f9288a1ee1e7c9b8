"""The revenue dashboard and the pricing page, on a shop that billed Jan 31 to Mar 7 2025
(the story of test_revenue): every chart drawn from the projections' figures, the tiles
equal to ``projections.stats``, nothing fetched from the internet, every text escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from commands import schemas as s
from commands.bootstrap import projector
from commands.cli import app
from commands.dashboard import (
    dashboard_figures,
    dashboard_html,
    default_period,
    month_before,
    period,
)
from commands.pricing_page import pricing_html
from ledger.application import Ledger
from projections import stats
from projections.runner import Projector
from tests.integration.conftest import Shop
from tests.integration.test_revenue import tell

# 12 months up to the last revenue event (Mar 5: the returner is back; the annual
# cancellation of Mar 6 takes effect at its period end), asked for explicitly.
START, END = date(2024, 4, 1), date(2025, 3, 5)
MONTHS = ["2025-01", "2025-02", "2025-03"]  # those with data
# The default period: the 12 whole months before March, which Mar 5 leaves unfinished.
DEFAULT_START, DEFAULT_END = date(2024, 3, 1), date(2025, 2, 28)


class Page(HTMLParser):
    """Each chart (by its caption) with its bars and points, the tiles, the tags."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.charts: dict[str, list[dict[str, str]]] = {}
        self.tiles: dict[str, dict[str, str]] = {}
        self.tags: list[str] = []
        self._caption: str | None = None
        self._chart = ""
        self._tile: dict[str, str] | None = None
        self._tile_part = ""
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = {k: v or "" for k, v in attrs}
        if tag == "figcaption":
            self._caption = ""
        if found.get("class") in ("bar", "point"):
            self.charts[self._chart].append(found)
        if found.get("class") == "tile":
            self._tile = found
        elif self._tile is not None and tag == "div":
            self._tile_part = found.get("class", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption" and self._caption is not None:
            self._chart, self._caption = self._caption, None
            self.charts[self._chart] = []

    def handle_data(self, data: str) -> None:
        if self._caption is not None:
            self._caption += data
        if self._tile is not None and self._tile_part:
            self._tile[self._tile_part] = data
            if self._tile_part == "change":
                self.tiles[self._tile["label"]] = self._tile
                self._tile = None
            self._tile_part = ""


@pytest.fixture
def projections(ledger: Ledger, database_url: str) -> Iterator[Projector]:
    with projector(ledger, database_url) as running:
        yield running


@pytest.fixture
def page(shop: Shop, projections: Projector) -> Page:
    tell(shop, projections)
    projections.catch_up()
    return Page(dashboard_html(dashboard_figures(projections.database, "EUR", START, END)))


def values(marks: list[dict[str, str]], series: str) -> dict[str, int]:
    return {m["data-label"]: int(m["data-value"]) for m in marks if m["data-series"] == series}


def test_the_default_period_is_the_twelve_whole_months_before_the_last_day(
    page: Page, projections: Projector
) -> None:
    db = projections.database
    assert default_period(db) == period(db, None, None) == (DEFAULT_START, DEFAULT_END)
    assert period(db, date(2025, 1, 1), None) == (date(2025, 1, 1), DEFAULT_END)
    # From a day of the unfinished month: to the last day with revenue, as asked.
    assert period(db, date(2025, 3, 1), None) == (date(2025, 3, 1), END)
    assert period(db, None, END) == (START, END)  # an explicit end is honoured exactly
    assert month_before(date(2025, 3, 31)) == date(2025, 2, 28)


def test_a_last_day_ending_its_month_completes_it(shop: Shop, projections: Projector) -> None:
    shop.subscribe(shop.customer())  # on Jan 31, the clock's first day
    projections.catch_up()
    assert default_period(projections.database) == (date(2024, 2, 1), date(2025, 1, 31))


def test_revenue_all_in_an_unfinished_month_is_shown_to_date(
    shop: Shop, projections: Projector
) -> None:
    shop.clock.advance_to(datetime(2025, 2, 3, 9, tzinfo=UTC))
    shop.subscribe(shop.customer())
    projections.catch_up()
    # Twelve whole months to Jan 31 would be empty: up to Feb 3 instead.
    assert default_period(projections.database) == (date(2024, 3, 1), date(2025, 2, 3))


def test_tiles_equal_the_projections_figures(page: Page, projections: Projector) -> None:
    f = stats.figures(projections.database, "EUR", START, END)
    assert f.mrr == 9667  # as test_revenue worked it out
    assert page.tiles["MRR"]["data-value"] == str(f.mrr)
    assert page.tiles["MRR"]["value"] == "96.67 EUR"
    assert page.tiles["ARR"]["data-value"] == str(f.arr)
    assert page.tiles["ARR"]["value"] == "1,160.04 EUR"  # 12 x 96.67, thousands separated
    assert page.tiles["ARPU"]["data-value"] == str(round(f.arpu or 0))
    assert page.tiles["Paying customers"]["data-value"] == "6"
    # The period began with no MRR: no retention to speak of, and no churn yet for an LTV.
    assert page.tiles["NRR"]["value"] == "n/a"
    assert page.tiles["LTV"]["value"] == "n/a"
    # A month earlier (to Feb 5) MRR was 5667: (9667 - 5667) / 5667 = +70.6%.
    assert page.tiles["MRR"]["change"] == "vs last month: +70.6%"


def test_each_chart_has_a_mark_per_value(page: Page, projections: Projector) -> None:
    months = stats.months(projections.database, "EUR", START, END)
    assert [f"{m.start:%Y-%m}" for m in months] == MONTHS

    mrr_by_plan = page.charts["MRR by plan (EUR)"]
    assert len(mrr_by_plan) == 2 * len(MONTHS)  # basic and pro, each month's end
    basic, pro = values(mrr_by_plan, "basic"), values(mrr_by_plan, "pro")
    assert [basic[m] + pro[m] for m in MONTHS] == [m.mrr for m in months]

    movements = page.charts["MRR movements per month (EUR)"]
    assert values(movements, "new") == {"2025-01": 5667, "2025-02": 2000}
    assert values(movements, "expansion") == {"2025-02": 3000}
    assert values(movements, "churn") == {"2025-02": -2000}  # losses drawn below the axis
    assert values(movements, "contraction") == {"2025-02": -1000}
    assert values(movements, "reactivation") == {"2025-02": 1000, "2025-03": 1000}

    churn = page.charts["Churn per month"]
    # January starts with nobody paying: no rate, no point.
    assert {m["data-label"] for m in churn} == {"2025-02", "2025-03"}

    collected = page.charts["Collected and refunded per month (EUR)"]
    assert values(collected, "collected") == {
        m.start.strftime("%Y-%m"): m.collected for m in months
    }
    assert sum(values(collected, "refunded").values()) == -sum(m.refunded for m in months) < 0

    trials = page.charts["Trials ended per month"]
    assert values(trials, "converted") == {"2025-02": 1}
    assert values(trials, "not converted") == {"2025-02": 1}

    f = stats.figures(projections.database, "EUR", START, END)
    subscribers = page.charts[f"Subscribers by plan and status on {END}"]
    assert sum(int(m["data-value"]) for m in subscribers) == sum(
        line.subscribers for line in f.subscribers
    )
    assert len(subscribers) == len(f.subscribers)


def test_the_page_needs_no_internet(page: Page, shop: Shop, projections: Projector) -> None:
    html = dashboard_html(dashboard_figures(projections.database, "EUR", START, END))
    assert not re.search(r"(src|href)\s*=|@import|url\(|https?://", html)
    assert "script" not in page.tags
    assert "link" not in page.tags
    assert page.tags.count("svg") == 8


def test_the_pricing_page_lists_plans_prices_trials_and_public_codes(
    shop: Shop, ledger: Ledger
) -> None:
    evil = "<script>alert(1)</script>"
    shop.send(s.RegisterPlan, code="odd", name=evil, features=[evil])
    shop.send(s.AddPrice, plan_code="odd", currency="EUR", amount=500)
    shop.send(s.RegisterCoupon, code="SPRING", name="Spring", percent_off=Decimal(20), public=True)
    welcome = "Welcome, 20% off the first month"
    shop.send(
        s.RegisterCoupon, code="WELCOME20", name=welcome, percent_off=Decimal(20), public=True
    )
    shop.send(s.RegisterCoupon, code="STAFF", percent_off=Decimal(50))
    coupons = [ledger.coupon(code) for code in ("SPRING", "WELCOME20", "STAFF")]
    html = pricing_html(ledger.plans(), coupons)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"(src|href)\s*=|https?://", html)
    cards = re.findall(r'<article class="plan" data-plan="(\w+)">(.*?)</article>', html)
    assert [code for code, _ in cards] == ["basic", "pro", "odd"]
    prices = {
        code: re.findall(r'class="price (\w+)".*?"amount">([^<]+)<', body) for code, body in cards
    }
    assert prices == {
        "basic": [("both", "10.00 EUR")],  # no annual price: shown in both views
        "pro": [("monthly", "20.00 EUR"), ("annual", "200.00 EUR")],
        "odd": [("both", "5.00 EUR")],
    }
    assert "save 40.00 EUR" in html  # 12 x 20 - 200
    assert "14-day free trial" in html
    offers = re.findall(r'<li class="coupon">(.*?)</li>', html)
    # A name adds something, or is left out when it says the discount already.
    assert offers == [
        "<code>SPRING</code> Spring: 20% off for the first payment",
        "<code>WELCOME20</code> 20% off for the first payment",
    ]
    assert "STAFF" not in html  # not public


def test_the_cli_writes_a_static_snapshot(
    shop: Shop, projections: Projector, database_url: str, tmp_path: Path
) -> None:
    tell(shop, projections)
    out = tmp_path / "dashboard.html"
    result = CliRunner().invoke(
        app, ["dashboard", "--out", str(out), "--currency", "eur", "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert "<form" not in html  # nothing to submit filters to
    # In the title and the heading, and not a third time below it.
    assert html.count(f"EUR, {DEFAULT_START} to {DEFAULT_END}") == 2
    # tests/browser opens such a snapshot in Chromium, offline.
