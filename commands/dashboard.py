"""The revenue dashboard: one self-contained HTML page (inline CSS and SVG, no script, no
external resource) drawn from the revenue projection's tables only, so that it renders
offline and stays fast on a large ledger (a handful of aggregate queries).

``dashboard_figures`` gathers; ``dashboard_html`` renders. The HTTP route and the
``subledger dashboard`` snapshot both call the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from html import escape

from commands import charts
from commands.charts import Series
from ledger.money import Money, exponent
from projections import stats
from projections.database import Database
from projections.stats import Figures
from projections.values import read_int

DEFAULT_MONTHS = 12
# The longest period shown: ten years of monthly bars still read; far longer ones are
# mistakes (or probes) that would only cost time.
MAX_PERIOD_DAYS = 3_660
# Days a period may name: month arithmetic near date.min and date.max would overflow.
EARLIEST, LATEST = date(1970, 1, 1), date(2999, 12, 31)
MOVEMENT_SIGNS = {"new": 1, "expansion": 1, "reactivation": 1, "contraction": -1, "churn": -1}


@dataclass(frozen=True)
class DashboardFigures:
    """What the dashboard shows for one currency over ``current``'s range."""

    current: Figures
    previous: Figures  # the same range a month earlier: the tiles' "vs last month"
    months: list[Figures]  # whole calendar months overlapping the range
    plan_mrr: dict[str, list[int]]  # plan -> MRR at the end of each of ``months``
    currencies: list[str]  # every currency with revenue, for the filter


def month_before(day: date) -> date:
    """The same day a month earlier, the last day of that month when it is shorter."""
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    for number in range(day.day, 0, -1):
        try:
            return date(year, month, number)
        except ValueError:
            continue
    raise AssertionError("every month has a first day")


def default_period(db: Database) -> tuple[date, date]:
    """The last ``DEFAULT_MONTHS`` whole calendar months up to the last day with revenue
    events: a month that day leaves unfinished would draw as a collapse. Up to that day
    itself when the whole months hold no revenue (it all lies in that unfinished month)."""
    last = stats.last_day(db)
    end = _last_whole_month_end(last)
    if end < last and not _has_revenue(db, _months_back(end), end):
        end = last
    return _months_back(end), end


def _last_whole_month_end(day: date) -> date:
    """``day`` when it ends its month, else the last day of the month before."""
    if (day + timedelta(days=1)).day == 1:
        return day
    return day.replace(day=1) - timedelta(days=1)


def _has_revenue(db: Database, start: date, end: date) -> bool:
    (first,) = db.query(
        "SELECT MIN(day) FROM revenue_days WHERE day >= ? AND day <= ?",
        (start.isoformat(), end.isoformat()),
    )[0]
    return first is not None


class BadPeriod(ValueError):
    """A period the dashboard cannot show: reversed, longer than ``MAX_PERIOD_DAYS``, or
    outside ``EARLIEST`` to ``LATEST``."""


def period(db: Database, start: date | None, end: date | None) -> tuple[date, date]:
    """The period asked for, the default one filling what is left out: ``default_period``
    when neither end is given; ``DEFAULT_MONTHS`` calendar months up to a ``to`` given
    alone; from a ``from`` given alone to the default end, or to the last day with revenue
    events when ``from`` is past the default end."""
    for day in (start, end):
        if day is not None and not EARLIEST <= day <= LATEST:
            raise BadPeriod(f"{day} is outside {EARLIEST} to {LATEST}")
    default_start, default_end = default_period(db)
    if end is None and start is not None and start > default_end:
        end = max(stats.last_day(db), start)  # from inside the unfinished month: to date
    end = end or default_end
    if start is None:
        start = default_start if end == default_end else _months_back(end)
    if end < start:
        raise BadPeriod(f"to ({end}) is before from ({start})")
    if (end - start).days >= MAX_PERIOD_DAYS:
        raise BadPeriod(f"{start} to {end} is longer than {MAX_PERIOD_DAYS} days")
    return start, end


def _months_back(end: date) -> date:
    """The first day of the ``DEFAULT_MONTHS``-th calendar month ending with ``end``'s."""
    start = end.replace(day=1)
    for _ in range(DEFAULT_MONTHS - 1):
        start = month_before(start)
    return start


