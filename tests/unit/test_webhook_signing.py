"""Signing outbound webhooks: the Standard Webhooks scheme (its own test vector), one
secret per endpoint derived from the node's key, and the receiver's check that
docs/webhooks.md gives verifying what the node sends."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import SecretStr

from commands.webhook_signing import (
    WebhookSigningKeyMissing,
    endpoint_secret,
    signature,
    signed_headers,
)

DOC = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text(encoding="utf-8")
KEY = SecretStr("0123456789abcdef0123456789abcdef")
CRM = UUID("00000000-0000-4000-8000-000000000c7a")
MAIL = UUID("00000000-0000-4000-8000-0000000003a1")
BODY = b'{"type":"invoice.paid","id":"9af4e0ba-4374-57aa-a6dc-5637c77fa994","data":{}}'


def test_the_signature_is_the_standard_webhooks_one() -> None:
    # The specification's reference library's own test vector.
    assert (
        signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_each_endpoint_has_its_own_secret_derived_from_the_nodes_key() -> None:
    crm = endpoint_secret(KEY, CRM)
    assert crm == endpoint_secret(SecretStr(KEY.get_secret_value()), CRM)  # stable
    assert crm.startswith("whsec_")
    assert len(crm) == len("whsec_") + 44  # 32 bytes in base64
    assert crm != endpoint_secret(KEY, MAIL)
    assert crm != endpoint_secret(SecretStr("another key"), CRM)


@pytest.mark.parametrize("key", [None, SecretStr("")])
def test_without_a_key_nothing_can_be_signed_and_the_error_says_what_to_set(
    key: SecretStr | None,
) -> None:
    with pytest.raises(WebhookSigningKeyMissing, match="SUBLEDGER_WEBHOOK_SIGNING_KEY"):
        endpoint_secret(key, CRM)


def documented_verify() -> Any:
    """The ``verify`` function of docs/webhooks.md, as a receiver would copy it."""
    (snippet,) = re.findall(r"```python\n(.*?)```", DOC, re.S)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    return namespace["verify"]


def test_the_documented_check_accepts_a_delivery_and_refuses_forgeries() -> None:
    verify = documented_verify()
    secret = endpoint_secret(KEY, CRM)
    headers = signed_headers(
        secret, "9af4e0ba-4374-57aa-a6dc-5637c77fa994", datetime.now(UTC), BODY
    )
    assert headers["content-type"] == "application/json"
    assert verify(secret, headers, BODY)
    assert not verify(endpoint_secret(KEY, MAIL), headers, BODY)  # another endpoint's
    assert not verify(secret, headers, BODY.replace(b"invoice.paid", b"invoice.voided"))
    assert not verify(secret, headers | {"webhook-id": "another"}, BODY)
    old = signed_headers(secret, "9af4e0ba", datetime(2025, 1, 31, 9, tzinfo=UTC), BODY)
    assert not verify(secret, old, BODY)  # a replay of an old delivery
    rotated = headers | {"webhook-signature": f"v1,bm90IGl0 {headers['webhook-signature']}"}
    assert verify(secret, rotated, BODY)  # one matching signature among several


def test_the_timestamp_header_is_the_attempts_time_in_whole_seconds() -> None:
    at = datetime(2025, 1, 31, 9, 0, 0, 999_999, tzinfo=UTC)
    headers = signed_headers(endpoint_secret(KEY, CRM), "id-1", at, BODY)
    assert headers["webhook-timestamp"] == "1738314000"
    assert headers["webhook-id"] == "id-1"
