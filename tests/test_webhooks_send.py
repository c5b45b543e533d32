"""One signed POST: to the checked address only, within its time limit; the connect-time
address check, Retry-After, what an answer means."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from connect_audit import audited_connects
from helpers import WEBHOOK_SECRET
from receiver import trickling_receiver

from ingest.errors import UnsafeURL
from ingest.settings import Settings
from ingest.urlsafety import AddressPolicy
from webhooks.records import AttemptOutcome, Delivery, Response
from webhooks.send import classify, connect_guard, retry_after_seconds, send


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


# -- the connection goes to the checked address, within the delivery's time limit ----------

PUBLIC = "93.184.216.34"  # what a rebinding name answers first; unreachable from the tests


@pytest.fixture
def send_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        return make_settings(webhook_secret=WEBHOOK_SECRET, **overrides)

    return make


def delivery_to(url: str) -> Delivery:
    return Delivery("job-1", url, "msg_test", '{"type": "vidbrief.job.completed"}')


def test_a_rebinding_name_never_gets_a_connection_to_a_refused_address(receiver, send_settings):
    # The name answers a public address to the first lookup and loopback to any later one.
    url = receiver.script("/rebound", 200).replace("127.0.0.1", "localhost")
    answers = iter([[PUBLIC]])
    policy = AddressPolicy.create(resolver=lambda host, port: next(answers, ["127.0.0.1"]))

    with audited_connects(unreachable={PUBLIC}) as connects:
        response = send(delivery_to(url), send_settings(allow_private_urls=False), policy)

    assert connects == [PUBLIC]  # the checked address, and nothing else
    assert receiver.connections == 0 and receiver.requests == []
    assert classify(response) is AttemptOutcome.RETRY  # unreachable: a network error


def test_the_post_goes_to_the_resolved_address_and_names_the_host(receiver, send_settings):
    # hooks.example is not in the system's DNS: only the policy's lookup can reach the receiver.
    port = receiver.server.server_address[1]
    url = receiver.script("/hook", 204).replace("127.0.0.1", "hooks.example")
    policy = AddressPolicy.create(allow_private=True, resolver=lambda host, p: ["127.0.0.1"])

    with audited_connects() as connects:
        response = send(delivery_to(url), send_settings(), policy)

    assert response.status == 204, response
    assert connects == ["127.0.0.1"]
    (received,) = receiver.on("/hook")
    assert received.headers["host"] == f"hooks.example:{port}"
    assert received.headers["webhook-id"] == "msg_test"


@pytest.mark.chaos
def test_a_trickling_receiver_cannot_stretch_a_delivery_past_its_time_limit(send_settings):
    limit_s = 1.0
    settings = send_settings(webhook_timeout_seconds=limit_s)
    with trickling_receiver(byte_every_s=0.2, for_s=30) as url:
        started = time.monotonic()
        response = send(delivery_to(url), settings)
        elapsed = time.monotonic() - started

    assert elapsed < limit_s + 2.0, f"{elapsed:.1f} s for a {limit_s} s limit"
    assert response.status is None and "ReadTimeout" in str(response.error)
    assert "VIDBRIEF_WEBHOOK_TIMEOUT_SECONDS=1 s" in str(response.error)
    assert classify(response) is AttemptOutcome.RETRY