def _plan_mrr(db: Database, currency: str, months: Sequence[Figures]) -> dict[str, list[int]]:
    """MRR by plan at each month's end: running sums of the plans' monthly MRR changes."""
    if not months:
        return {}
    rows = db.query(
        "SELECT month, plan_code, SUM(mrr_change) FROM revenue_plan_days "
        "WHERE currency = ? AND day <= ? GROUP BY month, plan_code ORDER BY month",
        (currency, months[-1].end.isoformat()),
    )
    changes: dict[str, dict[str, int]] = {}
    for month, plan, change in rows:
        changes.setdefault(str(plan), {})[str(month)] = read_int(change)
    levels: dict[str, list[int]] = {}
    for plan, by_month in sorted(changes.items()):
        levels[plan] = [
            sum(c for m, c in by_month.items() if m <= f"{f.start:%Y-%m}") for f in months
        ]
    return {plan: values for plan, values in levels.items() if any(values)}


def dashboard_figures(db: Database, currency: str, start: date, end: date) -> DashboardFigures:
    """The dashboard's figures for ``currency`` over ``start`` to ``end`` (both included)."""
    months = stats.months(db, currency, start, end)
    previous_start, previous_end = month_before(start), month_before(end)
    return DashboardFigures(
        current=stats.figures(db, currency, start, end),
        previous=stats.figures(db, currency, min(previous_start, previous_end), previous_end),
        months=months,
        plan_mrr=_plan_mrr(db, currency, months),
        currencies=stats.currencies(db),
    )


def _money(amount: int | Fraction | None, currency: str) -> str:
    """An amount in minor units, thousands separated: 18,456.84 EUR."""
    if amount is None:
        return "n/a"
    return f"{Money(round(amount), currency).to_decimal():,f} {currency}"


def _percent(rate: Fraction | None) -> str:
    return "n/a" if rate is None else f"{float(rate) * 100:.1f}%"


def _major(currency: str) -> charts.Units:
    """Amounts in minor units, read in major units with no currency code."""
    places = exponent(currency)
    return charts.Units(places=places, per=10**places)


def _tile(label: str, value: str, raw: int | Fraction | None, change: str) -> str:
    data = "" if raw is None else f' data-value="{round(raw)}"'
    return (
        f'<div class="tile"{data}><div class="label">{escape(label)}</div>'
        # Its length sizes the font (see STYLE): a long amount stays on one line.
        f'<div class="value" style="--chars:{len(value)}">{escape(value)}</div>'
        f'<div class="change">{escape(change)}</div></div>'
    )


def _change(now: int | Fraction | None, before: int | Fraction | None) -> str:
    if now is None or before is None:
        return "vs last month: n/a"
    if before == 0:
        return "vs last month: new" if now else "vs last month: no change"
    delta = (Fraction(now) - Fraction(before)) / abs(Fraction(before))
    return f"vs last month: {float(delta) * 100:+.1f}%"


def _tiles(f: DashboardFigures) -> str:
    c, p, code = f.current, f.previous, f.current.currency
    nrr = c.net_revenue_retention
    return (
        '<section class="tiles">'
        + "".join(
            (
                _tile("MRR", _money(c.mrr, code), c.mrr, _change(c.mrr, p.mrr)),
                _tile("ARR", _money(c.arr, code), c.arr, _change(c.arr, p.arr)),
                _tile("ARPU", _money(c.arpu, code), c.arpu, _change(c.arpu, p.arpu)),
                _tile("LTV", _money(c.ltv, code), c.ltv, _change(c.ltv, p.ltv)),
                _tile("NRR", _percent(nrr), None, _change(nrr, p.net_revenue_retention)),
                _tile(
                    "Paying customers",
                    str(c.paying_customers),
                    c.paying_customers,
                    _change(c.paying_customers, p.paying_customers),
                ),
            )
        )
        + "</section>"
    )


def _percent_series(name: str, rates: Sequence[Fraction | None]) -> Series:
    return Series(name, [None if r is None else round(float(r) * 100, 2) for r in rates])


