"""Webhook endpoints: an http(s) URL without credentials, and a filter of event types,
families or everything; disabled for good."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from ledger.webhook_endpoints import (
    InvalidWebhookEndpoint,
    WebhookEndpoint,
    check_event_types,
    check_url,
    matches,
)

AT = datetime(2025, 1, 31, 9, 0, tzinfo=UTC)
ID = UUID("00000000-0000-4000-8000-000000000c7a")


@pytest.mark.parametrize(
    "url",
    [
        "https://crm.example/hooks/subledger",
        "http://127.0.0.1:8080/hook?source=ledger",
        "https://[::1]:8443/",
    ],
)
def test_an_http_or_https_url_with_a_host_is_accepted(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://crm.example/hook", "http"),
        ("crm.example/hook", "http"),
        ("https:///hook", "host"),
        ("https://crm:s3cret@crm.example/hook", "user name or password"),
        ("https://crm.example:99999/hook", "not a valid URL"),
        ("https://crm.example/hook#part", "fragment"),
        ("https://crm.example/a hook", "spaces"),
        ("https://crm.example/" + "a" * 2000, "too long"),
    ],
)
def test_other_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(InvalidWebhookEndpoint, match=why):
        check_url(url)


def test_a_filter_is_types_families_or_everything() -> None:
    assert check_event_types(["invoice.paid", "customer.*", "invoice.paid"]) == [
        "customer.*",
        "invoice.paid",
    ]
    for wrong in ([], ["Invoice.Paid"], ["invoice"], ["*.paid"], ["invoice.paid "]):
        with pytest.raises(InvalidWebhookEndpoint):
            check_event_types(wrong)


@pytest.mark.parametrize(
    ("event_types", "event_type", "sent"),
    [
        (["*"], "plan.created", True),
        (["invoice.*"], "invoice.payment_failed", True),
        (["invoice.*"], "invoice_item.created", False),
        (["invoice.paid"], "invoice.paid", True),
        (["invoice.paid"], "invoice.payment_failed", False),
        (["subscription.canceled", "customer.*"], "customer.created", True),
    ],
)
def test_an_event_is_sent_when_the_filter_takes_its_type(
    event_types: list[str], event_type: str, sent: bool
) -> None:
    assert matches(event_types, event_type) is sent


def test_an_endpoint_is_registered_then_disabled_once() -> None:
    endpoint = WebhookEndpoint.register(ID, "https://crm.example/h", ["*"], "CRM", AT)
    assert (endpoint.url, endpoint.event_types, endpoint.disabled) == (
        "https://crm.example/h",
        ["*"],
        False,
    )
    endpoint.disable(AT + timedelta(days=1))
    endpoint.disable(AT + timedelta(days=2))  # already: nothing more
    events = endpoint.collect_events()
    assert [type(e).__name__ for e in events] == ["Registered", "Disabled"]
    assert endpoint.disabled
    with pytest.raises(InvalidWebhookEndpoint):
        WebhookEndpoint.register(ID, "mailto:crm@example.com", ["*"], "", AT)
