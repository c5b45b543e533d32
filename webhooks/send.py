"""One signed POST of a webhook, and what its answer means.

Signing is Standard Webhooks, done by the official ``standardwebhooks`` library: headers
``webhook-id`` (derived from the CloudEvent id, so the same on every attempt and for a
re-published event), ``webhook-timestamp`` (of this attempt) and ``webhook-signature``.

One attempt ends as (:func:`classify`):

    2xx                 delivered
    410 Gone            disabled: the URL takes no more attempts, now or for later jobs
    429, 5xx            retry (a Retry-After longer than the next interval postpones instead)
    network error,      retry
    timeout, no DNS
    other 3xx/4xx       failed (redirects are not followed): no retry
    refused address     failed

The name is resolved once per attempt, every address checked, and the connection made to those
addresses only (connect.py: TLS and ``Host`` still name the host), so no connection is ever
opened to a refused address; connect to last header byte ends within
``VIDBRIEF_WEBHOOK_TIMEOUT_SECONDS``, however slowly the receiver answers. An error says the
class and the host, never the receiver's answer (its body is not read).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from ingest.errors import ConfigError, UnresolvableHost, UnsafeURL
from ingest.redact import error_summary
from ingest.settings import Settings
from ingest.urlsafety import AddressPolicy
from webhooks.connect import transport
from webhooks.records import AttemptOutcome, Delivery, Response

MAX_RETRY_AFTER_S = 3600.0  # a receiver cannot park a delivery for longer than this
USER_AGENT = "vidbrief-webhooks/1"


def send(delivery: Delivery, settings: Settings, policy: AddressPolicy | None = None) -> Response:
    """POST ``delivery`` once; every failure comes back as a Response, never raised.

    ``policy``: the address policy (default: the settings' own, with the system's DNS).
    """
    policy = policy or AddressPolicy.create(allow_private=settings.allow_private_urls)
    try:
        return _post(delivery, settings, policy)
    except UnresolvableHost as e:
        return Response(error=str(e))
    except UnsafeURL as e:
        return Response(error=str(e), refused=True)
    except httpx.TimeoutException as e:
        limit = f"VIDBRIEF_WEBHOOK_TIMEOUT_SECONDS={settings.webhook_timeout_seconds:g}"
        return Response(error=f"{type(e).__name__}: no complete answer within {limit} s")
    except httpx.HTTPError as e:
        return Response(error=error_summary(e).rstrip(": "))


def classify(response: Response) -> AttemptOutcome:
    """What one answer means for the webhook (see the table above)."""
    if response.refused:
        return AttemptOutcome.FAILED
    status = response.status
    if status is None:
        return AttemptOutcome.RETRY  # network error, timeout, DNS
    if 200 <= status < 300:
        return AttemptOutcome.DELIVERED
    if status == 410:
        return AttemptOutcome.DISABLED
    if status == 429 or status >= 500:
        return AttemptOutcome.RETRY
    return AttemptOutcome.FAILED  # 3xx (not followed) and the other 4xx: sending again won't help


def _post(delivery: Delivery, settings: Settings, policy: AddressPolicy) -> Response:
    """Sign and POST; the status is all that is read (a receiver's body is not downloaded)."""
    # Resolved now: the name may point elsewhere than at enqueue time.
    addresses = policy.checked_addresses(delivery.url)
    headers = _signed_headers(delivery, settings)
    timeout = settings.webhook_timeout_seconds
    host = urlsplit(delivery.url).hostname or ""
    # trust_env=False: no proxy from the environment, the address policy sees the real peer.
    with (
        httpx.Client(
            transport=transport(host, addresses, timeout),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        ) as client,
        client.stream(
            "POST",
            delivery.url,
            content=delivery.payload.encode(),
            headers=headers,
            extensions={"trace": connect_guard(policy, delivery.url)},
        ) as response,
    ):
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return Response(status=response.status_code, retry_after_s=retry_after)


def _signed_headers(delivery: Delivery, settings: Settings) -> dict[str, str]:
    secret = settings.webhook_secret
    if secret is None:
        raise ConfigError("VIDBRIEF_WEBHOOK_SECRET is not set (the whsec_… signing secret)")
    now = datetime.now(UTC)
    signature = Webhook(secret.get_secret_value()).sign(delivery.webhook_id, now, delivery.payload)
    return {
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def connect_guard(policy: AddressPolicy, url: str) -> Callable[[str, dict[str, Any]], None]:
    """An httpcore trace hook that checks the address the socket really connected to.

    It runs after the TCP connect and before a byte is sent. The connection goes to checked
    addresses only (connect.py): this second look costs nothing and would catch a transport
    that resolved the name again.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)

    def trace(event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info["return_value"]
        try:
            policy.check_connect(host, port, str(stream.get_extra_info("server_addr")[0]))
        except UnsafeURL:
            stream.close()
            raise

    return trace


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds, capped; None if absent."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None  # unparseable: fall back to our own schedule
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
