"""Queueing a completion webhook: a job's terminal CloudEvent, to be POSTed to its ``webhook_url``.

    bridge ─ enqueue_webhook() ─▶ rq queue <prefix>-webhooks ─▶ worker.py ─ deliver.py ─▶ receiver

The ``webhook-id`` (also the rq job id) derives from the CloudEvent id, so a terminal event
published again (a bridge restart) is queued once: a claim key guards it, and rq's unique job
id backs the claim. A URL disabled by an earlier 410, or one the address policy refuses, is
not queued: the refusal is logged, dead-lettered and published as ``vidbrief.webhook.failed``.

The retry intervals come from ``VIDBRIEF_WEBHOOK_BACKOFF_SECONDS``. rq stores them as a fixed
list with the job, so the jitter (±``JITTER_FRACTION``) is drawn here, once: webhooks that
failed together during a receiver's outage do not all come back in the same second. rq's
scheduler moves due retries to the queue on a 1-second tick, so intervals below a second
effectively round up to it.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Sequence
from dataclasses import asdict
from hashlib import sha256

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

from ingest.errors import UnresolvableHost, UnsafeURL
from ingest.events import parse_event
from ingest.settings import Settings
from ingest.urlsafety import AddressPolicy
from webhooks.deliver import deliver, on_delivery_failure
from webhooks.records import (
    ENQUEUE_ATTEMPT,
    AttemptOutcome,
    Delivery,
    WebhookStatus,
    dead_letter,
    entry,
    log_attempt,
    summarise,
)

WEBHOOK_ID_PREFIX = "msg_"  # the Standard Webhooks convention for message ids
JITTER_FRACTION = 0.2  # each backoff step is drawn from [0.8, 1.2] × its configured length
JOB_TIMEOUT_MARGIN_S = 5.0  # rq kills an attempt this long after the HTTP timeout would have
DISABLED_REASON = "URL disabled after HTTP 410 Gone"


def webhook_id_for(event_id: str) -> str:
    """The ``webhook-id`` (and rq job id) of an event: stable, and valid as an rq job id."""
    return WEBHOOK_ID_PREFIX + sha256(event_id.encode()).hexdigest()[:32]


def jittered_intervals(backoff: Sequence[float], rng: random.Random | None = None) -> list[float]:
    """The retry intervals for one webhook, each step jittered by ±JITTER_FRACTION."""
    draw = (rng or random).uniform
    return [round(step * draw(1 - JITTER_FRACTION, 1 + JITTER_FRACTION), 3) for step in backoff]


def enqueue_webhook(
    redis_client: redis.Redis,
    settings: Settings,
    job_id: str,
    webhook_url: str,
    event_json: bytes | str,
) -> str | None:
    """Queue the delivery of a terminal event to ``webhook_url``; return the rq job id.

    None when nothing was queued: the event was handled before (a re-published terminal event),
    the URL is disabled (an earlier 410), or the address policy refuses it (then the refusal is
    logged, dead-lettered and published as ``vidbrief.webhook.failed``).
    """
    payload = event_json.decode() if isinstance(event_json, bytes) else event_json
    delivery = Delivery(job_id, webhook_url, webhook_id_for(parse_event(payload).id), payload)
    claim = settings.names.webhook_claim(delivery.webhook_id)
    if not redis_client.set(claim, "1", nx=True, ex=settings.job_ttl_seconds):
        return None
    try:
        if _refused_at_enqueue(redis_client, settings, delivery):
            return None
        return _enqueue(redis_client, settings, delivery)
    except BaseException:
        redis_client.delete(claim)  # nothing was queued: a re-published event may try again
        raise


def _refused_at_enqueue(conn: redis.Redis, settings: Settings, delivery: Delivery) -> bool:
    """Log, dead-letter and publish a URL that is disabled or refused; True if so."""
    if conn.sismember(settings.names.webhook_disabled(), delivery.url):
        record = entry(ENQUEUE_ATTEMPT, AttemptOutcome.SKIPPED, error=DISABLED_REASON)
        log_attempt(conn, settings, delivery, record, WebhookStatus.DISABLED)
        return True
    try:
        AddressPolicy.create(allow_private=settings.allow_private_urls).check_url(delivery.url)
    except UnresolvableHost:
        return False  # DNS may come back: every attempt checks again, and retries
    except UnsafeURL as e:
        record = entry(ENQUEUE_ATTEMPT, AttemptOutcome.REFUSED, error=str(e))
        log_attempt(conn, settings, delivery, record, WebhookStatus.FAILED)
        dead_letter(conn, settings, delivery, f"refused: {e}", deliveries=0)
        return True
    return False


def _enqueue(conn: redis.Redis, settings: Settings, delivery: Delivery) -> str | None:
    intervals = jittered_intervals(settings.webhook_backoff_seconds)
    queue = Queue(settings.names.webhook_queue, connection=rq_connection(conn))
    try:
        job = queue.enqueue_call(
            deliver,
            args=(asdict(delivery),),
            job_id=delivery.webhook_id,
            timeout=math.ceil(settings.webhook_timeout_seconds + JOB_TIMEOUT_MARGIN_S),
            result_ttl=settings.job_ttl_seconds,
            failure_ttl=settings.job_ttl_seconds,
            # rq logs and shows descriptions; the default one is the call with its arguments
            description=f"webhook {delivery.webhook_id} for job {delivery.job_id}",
            retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
            on_failure=on_delivery_failure,
            unique=True,
        )
    except DuplicateJobError:
        return None  # the rq job outlived its claim: it is this very delivery
    summarise(conn, settings, delivery, WebhookStatus.PENDING, attempts=0, last="queued")
    return job.id


_raw_twins: weakref.WeakKeyDictionary[redis.Redis, redis.Redis] = weakref.WeakKeyDictionary()


def rq_connection(conn: redis.Redis) -> redis.Redis:
    """``conn`` as rq needs it: rq parses raw bytes, so a decoding client gets a raw twin
    (one per client, kept as long as the client: the bridge enqueues on every finished job)."""
    pool = conn.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return conn
    twin = _raw_twins.get(conn)
    if twin is None:
        kwargs = {**pool.connection_kwargs, "decode_responses": False}
        twin = redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **kwargs))
        _raw_twins[conn] = twin
    return twin
