"""What a webhook is, and what each attempt leaves in Redis for ``vidbrief status`` and operators.

    <prefix>:job:<id>:webhook   one JSON entry per attempt (time, attempt, outcome, status or
                                error, duration), expiring with the job
    <prefix>:job:<id>           summary: webhook_status, webhook_attempts, webhook_last
    <prefix>:dead + vidbrief.webhook.failed   when the webhook cannot be delivered

A webhook URL's path often carries the receiver's token: errors and events keep only its origin.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import redis

from ingest.dead_letters import cap_fields
from ingest.events import EventType, build_event
from ingest.models import field_args
from ingest.names import DELIVERIES_FIELD, EVENT_FIELD, REASON_FIELD
from ingest.redact import redact
from ingest.settings import Settings

log = logging.getLogger("vidbrief.webhooks")

WEBHOOK_SOURCE = "vidbrief/webhooks"  # CloudEvents source of the events published here
ENQUEUE_ATTEMPT = 0  # attempt number of an entry decided at enqueue time: nothing was sent

# HSET only on a job hash that exists: a summary must not resurrect an expired job as a hash
# without a status (JobState would not parse it).
_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 0
"""


class WebhookStatus(StrEnum):
    """``webhook_status`` in the job hash."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DISABLED = "disabled"


class AttemptOutcome(StrEnum):
    """``outcome`` of one entry in the attempt log."""

    DELIVERED = "delivered"
    RETRY = "retry"  # failed, another attempt is scheduled
    POSTPONED = "postponed"  # failed with a Retry-After longer than the next interval
    FAILED = "failed"  # failed, no attempt follows
    DISABLED = "disabled"  # 410 Gone
    LOST = "lost"  # the attempt's worker or work horse died, or rq's job timeout fired
    REFUSED = "refused"  # the address policy refused the URL at enqueue time
    SKIPPED = "skipped"  # the URL is disabled (an earlier 410)


@dataclass(frozen=True)
class Delivery:
    """What one webhook is: the rq job's only argument (as a dict)."""

    job_id: str
    url: str
    webhook_id: str
    payload: str  # the CloudEvent JSON, sent byte for byte as signed


@dataclass(frozen=True)
class Response:
    """What one POST produced: a status (and Retry-After) or an error."""

    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    refused: bool = False  # the address policy said no: trying again cannot help

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else str(self.error)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def entry(
    attempt: int,
    outcome: AttemptOutcome,
    response: Response | None = None,
    *,
    error: str | None = None,
    at: str | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """One attempt-log entry (JSON): time, attempt, outcome, status or error, duration."""
    record: dict[str, Any] = {"time": at or utc_now(), "attempt": attempt, "outcome": outcome}
    if response is not None:
        record["status"] = response.status
        error = error or response.error
        if response.retry_after_s is not None:
            record["retry_after_s"] = response.retry_after_s
    if error:
        record["error"] = error
    if started is not None:
        record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    return record


def log_attempt(
    conn: redis.Redis,
    settings: Settings,
    delivery: Delivery,
    record: dict[str, Any],
    status: WebhookStatus,
) -> None:
    """Append ``record`` to the job's attempt log and update the job hash's summary."""
    if "error" in record:
        record["error"] = scrub(record["error"], delivery.url)
    key = settings.names.webhook_log(delivery.job_id)
    with conn.pipeline(transaction=True) as pipe:
        pipe.rpush(key, json.dumps(record, separators=(",", ":")))
        pipe.expire(key, settings.job_ttl_seconds)
        pipe.execute()
    last = Response(status=record.get("status"), error=record.get("error")).describe()
    summarise(conn, settings, delivery, status, attempts=record["attempt"], last=last)
    log.info(
        "webhook %s job %s attempt %s: %s %s",
        delivery.webhook_id,
        delivery.job_id,
        record["attempt"],
        record["outcome"],
        last,
    )


def summarise(
    conn: redis.Redis,
    settings: Settings,
    delivery: Delivery,
    status: WebhookStatus,
    *,
    attempts: int,
    last: str,
) -> None:
    """The job hash's webhook fields, for ``vidbrief status``."""
    fields = {
        "webhook_status": str(status),
        "webhook_id": delivery.webhook_id,
        "webhook_attempts": str(attempts),
        "webhook_last": last,
        "webhook_updated_at": str(time.time()),
    }
    conn.eval(_HSET_IF_EXISTS, 1, settings.names.job(delivery.job_id), *field_args(fields))


def dead_letter(
    conn: redis.Redis, settings: Settings, delivery: Delivery, reason: str, deliveries: int
) -> None:
    """A dead letter and a ``vidbrief.webhook.failed`` event (its id is stable per webhook)."""
    data = {
        "webhook_id": delivery.webhook_id,
        "webhook_origin": origin(delivery.url),  # not the URL: its path may be a secret
        REASON_FIELD: scrub(reason, delivery.url),
        DELIVERIES_FIELD: deliveries,
    }
    fact = f"webhook-failed/{delivery.webhook_id}"
    event = build_event(EventType.WEBHOOK_FAILED, delivery.job_id, WEBHOOK_SOURCE, fact, data)
    dead = {
        "kind": "webhook",
        "job_id": delivery.job_id,
        "webhook_url": delivery.url,
        "webhook_id": delivery.webhook_id,
        REASON_FIELD: data[REASON_FIELD],
        DELIVERIES_FIELD: str(deliveries),
        EVENT_FIELD: delivery.payload,
    }
    with conn.pipeline(transaction=True) as pipe:
        pipe.xadd(settings.names.dead, cap_fields(dead, settings.dead_letter_field_bytes))
        pipe.xadd(
            settings.names.events,
            {EVENT_FIELD: event},
            maxlen=settings.events_maxlen,
            approximate=True,
        )
        pipe.execute()
    log.warning(
        "webhook %s job %s dead-lettered after %d attempt(s): %s",
        delivery.webhook_id,
        delivery.job_id,
        deliveries,
        data[REASON_FIELD],
    )


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def scrub(text: str, url: str) -> str:
    """``text`` with the URL cut down to its origin (webhook paths often carry tokens), and
    anything else that looks like a secret masked (ingest/redact.py)."""
    return redact(text.replace(url, origin(url) + "/…"))
