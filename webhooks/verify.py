"""Verifying a received webhook delivery: what a receiver needs, and nothing else.

Depends only on the official ``standardwebhooks`` library and the error tree: a receiver that
imports this module loads neither rq, nor httpx, nor redis.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from ingest.errors import ConfigError, InvalidRequest, WebhookRejected

__all__ = ["LIBRARY_TOLERANCE_S", "load_delivery", "verify_webhook", "verify_webhook_files"]

LIBRARY_TOLERANCE_S = 300  # standardwebhooks' fixed timestamp window (5 minutes)


def verify_webhook(
    payload: bytes,
    headers: Mapping[str, str],
    secret: str,
    tolerance_s: float = LIBRARY_TOLERANCE_S,
) -> dict[str, Any]:
    """Verify a received delivery; return its CloudEvent as a dict, or raise WebhookRejected.

    For receivers: pass the raw request body (before any JSON parsing: one changed byte fails
    the signature), the request headers (any case) and the ``whsec_…`` secret. Verification is
    the official ``standardwebhooks`` library's; it also refuses a ``webhook-timestamp`` more
    than 5 minutes off (a replay), and ``tolerance_s`` can only tighten that. Deduplicate on the
    ``webhook-id`` header: a retried delivery carries the same one.

        event = verify_webhook(request.body, request.headers, os.environ["WEBHOOK_SECRET"])
    """
    if tolerance_s > LIBRARY_TOLERANCE_S:
        raise ValueError(f"tolerance_s can be at most {LIBRARY_TOLERANCE_S} s (the library's)")
    lowered = {name.lower(): value for name, value in headers.items()}
    try:  # first: with a wrong secret nothing else about the delivery matters
        webhook = Webhook(secret)
    except Exception as e:  # the library raises several types for a malformed secret
        raise ConfigError("the webhook secret is not a whsec_… base64 secret") from e
    _check_age(lowered.get("webhook-timestamp"), tolerance_s)
    try:
        event = webhook.verify(payload, lowered)
    except WebhookVerificationError as e:
        raise WebhookRejected(f"webhook not verified: {e}") from e
    except (ValueError, UnicodeDecodeError) as e:  # malformed signature header or body
        raise WebhookRejected(f"webhook not verified: malformed delivery ({e})") from e
    if not isinstance(event, dict):
        raise WebhookRejected("webhook verified, but its body is not a JSON object")
    return event


def _check_age(header: str | None, tolerance_s: float) -> None:
    try:
        sent = float(header or "")
    except ValueError:
        return  # missing or malformed: the library says so
    age = time.time() - sent
    if abs(age) > tolerance_s:
        when = "old" if age > 0 else "in the future"
        raise WebhookRejected(
            f"webhook not verified: timestamp is {abs(age):.0f} s {when}, tolerance {tolerance_s:g}"
            " s (a replayed delivery, or a clock is off)"
        )


def load_delivery(
    body: str | Path, headers: Iterable[str] = (), headers_file: str | Path | None = None
) -> tuple[bytes, dict[str, str]]:
    """A delivery saved to files: the body (``-`` reads stdin) and ``Name: value`` headers.

    ``headers_file`` is read like ``curl -D`` writes it (a status line and blank lines are
    skipped); ``headers`` are more ``Name: value`` strings (command-line arguments).
    """
    lines = list(headers)
    for line in lines:  # typed by hand: a mistake is said, not skipped
        if not line.partition(":")[0].strip() or ":" not in line:
            raise InvalidRequest(f"header {line!r} is not 'Name: value' (--header)")
    payload = sys.stdin.buffer.read() if str(body) == "-" else Path(body).read_bytes()
    if headers_file is not None:
        lines = Path(headers_file).read_text().splitlines() + lines
    parsed: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip() and not name.startswith("HTTP/"):
            parsed[name.strip().lower()] = value.strip()
    return payload, parsed


def verify_webhook_files(
    body: str | Path,
    secret: str,
    headers: Iterable[str] = (),
    headers_file: str | Path | None = None,
    tolerance_s: float = LIBRARY_TOLERANCE_S,
) -> dict[str, Any]:
    """``vidbrief verify-webhook``: :func:`verify_webhook` on a delivery saved to files."""
    payload, parsed = load_delivery(body, headers, headers_file)
    return verify_webhook(payload, parsed, secret, tolerance_s)
