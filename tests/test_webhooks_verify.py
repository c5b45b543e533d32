"""Receivers' side: verifying a delivery, and what verifying costs a receiver to import."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from helpers import WEBHOOK_SECRET
from standardwebhooks import Webhook

from ingest.errors import ConfigError, InvalidRequest, WebhookRejected
from ingest.events import EventType, build_event
from webhooks.verify import verify_webhook, verify_webhook_files


def _event(job_id: str) -> bytes:
    return build_event(EventType.COMPLETED, job_id, "vidbrief/test", "completed", {"pages": 3})


def signed(body: str, sent_at: datetime, msg_id: str = "msg_test") -> dict[str, str]:
    """Headers for ``body`` as the official library signs them."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign(msg_id, sent_at, body),
    }


def test_verify_webhook_accepts_genuine_and_rejects_forged_or_stale(tmp_path):
    body = _event("job-1").decode()
    now = datetime.now(UTC)

    assert (
        verify_webhook(body.encode(), signed(body, now), WEBHOOK_SECRET)["id"] == "job-1/completed"
    )
    forged = body.replace('"pages": 3', '"pages": 4')
    assert forged != body
    with pytest.raises(WebhookRejected, match="signature"):
        verify_webhook(forged.encode(), signed(body, now), WEBHOOK_SECRET)
    other = "whsec_" + base64.b64encode(b"another secret of thirty-two b!!").decode()
    with pytest.raises(WebhookRejected, match="signature"):
        verify_webhook(body.encode(), signed(body, now), other)
    stale = now - timedelta(minutes=10)
    with pytest.raises(WebhookRejected, match=r"timestamp is 60\d s old"):
        verify_webhook(body.encode(), signed(body, stale), WEBHOOK_SECRET)
    with pytest.raises(WebhookRejected, match="timestamp"):
        verify_webhook(body.encode(), signed(body, now - timedelta(seconds=90)), WEBHOOK_SECRET, 60)
    with pytest.raises(WebhookRejected, match="Missing required headers"):
        verify_webhook(body.encode(), {}, WEBHOOK_SECRET)

    # the same check from files, as `vidbrief verify-webhook` reads them (curl -D format)
    (tmp_path / "body.json").write_text(body)
    lines = ["HTTP/1.1 200 OK"] + [f"{k}: {v}" for k, v in signed(body, now).items()]
    (tmp_path / "headers.txt").write_text("\r\n".join(lines) + "\r\n\r\n")
    event = verify_webhook_files(
        tmp_path / "body.json", WEBHOOK_SECRET, headers_file=tmp_path / "headers.txt"
    )
    assert event["subject"] == "job-1"


def test_a_mistyped_header_or_a_bad_secret_is_said_first(tmp_path):
    (tmp_path / "body.json").write_text("{}")
    with pytest.raises(InvalidRequest, match="'webhook-id x' is not 'Name: value'"):
        verify_webhook_files(tmp_path / "body.json", WEBHOOK_SECRET, ["webhook-id x"])
    stale = signed("{}", datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(ConfigError, match="whsec_"):  # not the age of the delivery
        verify_webhook(b"{}", stale, "notbase64")


def test_a_receiver_that_only_verifies_loads_no_queue_http_or_redis_library():
    """``webhooks.verify`` in a fresh interpreter: rq, httpx and redis stay out of it."""
    probe = (
        "import sys; from webhooks import WebhookRejected, verify_webhook; import webhooks.verify; "
        "print(sorted(m for m in ('rq', 'httpx', 'redis', 'ray', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
