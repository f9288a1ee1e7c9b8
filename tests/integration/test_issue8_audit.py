"""Issue 8's audit: what a second look at the HTTP API and the plan suggestions found,
each pinned by a test that failed before its fix (on SQLite and PostgreSQL).

The shop's catalog: Basic 10 EUR a month; Pro 20 EUR a month or 200 a year. The clock
starts on Fri 31 Jan 2025 at 09:00 UTC; monthly periods end on the last day of each month.
"""

from __future__ import annotations

import pytest

from commands import schemas as s
from commands.api_keys import Role
from tests.integration.conftest import Shop
from tests.integration.test_http_api import Api, api  # noqa: F401
from tests.integration.test_suggestions import MONTH_ENDS, annual, on, renew_through


def test_a_plan_change_invoice_is_not_a_paid_month(shop: Shop) -> None:
    """An upgrade within a period bills its prorated part on an invoice of that period's
    index: it once counted as a sixth paid month after five."""
    sub_id = shop.subscribe(shop.customer(), "basic")
    shop.pay()  # period 0, 31 Jan
    renew_through(shop, MONTH_ENDS[:3])  # periods 1 to 3: 28 Feb, 31 Mar, 30 Apr
    shop.clock.advance_to(on(5, 10))
    shop.send(s.ChangePlan, subscription_id=sub_id, plan_code="pro", when="now")
    shop.pay()  # the upgrade's prorated invoice, period 3's index
    renew_through(shop, MONTH_ENDS[3:4])  # period 4 on 31 May: five months paid
    assert annual(shop) == []
    renew_through(shop, MONTH_ENDS[4:5])  # period 5 on 30 Jun: six
    assert annual(shop) == [(sub_id, 6, 0)]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"to": "0001-01-05"}, "0001-01-05 is outside 1970-01-01 to 2999-12-31"),
        (
            {"from": "9999-12-30", "to": "9999-12-31"},
            "9999-12-30 is outside 1970-01-01 to 2999-12-31",
        ),
    ],
)
def test_stats_refuse_days_out_of_range_instead_of_failing(
    api: Api,  # noqa: F811
    params: dict[str, str],
    reason: str,
) -> None:
    """A ``to`` near date.min left the default ``from`` 30 days before it: OverflowError, 500."""
    response = api.call("GET", "/stats", Role.ANALYST, params=params)
    assert (response.status_code, response.json()) == (422, {"detail": reason})
