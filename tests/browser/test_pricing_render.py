"""The pricing page of the demo's catalog in a real Chromium, from a file and from
``GET /pricing``: the monthly/annual toggle (two radio buttons and a CSS rule) shows
each view's prices when its label is clicked, on a laptop and on a phone."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from commands.pricing_page import pricing_html
from projections.runner import Projector
from tests.browser.conftest import PHONE, Live, Visit, visit

pytestmark = pytest.mark.browser

# The demo's catalog (commands.demo.CATALOG): a year costs ten months, in EUR and USD.
MONTHLY = {
    "basic": ["9.00 EUR", "9.00 USD"],
    "pro": ["29.00 EUR", "29.00 USD"],
    "platinum": ["99.00 EUR", "99.00 USD"],
}
ANNUAL = {
    "basic": ["90.00 EUR", "90.00 USD"],
    "pro": ["290.00 EUR", "290.00 USD"],
    "platinum": ["990.00 EUR", "990.00 USD"],
}


def shown_prices(page: Page) -> dict[str, list[str]]:
    """Each plan's prices a reader sees now."""
    return {
        str(card.get_attribute("data-plan")): card.locator(".price .amount")
        .filter(visible=True)
        .all_inner_texts()
        for card in page.locator("article.plan").all()
    }


def assert_toggles(opened: Visit, screenshot: str) -> None:
    """Monthly prices first; the Annual label shows the annual ones (with the saving of
    two months, 12 x 9.00 - 90.00 = 18.00 on Basic), and Monthly brings them back."""
    page = opened.page
    assert shown_prices(page) == MONTHLY
    opened.screenshot(f"{screenshot}.png")
    page.click("label[for=annual]")
    assert shown_prices(page) == ANNUAL
    basic = page.locator("article[data-plan=basic] .saving").filter(visible=True)
    assert basic.all_inner_texts() == ["save 18.00 EUR", "save 18.00 USD"]
    opened.screenshot(f"{screenshot}-annual.png")
    page.click("label[for=monthly]")
    assert shown_prices(page) == MONTHLY
    assert page.locator("li.coupon code").all_inner_texts() == ["WELCOME20"]  # the public one
    assert opened.no_horizontal_overflow()
    opened.assert_clean()


def test_the_pricing_page_toggles_between_monthly_and_annual_prices(
    browser: Browser, demo_projections: Projector, tmp_path: Path
) -> None:
    ledger = demo_projections.ledger
    page = tmp_path / "pricing.html"
    page.write_text(pricing_html(ledger.plans(), ledger.coupons()), encoding="utf-8")
    with visit(browser, page.as_uri()) as opened:
        assert_toggles(opened, "pricing")


def test_the_live_pricing_page_toggles_on_a_phone(browser: Browser, live: Live) -> None:
    with visit(browser, f"{live.base}/pricing", PHONE) as opened:
        assert opened.status == 200
        assert_toggles(opened, "pricing-phone")


def test_the_toggle_answers_the_keyboard_with_a_visible_focus_ring(
    browser: Browser, live: Live
) -> None:
    with visit(browser, f"{live.base}/pricing") as opened:
        page = opened.page
        page.keyboard.press("Tab")  # onto the checked radio button: Monthly
        assert page.evaluate("document.activeElement.id") == "monthly"
        page.keyboard.press("ArrowRight")  # a radio group moves and checks with arrows
        assert page.evaluate("document.activeElement.id") == "annual"
        assert shown_prices(page) == ANNUAL
        ring = page.locator("label[for=annual]").evaluate("l => getComputedStyle(l).outlineStyle")
        assert ring == "solid"
        assert (
            page.locator("label[for=monthly]").evaluate("l => getComputedStyle(l).outlineStyle")
            == "none"
        )
        opened.screenshot("pricing-keyboard.png")
        opened.assert_clean()
