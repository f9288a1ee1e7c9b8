"""What every REST adapter does with HTTP: a bounded wait, and the failures that leave
an outcome unknown (timeouts, lost connections, 5xx, 429, a body that is not JSON)
turned into a ``RetryableError``, so that the caller sends the same request again with
the same idempotency key, or asks the gateway what it recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from gateways.port import RetryableError

# Retry-After beyond this is not waited for in-line: the request is retried later.
MAX_RETRY_AFTER = 60.0


def retry_after(
    value: str | None, now: datetime | None = None, longest: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), at most
    ``longest``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), longest)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), longest)


def send(
    client: httpx.Client, method: str, url: str, **kwargs: Any
) -> httpx.Response | RetryableError:
    """Sends one request; a response that may carry an answer (1xx-4xx but 429), or why
    there is none. A 4xx is returned: only the adapter knows what its body means."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException as error:
        return RetryableError(
            "timeout", f"no answer in time from {_where(url)}: {type(error).__name__}"
        )
    except httpx.TransportError as error:
        return RetryableError("network_error", f"{_where(url)} unreachable: {type(error).__name__}")
    except httpx.DecodingError:
        # A body its Content-Encoding cannot decode (a proxy's doing): no answer to read.
        return RetryableError("malformed_response", f"{_where(url)} sent an undecodable body")
    except httpx.RequestError as error:  # redirects without end, and the like
        return RetryableError("network_error", f"{_where(url)}: {type(error).__name__}")
    if response.status_code == 429:
        return RetryableError(
            "rate_limited",
            f"{_where(url)} asked to slow down (429)",
            retry_after(response.headers.get("Retry-After")),
        )
    if response.status_code >= 500:
        return RetryableError(
            "processing_error", f"{_where(url)} failed with HTTP {response.status_code}"
        )
    return response


def json_body(response: httpx.Response) -> dict[str, Any] | RetryableError:
    """The response's JSON object; a body that is not one leaves the outcome unknown."""
    try:
        body = response.json()
    except ValueError:
        return RetryableError(
            "malformed_response",
            f"{_where(str(response.request.url))} answered HTTP {response.status_code} "
            "with a body that is not JSON",
        )
    if not isinstance(body, dict):
        return RetryableError(
            "malformed_response",
            f"{_where(str(response.request.url))} answered JSON that is not an object",
        )
    return body


def _where(url: str) -> str:
    # The host and path only: a query string could carry something that is not ours to log.
    parts = httpx.URL(url)
    return f"{parts.host}{parts.path}"
