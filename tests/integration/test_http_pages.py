"""The HTML pages over HTTP (the public pricing page, the analysts' dashboard and its
sign-in) and the auditors' export: who gets what, and what the filters refuse."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

from fastapi.testclient import TestClient

from commands import schemas as s
from commands.api_keys import KeyStore, Role
from commands.api_pages import COOKIE, SESSION_SECONDS
from commands.audit_export import export
from commands.gateway_webhooks import GatewayWebhooks
from commands.http_api import ApiServices
from commands.http_app import http_app
from tests.integration.conftest import Shop
from tests.integration.test_audit_export import verify
from tests.integration.test_http_api import Api, api  # noqa: F401  # the fixture

SIGN_IN = '<form method="post" action="/login">'


def test_the_pricing_page_is_public_and_shows_only_redeemable_public_codes(
    api: Api,  # noqa: F811
    shop: Shop,
) -> None:
    now = shop.clock.now()
    shop.send(s.RegisterCoupon, code="SPRING", percent_off=Decimal(20), public=True)
    shop.send(s.RegisterCoupon, code="STAFF", percent_off=Decimal(50))
    shop.send(
        s.RegisterCoupon,
        code="FLASH",
        percent_off=Decimal(30),
        public=True,
        expires_at=now + timedelta(days=1),
    )
    shop.clock.advance(timedelta(days=2))  # FLASH has expired
    page = api.client.get("/pricing")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert re.findall(r"<code>(\w+)</code>", page.text) == ["SPRING"]
    assert "Basic" in page.text
    assert "20.00 EUR" in page.text


def test_the_dashboard_answers_analysts_and_admins_and_signs_others_in(
    api: Api,  # noqa: F811
) -> None:
    for role in (Role.ANALYST, Role.ADMIN):
        shown = api.call("GET", "/dashboard?to=2025-01-31", role)
        assert shown.status_code == 200, shown.text
        assert shown.text.count("<svg") == 8
        assert "Revenue dashboard: EUR, 2024-02-01 to 2025-01-31" in shown.text
    nobody = api.call("GET", "/dashboard", None)
    assert (nobody.status_code, nobody.headers["www-authenticate"]) == (401, "Bearer")
    assert SIGN_IN in nobody.text
    assert "<svg" not in nobody.text
    for role in (Role.AUDITOR, Role.SERVICE):
        refused = api.call("GET", "/dashboard", role)
        assert refused.status_code == 403
        assert f"a {role} key may not use this route" in refused.text
        assert "<svg" not in refused.text


def test_a_browser_signs_in_with_a_key_and_out_again(api: Api) -> None:  # noqa: F811
    wrong = api.client.post("/login", data={"key": api.secrets[Role.AUDITOR]})
    assert wrong.status_code == 403
    assert COOKIE not in wrong.cookies
    unknown = api.client.post("/login", data={"key": "sk_analyst_nope"})
    assert unknown.status_code == 401
    assert SIGN_IN in unknown.text

    signed = api.client.post(
        "/login", data={"key": api.secrets[Role.ANALYST]}, follow_redirects=False
    )
    assert (signed.status_code, signed.headers["location"]) == (303, "/dashboard")
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert f"Max-Age={SESSION_SECONDS}" in cookie
    assert api.client.get("/dashboard?to=2025-01-31").text.count("<svg") == 8
    # The cookie opens the dashboard only: JSON routes still want the header.
    assert api.client.get("/stats").status_code == 401

    out = api.client.post("/logout", follow_redirects=False)
    assert out.status_code == 303
    assert api.client.get("/dashboard").status_code == 401


def test_a_revoked_key_in_a_cookie_opens_nothing(api: Api) -> None:  # noqa: F811
    api.client.post("/login", data={"key": api.secrets[Role.ANALYST]})
    analyst = next(k for k in api.keys.all_keys() if k.role == Role.ANALYST)
    api.keys.revoke(analyst.key_id, analyst.created_at)
    assert api.client.get("/dashboard").status_code == 401


def test_the_dashboard_filters_are_checked(api: Api) -> None:  # noqa: F811
    def status(query: str) -> int:
        return int(api.call("GET", f"/dashboard?{query}", Role.ANALYST).status_code)

    assert status("currency=USD") == 404  # no revenue in it
    assert status("currency=euro") == 422
    assert status("from=2025-02-01&to=2025-01-01") == 422
    assert status("from=2000-01-01&to=2025-01-01") == 422  # longer than ten years
    assert status("from=0001-01-01") == 422
    assert status("to=9999-12-31") == 422
    assert status("from=yesterday") == 422
    shown = api.call("GET", "/dashboard?from=2024-12-01&to=2025-01-31", Role.ANALYST)
    assert "EUR, 2024-12-01 to 2025-01-31" in shown.text


def test_the_dashboard_of_a_ledger_with_no_revenue_says_so(shop: Shop) -> None:
    shop.projector.setup()
    keys = KeyStore(shop.projector.database)
    keys.setup()
    _, secret = keys.create(Role.ANALYST, "analyst", shop.clock.now())
    services = ApiServices(
        shop.ledger, shop.clock, shop.projector.database, shop.projector.catch_up, keys
    )
    receiver = GatewayWebhooks(shop.ledger, shop.clock, {}, shop.projector.database, lambda: 0)
    with TestClient(http_app(receiver, services)) as client:
        empty = client.get("/dashboard", headers={"Authorization": f"Bearer {secret}"})
    assert empty.status_code == 404
    assert "no revenue events have been projected yet" in empty.text


def test_auditors_export_the_ledger_or_one_account_as_verifiable_json_lines(
    api: Api,  # noqa: F811
    shop: Shop,
    tmp_path: Path,
) -> None:
    whole = api.call("GET", "/audit/export", Role.AUDITOR)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/x-ndjson"
    assert 'filename="subledger-ledger.jsonl"' in whole.headers["content-disposition"]
    expected = io.StringIO()
    summary = export(shop.ledger, expected)
    assert whole.text == expected.getvalue()
    path = tmp_path / "ledger.jsonl"
    path.write_text(whole.text)
    assert verify(path) == (0, f"OK: {summary.events} events verified")

    one = api.call("GET", f"/audit/export?customer_id={api.customer_id}", Role.AUDITOR)
    expected = io.StringIO()
    export(shop.ledger, expected, api.customer_id)
    assert one.text == expected.getvalue()
    assert str(api.customer_id) in one.headers["content-disposition"]

    nobody = api.call("GET", f"/audit/export?customer_id={uuid4()}", Role.AUDITOR)
    assert nobody.status_code == 404
    assert api.call("GET", "/audit/export", Role.ANALYST).status_code == 403


def test_the_api_documentation_pages_need_no_internet(api: Api) -> None:  # noqa: F811
    for path in ("/docs", "/redoc"):
        page = api.client.get(path)
        assert page.status_code == 200
        assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page.text)
        assert assets, path
        for asset in assets:
            assert asset.startswith("/"), (path, asset)  # served here, not from a CDN
            assert api.client.get(asset).status_code == 200, asset
        assert not re.search(r"https?://", page.text.replace("http://www.w3.org", ""))


def test_an_oversized_sign_in_form_is_refused_unread(api: Api) -> None:  # noqa: F811
    """Streamed without a length: refused once past the limit, not read whole first."""

    def chunks() -> Iterator[bytes]:
        yield b"key=" + b"x" * 3_000
        yield b"x" * 3_000

    assert api.client.post("/login", content=chunks()).status_code == 413
    declared = api.client.post("/login", content=b"key=" + b"x" * 5_000)
    assert declared.status_code == 413


def test_the_dashboard_checks_the_key_before_the_filters(api: Api) -> None:  # noqa: F811
    nobody = api.call("GET", "/dashboard?from=yesterday", None)
    assert nobody.status_code == 401
    assert SIGN_IN in nobody.text
    assert api.call("GET", "/dashboard?from=yesterday", Role.AUDITOR).status_code == 403
    assert api.call("GET", "/dashboard?from=yesterday", Role.ANALYST).status_code == 422
