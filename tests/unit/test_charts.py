"""The SVG chart helpers: a bar or point per value, stacks that add up, escaped text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from commands import charts
from commands.charts import Series


class Marks(HTMLParser):
    """The bars and points of a chart (their data attributes) and its visible text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.marks: list[dict[str, str]] = []
        self.tags: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = {k: v or "" for k, v in attrs}
        if found.get("class") in ("bar", "point"):
            self.marks.append({"tag": tag} | found)


def test_stacked_bars_draw_one_bar_per_nonzero_value_losses_below_the_axis() -> None:
    page = charts.bars(
        "MRR bridge",
        ["2025-01", "2025-02"],
        [Series("new", [500, 200]), Series("churn", [0, -300])],
    )
    marks = Marks(page).marks
    assert [(m["data-series"], m["data-label"], m["data-value"]) for m in marks] == [
        ("new", "2025-01", "500"),
        ("new", "2025-02", "200"),
        ("churn", "2025-02", "-300"),
    ]
    new_feb, churn_feb = marks[1], marks[2]
    # The churn bar starts where the new one ends: at the zero line.
    assert float(churn_feb["y"]) == float(new_feb["y"]) + float(new_feb["height"])
    # 200 up and 300 down on the same scale.
    assert float(churn_feb["height"]) / float(new_feb["height"]) == 1.5


def test_side_by_side_bars_share_the_zero_line() -> None:
    marks = Marks(
        charts.bars("Payments", ["a"], [Series("x", [4]), Series("y", [2])], stacked=False)
    ).marks
    bottoms = {float(m["y"]) + float(m["height"]) for m in marks}
    assert len(bottoms) == 1
    assert float(marks[0]["x"]) < float(marks[1]["x"])


def test_lines_skip_missing_values_and_break_there() -> None:
    page = charts.lines("Churn", ["a", "b", "c"], [Series("rate", [1.5, None, 2.0])])
    marks = Marks(page).marks
    assert [(m["data-label"], m["data-value"]) for m in marks] == [("a", "1.5"), ("c", "2")]
    assert "<polyline" not in page  # two runs of one point each: no line to draw


def test_stacked_area_puts_a_point_on_each_layer_per_label() -> None:
    page = charts.stacked_area(
        "MRR by plan", ["a", "b", "c"], [Series("basic", [1, 2, 3]), Series("pro", [0, 5, 5])]
    )
    marks = Marks(page).marks
    assert len(marks) == 6
    assert page.count('class="area"') == 2
    basic_c, pro_c = marks[2], marks[5]
    # The pro layer sits on top of basic: its top point is higher (smaller y).
    assert float(pro_c["cy"]) < float(basic_c["cy"])


def test_every_text_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    page = charts.bars(evil, [evil], [Series(evil, [1])])
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "script" not in Marks(page).tags


def test_an_empty_chart_says_so() -> None:
    page = charts.lines("Nothing", [], [Series("x", [])])
    assert Marks(page).marks == []
    assert "No data in this period." in page


def y_ticks(page: str) -> list[str]:
    """The y axis's labels, bottom to top."""
    return re.findall(r'<text [^>]*text-anchor="end">([^<]*)</text>', page)


def test_a_small_refund_costs_one_small_step_below_zero_not_a_quarter_of_the_chart() -> None:
    page = charts.bars(
        "Collected and refunded",
        ["2025-12", "2026-01"],
        [Series("collected", [230_000, 10_000]), Series("refunded", [0, -100])],
        charts.Units(places=2, per=100),
    )
    # 2,300 EUR up and 1 EUR down: steps of 500 EUR give 7 ticks over 3,000 EUR, the
    # tightest cover (1,000 EUR steps would run from -1,000 to 3,000).
    assert y_ticks(page) == ["-500", "0", "500", "1,000", "1,500", "2,000", "2,500"]


def test_money_ticks_below_one_unit_all_show_the_currency_decimals() -> None:
    page = charts.bars("Refunds", ["a"], [Series("x", [150])], charts.Units(places=2, per=100))
    # 1.50 EUR: 50-cent steps give 4 ticks exactly covering it.
    assert y_ticks(page) == ["0.00", "0.50", "1.00", "1.50"]
    assert "x, a: 1.50" in page  # the tooltip


def test_counts_get_whole_ticks_and_percentages_their_sign() -> None:
    # Two trials: steps of 1 give only 3 ticks, but a half trial would be no better.
    assert y_ticks(charts.bars("Trials", ["a"], [Series("x", [2])])) == ["0", "1", "2"]
    percent = charts.Units(places=1, suffix="%")
    page = charts.lines("Churn", ["a", "b"], [Series("rate", [12.5, 3.25])], percent)
    assert y_ticks(page) == ["0%", "5%", "10%", "15%"]
    assert "rate, b: 3.2%" in page  # the tooltip, to the tile's decimal


def test_large_amounts_are_thousands_separated() -> None:
    page = charts.stacked_area("MRR", ["a"], [Series("pro", [1_234_567])])
    # Steps of 200,000 give 8 ticks, of 500,000 four over 1,500,000.
    assert y_ticks(page) == ["0", "500,000", "1,000,000", "1,500,000"]