def _charts(f: DashboardFigures) -> list[str]:
    code, months = f.current.currency, f.months
    labels = [f"{m.start:%Y-%m}" for m in months]
    money, percent = _major(code), charts.Units(places=1, suffix="%")
    status_order = sorted({s.status for s in f.current.subscribers})
    plans = sorted({s.plan_code for s in f.current.subscribers})
    count = {(s.plan_code, s.status): s.subscribers for s in f.current.subscribers}
    return [
        charts.stacked_area(
            f"MRR by plan ({code})",
            labels,
            [Series(plan, values) for plan, values in f.plan_mrr.items()],
            money,
        ),
        charts.bars(
            f"MRR movements per month ({code})",
            labels,
            [
                Series(name, [sign * getattr(m.movements, name) for m in months])
                for name, sign in MOVEMENT_SIGNS.items()
            ],
            money,
        ),
        charts.lines(
            "Churn per month",
            labels,
            [
                _percent_series("customer churn", [m.customer_churn_rate for m in months]),
                _percent_series("revenue churn", [m.revenue_churn_rate for m in months]),
            ],
            percent,
        ),
        charts.bars(
            f"Collected and refunded per month ({code})",
            labels,
            [
                Series("collected", [m.collected for m in months]),
                Series("refunded", [-m.refunded for m in months]),
            ],
            money,
        ),
        charts.bars(
            "Failed payments and dunning recoveries per month",
            labels,
            [
                Series("failed payments", [m.failed_payments for m in months]),
                Series("recovered by a retry", [m.recovered_payments for m in months]),
            ],
            stacked=False,
        ),
        charts.bars(
            "Trials ended per month",
            labels,
            [
                Series("converted", [m.trials_converted for m in months]),
                Series("not converted", [m.trials_not_converted for m in months]),
            ],
        ),
        charts.lines(
            "Trial conversion rate",
            labels,
            [_percent_series("trial conversion", [m.trial_conversion_rate for m in months])],
            percent,
        ),
        charts.bars(
            f"Subscribers by plan and status on {f.current.end}",
            plans,
            [Series(status, [count.get((p, status), 0) for p in plans]) for status in status_order],
        ),
    ]


def _filters(f: DashboardFigures, form_action: str | None) -> str:
    c = f.current
    if form_action is None:  # a static snapshot: nothing to submit, the heading says it all
        return ""
    options = "".join(
        f"<option{' selected' if code == c.currency else ''}>{escape(code)}</option>"
        for code in f.currencies
    )
    return (
        f'<form class="filters" method="get" action="{escape(form_action)}">'
        f'<label>Currency <select name="currency">{options}</select></label> '
        f'<label>From <input type="date" name="from" value="{c.start}"></label> '
        f'<label>To <input type="date" name="to" value="{c.end}"></label> '
        '<button type="submit">Show</button></form>'
    )


# On a phone a chart is drawn at about half its width, its text too: larger text keeps it legible.
STYLE = """
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:16px}
h1{font-size:1.4em;margin:0 0 8px}
.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:0 0 16px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.tile,.chart{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px}
.tile{container-type:inline-size}.tile .label{color:#57606a;font-size:.85em}
.tile .value{font-size:min(1.5em,100cqi / var(--chars) / .68);font-weight:600;white-space:nowrap}
.tile .change{color:#57606a;font-size:.8em}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,480px),1fr));
gap:12px;margin-top:16px}
.chart{margin:0}.chart figcaption{font-weight:600;margin-bottom:4px}
.chart svg{width:100%;height:auto;display:block}
.chart text{font-size:11px;fill:#57606a}.chart .grid{stroke:#eef0f2}.chart .axis{stroke:#8c959f}
.legend{list-style:none;padding:0;margin:4px 0 0;display:flex;flex-wrap:wrap;gap:4px 12px;
font-size:.85em}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.empty{color:#57606a;font-size:.85em}
@media (max-width:600px){.chart text{font-size:16px}
.tile .value{font-size:min(1.25em,100cqi / var(--chars) / .68)}}
"""


def dashboard_html(figures: DashboardFigures, form_action: str | None = "/dashboard") -> str:
    """The dashboard page. ``form_action`` is where the currency and period filters are
    submitted (as ``currency``, ``from`` and ``to`` query parameters); ``None`` for a static
    snapshot, whose heading says the currency and period."""
    c = figures.current
    title = f"Revenue dashboard: {c.currency}, {c.start} to {c.end}"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body><main>"
        f"<h1>{escape(title)}</h1>{_filters(figures, form_action)}{_tiles(figures)}"
        f'<section class="charts">{"".join(_charts(figures))}</section>'
        "</main></body></html>"
    )


def snapshot(db: Database, currency: str | None = None) -> str:
    """A static dashboard over the default period, in ``currency`` (the first one with
    revenue by default): what ``subledger dashboard`` and the demo write to a file."""
    start, end = default_period(db)
    known = stats.currencies(db)
    chosen = currency or known[0]
    if chosen not in known:
        raise stats.NoRevenueData(f"no revenue in {chosen}; there is: {known}")
    return dashboard_html(dashboard_figures(db, chosen, start, end), form_action=None)
