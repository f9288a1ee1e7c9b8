"""The JSON API by role: a shop with one paying customer, keys of every role, and each
route asked by each role and by no key at all."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from commands.api_keys import KeyStore, Role
from commands.bus import answer_directly
from commands.gateway_webhooks import GatewayWebhooks
from commands.http_api import ApiServices
from commands.http_app import http_app
from commands.streams import Streams
from tests.integration.conftest import Shop

QUOTE_COMMAND = {"type": "quote.preview", "plan_code": "basic", "currency": "EUR"}


@dataclass
class Api:
    client: TestClient
    keys: KeyStore
    secrets: dict[Role, str]
    customer_id: UUID

    def call(self, method: str, path: str, role: Role | None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if role is not None:
            headers["Authorization"] = f"Bearer {self.secrets[role]}"
        return self.client.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def api(shop: Shop) -> Iterator[Api]:
    """A customer on Basic (10 EUR a month) whose first invoice is paid; one key per role."""
    customer_id = shop.customer()
    shop.subscribe(customer_id)
    shop.pay()
    shop.projector.setup()  # as `subledger http` does
    database = shop.projector.database
    keys = KeyStore(database)
    keys.setup()
    secrets = {role: keys.create(role, f"{role} key", shop.clock.now())[1] for role in Role}
    receiver = GatewayWebhooks(shop.ledger, shop.clock, {}, database, shop.projector.catch_up)
    services = ApiServices(shop.ledger, shop.clock, database, shop.projector.catch_up, keys)
    with TestClient(http_app(receiver, services)) as client:
        yield Api(client, keys, secrets, customer_id)


def routes(customer_id: UUID) -> list[tuple[str, str, dict[str, Any], set[Role] | None]]:
    """Each route, a request that succeeds with a good key, and the roles allowed (None:
    public); admin is allowed everywhere."""
    return [
        ("GET", "/plans", {}, None),
        ("POST", "/quote", {"json": {"plan_code": "basic", "currency": "EUR"}}, None),
        ("GET", "/stats", {}, {Role.ANALYST}),
        ("GET", "/customers", {"params": {"limit": 1}}, {Role.ANALYST}),
        ("GET", "/subscriptions", {"params": {"status": "active"}}, {Role.ANALYST}),
        ("GET", "/suggestions", {}, {Role.ANALYST}),
        ("GET", f"/customers/{customer_id}/history", {}, {Role.AUDITOR}),
        ("GET", "/audit/verify", {}, {Role.AUDITOR}),
        ("GET", f"/audit/replay/{customer_id}", {}, {Role.AUDITOR}),
        ("GET", "/audit/export", {"params": {"customer_id": str(customer_id)}}, {Role.AUDITOR}),
        (
            "POST",
            "/commands",
            {"json": QUOTE_COMMAND | {"command_id": "quote-1"}},
            {Role.SERVICE},
        ),
    ]


def test_each_role_gets_its_routes_and_a_refusal_without_data_elsewhere(api: Api) -> None:
    for method, path, kwargs, allowed in routes(api.customer_id):
        for role in [None, *Role]:
            response = api.call(method, path, role, **kwargs)
            if allowed is None or role == Role.ADMIN or role in allowed:
                assert response.status_code == 200, (method, path, role, response.text)
            elif role is None:
                assert response.status_code == 401, (path, role)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json() == {"detail": "an API key is required"}
            else:
                assert response.status_code == 403, (path, role)
                assert response.json() == {"detail": f"a {role} key may not use this route"}


def test_a_refusal_comes_before_the_request_is_read(api: Api) -> None:
    """Malformed parameters with no key, or the wrong one, say nothing about them."""
    assert api.call("GET", "/stats?from=yesterday", None).status_code == 401
    assert api.call("GET", "/stats?from=yesterday", Role.SERVICE).status_code == 403
    assert api.call("GET", "/stats?from=yesterday", Role.ANALYST).status_code == 422
    assert api.call("POST", "/commands", Role.AUDITOR, content=b"{not json").status_code == 403


def test_unknown_revoked_and_malformed_keys_are_refused(api: Api) -> None:
    path = f"/customers/{api.customer_id}/history"
    headers = {"Authorization": "Bearer sk_auditor_not-a-key"}
    unknown = api.client.get(path, headers=headers)
    assert unknown.status_code == 401
    assert unknown.json() == {"detail": "the API key is unknown or revoked"}
    basic = api.client.get(path, headers={"Authorization": f"Basic {api.secrets[Role.AUDITOR]}"})
    assert basic.status_code == 401

    auditor = next(k for k in api.keys.all_keys() if k.role == Role.AUDITOR)
    revoked = api.keys.revoke(auditor.key_id, auditor.created_at)
    assert revoked.revoked_at == auditor.created_at
    refused = api.call("GET", path, Role.AUDITOR)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert str(api.customer_id) not in refused.text
    # The other keys still work.
    assert api.call("GET", path, Role.ADMIN).status_code == 200


def test_keys_are_stored_hashed_and_listed_without_secrets(api: Api) -> None:
    rows = api.keys.database.query("SELECT key_id, role, label, hash FROM api_keys")
    stored = " ".join(str(value) for row in rows for value in row)
    assert len(rows) == 4
    for role, secret in api.secrets.items():
        assert secret.startswith(f"sk_{role}_")
        assert len(secret) > 40
        assert secret not in stored
        # The random part may itself hold "_", so cut the known prefix rather than split.
        assert secret.removeprefix(f"sk_{role}_") not in stored
    listed = [key.as_json() for key in api.keys.all_keys()]
    assert sorted(k["role"] for k in listed) == ["admin", "analyst", "auditor", "service"]
    assert all(set(k) == {"key_id", "role", "label", "created_at", "revoked_at"} for k in listed)


def test_the_catalog_and_a_prospects_quote_are_public(api: Api) -> None:
    plans = api.client.get("/plans").json()
    assert [(p["plan"], p["features"]) for p in plans] == [("basic", []), ("pro", ["API"])]
    pro = [(p["amount"], p["interval"], p["trial_days"]) for p in plans[1]["prices"]]
    assert pro == [(2000, "month", 14), (20000, "year", 0)]
    quote = api.client.post("/quote", json={"plan_code": "basic", "currency": "EUR"}).json()
    assert quote["recorded"] is False
    assert quote["subscription"]["customer_id"] is None
    assert [i["total"]["amount"] for i in quote["invoices"]] == [1000]
    missing = api.client.post("/quote", json={"plan_code": "gold", "currency": "EUR"})
    assert missing.status_code == 404
    assert missing.json()["detail"]["code"] == "not_found"


def test_commands_get_the_buss_replies(api: Api, shop: Shop) -> None:
    register = {
        "type": "customer.register",
        "command_id": f"reg-{uuid4().hex[:8]}",
        "email": "bob@example.com",
        "name": "Bob",
        "currency": "EUR",
    }
    unknown_plan = {
        "type": "subscription.start",
        "command_id": "start-gold",
        "customer_id": str(api.customer_id),
        "plan_code": "gold",
    }
    for command in (register, unknown_plan, {"type": "no.such", "command_id": "x"}):
        raw = json.dumps(command).encode()
        reply = api.call("POST", "/commands", Role.SERVICE, content=raw)
        assert reply.status_code == 200
        # Answered again, the command (idempotent by its id) gets the very same reply.
        direct = answer_directly(raw, shop.ledger, shop.clock, Streams())
        assert reply.json() == direct.model_dump(mode="json")
    accepted = api.call("POST", "/commands", Role.SERVICE, json=register).json()
    assert accepted["status"] == "accepted"
    assert accepted["result"]["customer_id"]
    refused = api.call("POST", "/commands", Role.SERVICE, json=unknown_plan).json()
    assert (refused["status"], refused["error"]["code"]) == ("rejected", "not_found")


def test_stats_as_json_and_csv(api: Api) -> None:
    figures = api.call("GET", "/stats?to=2025-01-31&currency=EUR", Role.ANALYST).json()
    assert (figures["from"], figures["to"]) == ("2025-01-02", "2025-01-31")
    eur = figures["currencies"]["EUR"]
    assert (eur["mrr"], eur["paying_customers"], eur["mrr_movements"]["new"]) == (1000, 1, 1000)

    for kwargs in ({"params": {"format": "csv"}}, {"headers": {"Accept": "text/csv"}}):
        response = api.call("GET", "/stats?to=2025-01-31", Role.ANALYST, **kwargs)
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["period"], r["currency"], r["mrr"]) for r in rows] == [
            ("total", "EUR", "1000"),
            ("2025-01", "EUR", "1000"),
        ]
        assert rows[0]["mrr_movements.new"] == "1000"

    assert api.call("GET", "/stats?currency=USD", Role.ANALYST).status_code == 404
    backwards = "/stats?from=2025-02-01&to=2025-01-01"
    assert api.call("GET", backwards, Role.ANALYST).status_code == 422


def test_auditors_read_histories_replays_and_the_chain(api: Api) -> None:
    history = api.call("GET", f"/customers/{api.customer_id}/history", Role.AUDITOR).json()
    assert history["customer_id"] == str(api.customer_id)
    assert [line["kind"] for line in history["history"]] == [
        "customer.registered",
        "customer.payment_method_added",
        "subscription.started",
        "invoice.issued",
        "invoice.payment_succeeded",
    ]
    replayed = api.call("GET", f"/audit/replay/{api.customer_id}", Role.AUDITOR).json()
    assert replayed["customer_id"] == str(api.customer_id)
    assert [s["plan_code"] for s in replayed["subscriptions"]] == ["basic"]
    before = api.call(
        "GET", f"/audit/replay/{api.customer_id}?as_of=2020-01-01T00:00", Role.AUDITOR
    ).json()
    assert (before["customer"], before["subscriptions"]) == (None, [])
    verified = api.call("GET", "/audit/verify", Role.AUDITOR).json()
    assert verified["intact"] is True
    assert verified["checked"] > 0
    nobody = api.call("GET", f"/customers/{uuid4()}/history", Role.AUDITOR)
    assert nobody.status_code == 404


def test_the_openapi_document_describes_the_roles(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    stats = document["paths"]["/stats"]["get"]
    assert stats["security"] == [{"HTTPBearer": []}]
    assert {"200", "401", "403"} <= set(stats["responses"])
    assert "security" not in document["paths"]["/plans"]["get"]
    assert "PlanOut" in document["components"]["schemas"]
