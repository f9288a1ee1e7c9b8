"""The public pricing page: active plans side by side with their features, prices, trial
lengths, and the promotion codes the business marks public. One self-contained HTML page:
the monthly/annual toggle is two radio buttons and a CSS rule, no script.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ledger.calendar import Interval, IntervalUnit
from ledger.catalog import Plan, Price
from ledger.coupons import Coupon
from ledger.discounts import Duration
from ledger.money import Money

MONTHLY = Interval(IntervalUnit.MONTH)
ANNUAL = Interval(IntervalUnit.YEAR)


def _active_prices(plan: Plan) -> list[Price]:
    return [p for p in plan.prices.values() if p.id not in plan.archived_price_ids]


def _price_line(price: Price, view: str, monthly: Price | None = None) -> str:
    """A price, shown in the ``monthly`` or ``annual`` view (or ``both``), with the saving
    of an annual price over twelve months of ``monthly``."""
    per = "month" if price.interval == MONTHLY else str(price.interval)
    saving = ""
    if monthly is not None and price.interval == ANNUAL:
        saved = Money(12 * monthly.amount.amount, price.currency) - price.amount
        if saved.amount > 0:
            saving = f' <span class="saving">save {escape(str(saved))}</span>'
    trial = (
        f'<span class="trial">{price.trial_days}-day free trial</span>' if price.trial_days else ""
    )
    return (
        f'<li class="price {view}" data-price-id="{escape(price.id)}">'
        f'<span class="amount">{escape(str(price.amount))}</span> / {escape(per)}'
        f"{saving}{trial}</li>"
    )


def _prices(plan: Plan) -> str:
    """Each currency's monthly price in the monthly view and annual price in the annual
    view; a currency missing one of the two shows what it has in both, as do other
    intervals (weekly, quarterly)."""
    lines = []
    by_currency: dict[str, dict[Interval, Price]] = {}
    for price in _active_prices(plan):
        by_currency.setdefault(price.currency, {})[price.interval] = price
    for _, prices in sorted(by_currency.items()):
        monthly, annual = prices.get(MONTHLY), prices.get(ANNUAL)
        for interval, price in prices.items():
            if interval == MONTHLY:
                lines.append(_price_line(price, "monthly" if annual else "both"))
            elif interval == ANNUAL:
                lines.append(_price_line(price, "annual" if monthly else "both", monthly))
            else:
                lines.append(_price_line(price, "both"))
    return "".join(lines)


def _card(plan: Plan) -> str:
    features = "".join(f"<li>{escape(feature)}</li>" for feature in plan.features)
    description = f"<p>{escape(plan.description)}</p>" if plan.description else ""
    return (
        f'<article class="plan" data-plan="{escape(plan.code)}"><h2>{escape(plan.name)}</h2>'
        f'{description}<ul class="prices">{_prices(plan)}</ul>'
        f'<ul class="features">{features}</ul></article>'
    )


def _off(coupon: Coupon) -> str:
    """How much the coupon takes off: "20% off", "5.00 EUR off"."""
    if coupon.amount_off is not None:
        return f"{coupon.amount_off} off"
    return f"{coupon.percent_off.normalize():f}% off" if coupon.percent_off else ""


def _discount(coupon: Coupon) -> str:
    duration = {
        Duration.ONCE: "the first payment",
        Duration.FOREVER: "every payment",
        Duration.REPEATING: f"{coupon.duration_periods} billing periods",
    }[coupon.duration]
    return f"{_off(coupon)} for {duration}"


def _offer(coupon: Coupon) -> str:
    """The coupon's name and discount, the name left out when empty or when it states the
    discount already ("Welcome, 20% off the first month"): said once, not twice."""
    if not coupon.name or _off(coupon) in coupon.name:
        return _discount(coupon)
    return f"{coupon.name}: {_discount(coupon)}"


def _coupons(coupons: Sequence[Coupon]) -> str:
    # Guarded here too: a private code on a public page would be a leak, whoever passed it.
    shown = [c for c in coupons if c.public]
    if not shown:
        return ""
    items = "".join(
        f'<li class="coupon"><code>{escape(c.code)}</code> {escape(_offer(c))}'
        + (f" (plans: {escape(', '.join(c.plan_codes))})" if c.plan_codes else "")
        + (f" until {c.expires_at:%Y-%m-%d}" if c.expires_at else "")
        + "</li>"
        for c in shown
    )
    return f'<section class="coupons"><h2>Promotion codes</h2><ul>{items}</ul></section>'


STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:16px}
.toggle{display:flex;gap:16px;margin:8px 0 16px}
.plans{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:16px}
.plan{background:#fff;border:1px solid #dde1e6;border-radius:10px;padding:16px}
.plan h2{margin:0 0 4px}.prices,.features{padding:0;list-style:none}
.amount{font-size:1.4em;font-weight:600}.saving{color:#1a7f37;font-size:.85em}
.trial{display:block;color:#57606a;font-size:.85em}
.features li::before{content:"\\2713  ";color:#1a7f37}
#annual:checked~.plans .price.monthly,#monthly:checked~.plans .price.annual{display:none}
.visually-hidden{position:absolute;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;
clip:rect(0,0,0,0);white-space:nowrap;border:0}
#monthly:focus-visible~.toggle [for=monthly],#annual:focus-visible~.toggle [for=annual]{
outline:3px solid #0969da;outline-offset:2px}
.toggle label{cursor:pointer;padding:4px 12px;border:1px solid #8c959f;border-radius:16px}
#monthly:checked~.toggle [for=monthly],#annual:checked~.toggle [for=annual]{background:#1b1f24;
color:#fff}
"""


def pricing_html(plans: Sequence[Plan], public_coupons: Sequence[Coupon] = ()) -> str:
    """The pricing page of the active ``plans`` (archived plans and prices left out), with
    ``public_coupons`` listed (only those marked public)."""
    active = [p for p in plans if not p.archived and _active_prices(p)]
    cards = "".join(_card(plan) for plan in active)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Pricing</title><style>{STYLE}</style></head><body><main><h1>Pricing</h1>"
        # Visually hidden, not ``hidden``: the keyboard reaches them (Tab, then arrows).
        '<input type="radio" name="billing" id="monthly" class="visually-hidden" checked>'
        '<input type="radio" name="billing" id="annual" class="visually-hidden">'
        '<div class="toggle"><label for="monthly">Monthly</label>'
        '<label for="annual">Annual</label></div>'
        f'<section class="plans">{cards}</section>{_coupons(public_coupons)}'
        "</main></body></html>"
    )
