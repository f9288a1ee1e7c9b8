"""Schemathesis against the HTTP API's own OpenAPI document: every operation it lists,
with generated parameters and bodies (valid and invalid ones), answered by the app of
``test_http_api`` (a shop with one paying customer), once with an admin key and once with
none. No request may get a server error, and each answer must be one the document
declares.

The operations are walked in the test itself (``schemathesis.pytest.from_fixture`` cannot
run under pytest 9.2: it sets ``Function._nodeid``, which pytest no longer has); a failing
operation does not stop the others, and all failures are reported together.
"""

from __future__ import annotations

from collections.abc import Iterator
from traceback import format_exception_only
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode, Response
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from commands.api_keys import Role
from tests.integration import test_http_api
from tests.integration.test_http_api import Api

# The role matrix's fixture: the same shop, keys and app (pytest finds it by name here).
api = test_http_api.api

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]

EXAMPLES_PER_OPERATION = 40
CONFORMANCE: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Providers' webhooks are raw bytes, verified by signature: the document cannot describe them.
RAW_ROUTES = {"/webhooks/{gateway}"}


def operations(api: Api) -> Iterator[Operation]:
    """Every operation of the app's document, as the app serves it now."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    for path in schema:
        yield from schema[path].values()


def validated(case: AnyCase, headers: dict[str, str]) -> Response:
    """The app's answer to ``case``, checked against the document: no server error, and
    status, content type, headers and body as declared."""
    checks: list[CheckFunction] = [not_a_server_error] if case.path in RAW_ROUTES else CONFORMANCE
    response = case.call_and_validate(headers=headers, checks=checks)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    return response


def exercise(operation: Operation, api: Api, headers: dict[str, str]) -> None:
    """Generated requests (valid and invalid) for one operation, each validated, then
    asked again with the shop's own values where it names any."""
    cases = st.one_of([operation.as_strategy(mode) for mode in GenerationMode])
    guarded = bool(operation.definition.raw.get("security"))

    # Derandomized so that CI sees the same requests; the app is the test's own.
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases)
    def answers(case: AnyCase) -> None:
        checked(case)
        if with_shop_values(case, api):
            checked(case)

    def checked(case: AnyCase) -> None:
        response = validated(case, headers)
        if guarded:
            assert_guarded(case, response, headers)

    answers()


def with_shop_values(case: AnyCase, api: Api) -> bool:
    """Puts the shop's customer, plan and currency in place of the generated path, query
    and body fields named like them (generated ones name nothing, so a route would stop
    at 404 or 422); whether there was any."""
    known = {"customer_id": str(api.customer_id), "plan_code": "pro", "currency": "EUR"}
    found = False
    for fields in (case.path_parameters, case.query, case.body):
        if isinstance(fields, dict) and (names := known.keys() & fields.keys()):
            fields.update({name: known[name] for name in names})
            found = True
    return found


def assert_guarded(case: AnyCase, response: Response, headers: dict[str, str]) -> None:
    """A route the document says needs a key opens to the admin's, and refuses any other
    request (no key, or a bearer Schemathesis made up, or the admin's removed by a
    negative case) before reading it."""
    sent = response.request.headers.get("Authorization")
    if headers and sent == headers["Authorization"]:
        assert response.status_code not in (401, 403), (case.formatted_path, response.text)
    else:
        assert response.status_code == 401, (case.formatted_path, sent, response.text)
        assert response.headers["www-authenticate"] == ["Bearer"]


@pytest.mark.parametrize("role", [Role.ADMIN, None], ids=["admin", "no-key"])
def test_every_operation_answers_as_documented(api: Api, role: Role | None) -> None:
    """With an admin key every route runs its own code; without one, guarded routes
    refuse."""
    headers = {} if role is None else {"Authorization": f"Bearer {api.secrets[role]}"}
    failures = {}
    for operation in operations(api):
        try:
            exercise(operation, api, headers)
        except (Exception, BaseExceptionGroup) as error:  # reported with the others below
            failures[operation.label] = error
    # Each with Hypothesis' notes: the request that failed.
    report = {label: "".join(format_exception_only(error)) for label, error in failures.items()}
    assert not report, "\n\n".join(f"{label}: {text}" for label, text in report.items())


def test_a_quote_whose_body_is_not_text_is_a_documented_400(api: Api) -> None:
    """Found by the test above: FastAPI answers 400 to a body that is not UTF-8, and the
    document did not say so."""
    body = b'{"plan_code": "basic", "currency": "EUR", "coupon": "\x80"}'
    response = api.client.post("/quote", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}
    documented = api.client.get("/openapi.json").json()["paths"]["/quote"]["post"]
    assert documented["responses"]["400"] == {"description": "the body is not JSON text"}
