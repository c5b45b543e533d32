"""One signed POST: the connect-time address check, Retry-After, what an answer means."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from ingest.errors import UnsafeURL
from ingest.urlsafety import AddressPolicy
from webhooks.records import AttemptOutcome, Response
from webhooks.send import classify, connect_guard, retry_after_seconds


def test_connect_guard_refuses_a_name_that_turns_private(receiver):
    """DNS rebinding: the name looked public when checked, the socket reached loopback."""
    url = receiver.script("/rebound", 200).replace("127.0.0.1", "localhost")
    policy = AddressPolicy.create(resolver=lambda host, port: ["93.184.216.34"])
    policy.check_url(url)  # passes: the (stubbed) DNS answer was public

    with httpx.Client(trust_env=False) as http, pytest.raises(UnsafeURL, match="loopback"):
        http.post(url, content=b"{}", extensions={"trace": connect_guard(policy, url)})
    assert receiver.requests == []


def test_retry_after_parsing():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("999999") == 3600.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (Response(status=204), AttemptOutcome.DELIVERED),
        (Response(status=410), AttemptOutcome.DISABLED),
        (Response(status=429), AttemptOutcome.RETRY),
        (Response(status=503), AttemptOutcome.RETRY),
        (Response(error="ConnectError: refused"), AttemptOutcome.RETRY),
        (Response(status=302), AttemptOutcome.FAILED),
        (Response(status=400), AttemptOutcome.FAILED),
        (Response(error="refused loopback", refused=True), AttemptOutcome.FAILED),
    ],
)
def test_an_answer_means_delivered_disabled_retry_or_failed(response, outcome):
    assert classify(response) is outcome
