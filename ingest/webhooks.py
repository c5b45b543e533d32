"""Completion webhooks: a job's terminal CloudEvent, POSTed signed to its ``webhook_url``.

    bridge ─ enqueue_webhook() ─▶ rq queue <prefix>-webhooks ─▶ run_worker() ─ deliver() ─▶ receiver
                                                                     │
        <prefix>:job:<id>:webhook   one JSON entry per attempt (time, attempt, status or error, ms)
        <prefix>:job:<id>           summary: webhook_status, webhook_attempts, webhook_last
        <prefix>:dead + vidbrief.webhook.failed   when the webhook cannot be delivered

Signing is Standard Webhooks, done by the official ``standardwebhooks`` library: headers
``webhook-id`` (derived from the CloudEvent id, so the same on every attempt and for a
re-published event), ``webhook-timestamp`` (of this attempt) and ``webhook-signature``.
Receivers check a delivery with :func:`verify_webhook`.

Retries are rq's: ``Retry(max=len(backoff), interval=[…])`` from
``VIDBRIEF_WEBHOOK_BACKOFF_SECONDS``. rq's intervals are a fixed list stored with the job, so the
jitter (±``JITTER_FRACTION``) is drawn once, at enqueue time: webhooks that failed together during
a receiver's outage do not all come back in the same second. rq's scheduler moves due retries to
the queue on a 1-second tick, so intervals below a second effectively round up to it.

One attempt ends as:

    2xx                 delivered
    410 Gone            the URL joins the disabled set: no more attempts, now or for later jobs
    429, 5xx            retry: deliver() raises and rq schedules the next attempt. A Retry-After
                        longer than that next interval postpones instead: deliver() returns rq's
                        ``Retry`` with the asked delay (rq reschedules the same job, same
                        webhook-id) and takes one retry off ``retries_left`` itself, so waiting for
                        the receiver costs what a retry costs and the attempts stay bounded.
    network error,      retry
    timeout, no DNS
    other 3xx/4xx       permanent failure (redirects are not followed): no retry
    refused address     permanent failure (checked at enqueue, before each POST and on connect)

After the last attempt fails (rq's failure callback runs before rq's retry bookkeeping, so it
sees ``retries_left == 0``) or on a permanent failure: a dead letter in ``<prefix>:dead`` (job_id,
webhook_url, reason, deliveries, webhook_id, event) and a ``vidbrief.webhook.failed`` event.
A worker that dies mid-delivery is covered by :class:`WebhookWorker`.

No Ray, no torch: downstream consumers import this module for :func:`verify_webhook`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
from rq import Queue, Retry, Worker, get_current_job
from rq.exceptions import AbandonedJobError, DuplicateJobError
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from standardwebhooks import Webhook, WebhookVerificationError

from ingest.connect import redis_url
from ingest.errors import ConfigError, UnsafeURL, VidbriefError
from ingest.events import EventType, build_event, parse_event
from ingest.models import field_args
from ingest.names import EVENT_FIELD
from ingest.settings import Settings, get_settings
from ingest.urlsafety import AddressPolicy, UnresolvableHost

__all__ = [
    "Delivery",
    "Outcome",
    "WebhookAttemptFailed",
    "WebhookRejected",
    "WebhookStatus",
    "WebhookWorker",
    "WorkerTuning",
    "deliver",
    "enqueue_webhook",
    "jittered_intervals",
    "load_delivery",
    "retry_after_seconds",
    "run_worker",
    "verify_webhook",
    "verify_webhook_files",
    "webhook_id_for",
]

log = logging.getLogger("vidbrief.webhooks")

WEBHOOK_ID_PREFIX = "msg_"  # the Standard Webhooks convention for message ids
JITTER_FRACTION = 0.2  # each backoff step is drawn from [0.8, 1.2] × its configured length
MAX_RETRY_AFTER_S = 3600.0  # a receiver cannot park a delivery for longer than this
JOB_TIMEOUT_MARGIN_S = 5.0  # rq kills an attempt this long after the HTTP timeout would have
LIBRARY_TOLERANCE_S = 300  # standardwebhooks' fixed timestamp window (5 minutes)
RQ_SCHEDULER_LOCK_TTL_S = 61  # rq's RQScheduler sets its lock to interval (1 s) + 60 s
WEBHOOK_SOURCE = "vidbrief/webhooks"  # CloudEvents source of the events published here
USER_AGENT = "vidbrief-webhooks/1"
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


class Outcome(StrEnum):
    """``outcome`` of one entry in the attempt log."""

    DELIVERED = "delivered"
    RETRY = "retry"  # failed, another attempt is scheduled
    POSTPONED = "postponed"  # failed with a Retry-After longer than the next interval
    FAILED = "failed"  # failed, no attempt follows
    DISABLED = "disabled"  # 410 Gone
    LOST = "lost"  # the attempt's worker or work horse died, or rq's job timeout fired
    REFUSED = "refused"  # the address policy refused the URL at enqueue time
    SKIPPED = "skipped"  # the URL is disabled (an earlier 410)


class WebhookAttemptFailed(VidbriefError):
    """Raised inside the rq job so that rq schedules the next attempt."""


class WebhookRejected(VidbriefError):
    """A received delivery did not verify (forged or altered body, wrong secret, stale)."""


@dataclass(frozen=True)
class Delivery:
    """What one webhook is: the rq job's only argument (as a dict)."""

    job_id: str
    url: str
    webhook_id: str
    payload: str  # the CloudEvent JSON, sent byte for byte as signed


@dataclass(frozen=True)
class _Response:
    """What one POST produced: a status (and Retry-After) or an error."""

    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    refused: bool = False  # the address policy said no: trying again cannot help


# ----------------------------------------------------------------------------- enqueue side
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
        entry = _entry(ENQUEUE_ATTEMPT, Outcome.SKIPPED, error="URL disabled after HTTP 410 Gone")
        _log_attempt(conn, settings, delivery, entry, WebhookStatus.DISABLED)
        return True
    try:
        AddressPolicy.create(allow_private=settings.allow_private_urls).check_url(delivery.url)
    except UnresolvableHost:
        return False  # DNS may come back: every attempt checks again, and retries
    except UnsafeURL as e:
        entry = _entry(ENQUEUE_ATTEMPT, Outcome.REFUSED, error=str(e))
        _log_attempt(conn, settings, delivery, entry, WebhookStatus.FAILED)
        _dead_letter(conn, settings, delivery, f"refused: {e}", deliveries=0)
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
    _summarise(conn, settings, delivery, WebhookStatus.PENDING, attempts=0, last="queued")
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


# ----------------------------------------------------------------------------- the rq job
_settings: Settings | None = None


def configure_worker(settings: Settings) -> None:
    """The settings deliver() and the callbacks use in this process (and its work horses)."""
    global _settings
    _settings = settings


def worker_settings() -> Settings:
    """The configured settings, else the environment's (a worker started by plain ``rq``)."""
    if _settings is None:
        configure_worker(get_settings())
    assert _settings is not None
    return _settings


def deliver(delivery: dict[str, str]) -> Retry | None:
    """The rq job: one signed POST of ``delivery``. Raises so that rq retries it."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("deliver() runs inside an rq worker (vidbrief webhook-worker)")
    settings = worker_settings()
    target = Delivery(**delivery)
    attempt, started = attempt_number(job), time.monotonic()
    at = _utc_now()
    response = _try_post(target, settings)
    outcome = _classify(response)
    entry = _entry(attempt, outcome, response, at=at, started=started)
    return _conclude(job, settings, target, outcome, entry, response)


def attempt_number(job: Job) -> int:
    """1 for the first attempt: rq counts ``retries_left`` down from ``len(retry_intervals)``."""
    return len(job.retry_intervals or []) - (job.retries_left or 0) + 1


def _try_post(delivery: Delivery, settings: Settings) -> _Response:
    try:
        return _post(delivery, settings)
    except UnresolvableHost as e:
        return _Response(error=str(e))
    except UnsafeURL as e:
        return _Response(error=str(e), refused=True)
    except httpx.HTTPError as e:
        return _Response(error=f"{type(e).__name__}: {e}".rstrip(": "))


def _post(delivery: Delivery, settings: Settings) -> _Response:
    """Sign and POST; the status is all that is read (a receiver's body is not downloaded)."""
    policy = AddressPolicy.create(allow_private=settings.allow_private_urls)
    policy.check_url(delivery.url)  # the name may point elsewhere than at enqueue time
    headers = _signed_headers(delivery, settings)
    # trust_env=False: no proxy from the environment, the address policy sees the real peer.
    with (
        httpx.Client(
            timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False
        ) as client,
        client.stream(
            "POST",
            delivery.url,
            content=delivery.payload.encode(),
            headers=headers,
            extensions={"trace": _connect_guard(policy, delivery.url)},
        ) as response,
    ):
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return _Response(status=response.status_code, retry_after_s=retry_after)


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


def _connect_guard(policy: AddressPolicy, url: str) -> Callable[[str, dict[str, Any]], None]:
    """An httpcore trace hook that checks the address the socket really connected to.

    It runs after the TCP connect and before a byte is sent: a name that resolved to a public
    address for check_url() and to an inside one a moment later (DNS rebinding) is caught here.
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


def _classify(response: _Response) -> Outcome:
    if response.refused:
        return Outcome.FAILED
    status = response.status
    if status is None:
        return Outcome.RETRY  # network error, timeout, DNS
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.DISABLED
    if status == 429 or status >= 500:
        return Outcome.RETRY
    return Outcome.FAILED  # 3xx (not followed) and the other 4xx: sending again won't help


def _conclude(
    job: Job,
    settings: Settings,
    delivery: Delivery,
    outcome: Outcome,
    entry: dict[str, Any],
    response: _Response,
) -> Retry | None:
    conn = job.connection
    if outcome is Outcome.DELIVERED:
        _log_attempt(conn, settings, delivery, entry, WebhookStatus.DELIVERED)
    elif outcome is Outcome.DISABLED:
        conn.sadd(settings.names.webhook_disabled(), delivery.url)
        _log_attempt(conn, settings, delivery, entry, WebhookStatus.DISABLED)
    elif outcome is Outcome.FAILED:
        _log_attempt(conn, settings, delivery, entry, WebhookStatus.FAILED)
        _dead_letter(conn, settings, delivery, _describe(response), entry["attempt"])
    else:
        return _retry(job, settings, delivery, entry, response)
    return None


def _retry(
    job: Job, settings: Settings, delivery: Delivery, entry: dict[str, Any], response: _Response
) -> Retry:
    """Postpone (Retry-After) or raise for rq's retry; the last attempt raises too."""
    postponement = _postponement(job, response.retry_after_s)
    if postponement is not None:
        entry["outcome"] = Outcome.POSTPONED
    elif not job.retries_left:
        entry["outcome"] = Outcome.FAILED  # on_delivery_failure() dead-letters it
    status = WebhookStatus.PENDING if job.retries_left or postponement else WebhookStatus.FAILED
    _log_attempt(job.connection, settings, delivery, entry, status)
    if postponement is None:
        raise WebhookAttemptFailed(_describe(response))
    return postponement


def _postponement(job: Job, retry_after_s: float | None) -> Retry | None:
    """rq's Retry when the receiver asks to wait longer than our next interval, else None."""
    if not job.retries_left or retry_after_s is None:
        return None
    if retry_after_s <= job.get_retry_interval():
        return None  # our own schedule waits long enough
    # A returned Retry reschedules this job without touching retries_left; count it here
    # (rq saves the job when it schedules it) so a postponement costs one retry.
    job.retries_left -= 1
    # rq's scheduled registry keeps whole seconds (it truncates): one more keeps us from
    # coming back before the time the receiver asked for.
    delay_s = math.ceil(retry_after_s) + 1
    return Retry(max=(job.number_of_retries or 0) + 1, interval=[delay_s])


def on_delivery_failure(
    job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any
) -> None:
    """rq's failure callback: record attempts deliver() could not, dead-letter after the last.

    rq calls it for an exception in deliver(), for its job timeout, and from a worker's registry
    cleanup for an attempt whose worker died (AbandonedJobError) — each time before it decides
    about the retry, so ``retries_left`` is still the count before this failure.
    """
    settings = worker_settings()
    delivery = Delivery(**job.args[0])
    reason = _describe_exception(exc_value)
    if not isinstance(exc_value, WebhookAttemptFailed):  # deliver() logged its own failures
        _log_lost_attempt(connection, settings, delivery, job, reason)
    if not job.retries_left:
        _dead_letter(connection, settings, delivery, reason, attempt_number(job))


def on_horse_killed(job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
    """rq's work-horse-killed handler: the attempt's process died (OOM, a signal)."""
    settings = worker_settings()
    delivery = Delivery(**job.args[0])
    reason = f"work horse died (waitpid status {ret_val}) during the attempt"
    _log_lost_attempt(job.connection, settings, delivery, job, reason)
    if not job.retries_left:
        _dead_letter(job.connection, settings, delivery, reason, attempt_number(job))


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, WebhookAttemptFailed):
        return str(exc)  # already says what happened ("HTTP 500", "ConnectError: …")
    if isinstance(exc, AbandonedJobError):
        return "the worker died during the attempt (rq: abandoned job)"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _log_lost_attempt(
    conn: redis.Redis, settings: Settings, delivery: Delivery, job: Job, reason: str
) -> None:
    attempt = attempt_number(job)
    outcome = Outcome.LOST if job.retries_left else Outcome.FAILED
    entry = _entry(attempt, outcome, error=reason)
    status = WebhookStatus.PENDING if job.retries_left else WebhookStatus.FAILED
    _log_attempt(conn, settings, delivery, entry, status)


# ----------------------------------------------------------------------------- records
def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _entry(
    attempt: int,
    outcome: Outcome,
    response: _Response | None = None,
    *,
    error: str | None = None,
    at: str | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """One attempt-log entry (JSON): time, attempt, outcome, status or error, duration."""
    entry: dict[str, Any] = {"time": at or _utc_now(), "attempt": attempt, "outcome": outcome}
    if response is not None:
        entry["status"] = response.status
        error = error or response.error
        if response.retry_after_s is not None:
            entry["retry_after_s"] = response.retry_after_s
    if error:
        entry["error"] = error
    if started is not None:
        entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    return entry


def _describe(response: _Response) -> str:
    return f"HTTP {response.status}" if response.status is not None else str(response.error)


def _log_attempt(
    conn: redis.Redis,
    settings: Settings,
    delivery: Delivery,
    entry: dict[str, Any],
    status: WebhookStatus,
) -> None:
    if "error" in entry:
        entry["error"] = _scrub(entry["error"], delivery.url)
    key = settings.names.webhook_log(delivery.job_id)
    with conn.pipeline(transaction=True) as pipe:
        pipe.rpush(key, json.dumps(entry, separators=(",", ":")))
        pipe.expire(key, settings.job_ttl_seconds)
        pipe.execute()
    last = _describe(_Response(status=entry.get("status"), error=entry.get("error")))
    _summarise(conn, settings, delivery, status, attempts=entry["attempt"], last=last)
    log.info(
        "webhook %s job %s attempt %s: %s %s",
        delivery.webhook_id,
        delivery.job_id,
        entry["attempt"],
        entry["outcome"],
        last,
    )


def _summarise(
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


def _dead_letter(
    conn: redis.Redis, settings: Settings, delivery: Delivery, reason: str, deliveries: int
) -> None:
    """A dead letter and a ``vidbrief.webhook.failed`` event (its id is stable per webhook)."""
    data = {
        "webhook_id": delivery.webhook_id,
        "webhook_origin": _origin(delivery.url),  # not the URL: its path may be a secret
        "reason": _scrub(reason, delivery.url),
        "deliveries": deliveries,
    }
    fact = f"webhook-failed/{delivery.webhook_id}"
    event = build_event(EventType.WEBHOOK_FAILED, delivery.job_id, WEBHOOK_SOURCE, fact, data)
    dead = {
        "kind": "webhook",
        "job_id": delivery.job_id,
        "webhook_url": delivery.url,
        "webhook_id": delivery.webhook_id,
        "reason": reason,
        "deliveries": str(deliveries),
        "event": delivery.payload,
    }
    with conn.pipeline(transaction=True) as pipe:
        pipe.xadd(settings.names.dead, dead)
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
        data["reason"],
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def _scrub(text: str, url: str) -> str:
    """``text`` with the URL cut down to its origin (webhook paths often carry tokens)."""
    return text.replace(url, _origin(url) + "/…")


# ----------------------------------------------------------------------------- the worker
@dataclass(frozen=True)
class WorkerTuning:
    """How quickly the webhook worker notices trouble (rq's defaults suit hour-long jobs)."""

    job_monitoring_interval_s: int = 5  # a running attempt's heartbeat period
    heartbeat_grace_s: int = 10  # rq uses 60 s: a heartbeat this late means the worker is gone
    maintenance_interval_s: int = 5  # registry cleanup (finds abandoned attempts)
    worker_ttl_s: int = 20  # rq blocks on the queue for worker_ttl - 15 s between maintenance
    stale_scheduler_lock_s: int = 10  # rq refreshes a live scheduler's lock every second


class WebhookWorker(Worker):
    """rq's forking Worker, tuned so that a delivery cut off by a crash resumes in seconds.

    rq 3.0 finds an attempt whose worker died (SIGKILL, OOM, lost machine) only through the
    queue's StartedJobRegistry: every running job has the score "last heartbeat + TTL", and a
    worker's maintenance (``clean_registries``: at start, then every ``maintenance_interval``)
    passes expired ones to the job's failure callback as AbandonedJobError and then retries them
    while ``retries_left`` lasts. Two defaults make that take minutes: the TTL is the monitoring
    interval plus a fixed 60 s, and the killed worker's scheduler leaves its lock for 61 s, during
    which nobody moves the scheduled retry to the queue. Here the grace is
    ``heartbeat_grace_s`` (an attempt is bounded by its job timeout; a heartbeat is due every
    ``job_monitoring_interval_s``), and a scheduler lock nobody refreshed for
    ``stale_scheduler_lock_s`` is released (token-checked, rq's own script) so this worker's
    scheduler takes over; a scheduler that was merely slow notices the takeover at its next
    heartbeat and stops scheduling (rq's lost-lock handling). With the defaults the delivery is
    retried 15–25 s after the crash, once a worker runs.
    """

    tuning: WorkerTuning = WorkerTuning()

    @classmethod
    def for_settings(cls, settings: Settings, tuning: WorkerTuning | None = None) -> WebhookWorker:
        tuning = tuning or WorkerTuning()
        worker = cls(
            [settings.names.webhook_queue],
            connection=redis.Redis.from_url(redis_url(settings), health_check_interval=30),
            worker_ttl=tuning.worker_ttl_s,
            maintenance_interval=tuning.maintenance_interval_s,
            job_monitoring_interval=tuning.job_monitoring_interval_s,
            log_job_description=False,
            work_horse_killed_handler=on_horse_killed,
        )
        worker.tuning = tuning
        return worker

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        monitored = float(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            monitored = min(job.timeout - working_time, monitored)
        return max(int(monitored), 1) + self.tuning.heartbeat_grace_s

    def start_scheduler(self, *args: Any, **kwargs: Any) -> None:
        self._release_stale_scheduler_locks()
        super().start_scheduler(*args, **kwargs)

    def run_maintenance_tasks(self) -> None:
        self._release_stale_scheduler_locks()
        super().run_maintenance_tasks()

    def _release_stale_scheduler_locks(self) -> None:
        for name in self.queue_names():
            release_stale_scheduler_lock(self.connection, name, self.tuning.stale_scheduler_lock_s)


def release_stale_scheduler_lock(conn: redis.Redis, queue_name: str, stale_after_s: float) -> bool:
    """Release ``queue_name``'s rq scheduler lock if its owner stopped refreshing it."""
    key = RQScheduler.get_locking_key(queue_name)
    with conn.pipeline(transaction=True) as pipe:
        owner, ttl = pipe.get(key).ttl(key).execute()
    if owner is None or ttl < 0 or RQ_SCHEDULER_LOCK_TTL_S - ttl < stale_after_s:
        return False
    token = owner.decode() if isinstance(owner, bytes) else owner
    released = release_lock(conn, key, token)
    if released:
        log.warning(
            "released scheduler lock of %s: not refreshed for %d s (its worker died)",
            queue_name,
            RQ_SCHEDULER_LOCK_TTL_S - ttl,
        )
    return released


def run_worker(settings: Settings, tuning: WorkerTuning | None = None) -> int:
    """Deliver webhooks until SIGTERM or SIGINT (rq's warm shutdown); the exit status.

    A long-lived rq worker with its scheduler (retries with intervals need one), on the queue
    ``<prefix>-webhooks``. rq needs the main thread for its signals: run it as its own process
    (``vidbrief webhook-worker`` or ``python -m ingest.webhooks``).
    """
    if settings.webhook_secret is None:
        raise ConfigError(
            "VIDBRIEF_WEBHOOK_SECRET is not set: set it to the whsec_… secret receivers verify with"
        )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every request with its full URL; webhook paths often carry the receiver's token
    logging.getLogger("httpx").setLevel(logging.WARNING)
    configure_worker(settings)
    WebhookWorker.for_settings(settings, tuning).work(with_scheduler=True)
    return 0


# ----------------------------------------------------------------------------- receivers
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
    _check_age(lowered.get("webhook-timestamp"), tolerance_s)
    try:
        webhook = Webhook(secret)
    except Exception as e:  # the library raises several types for a malformed secret
        raise ConfigError("the webhook secret is not a whsec_… base64 secret") from e
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
    payload = sys.stdin.buffer.read() if str(body) == "-" else Path(body).read_bytes()
    lines = list(headers)
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


def main() -> int:
    """``python -m ingest.webhooks``: the webhook worker, configured from the environment."""
    try:
        return run_worker(get_settings())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: rq imports deliver() and the
    # callbacks as ``ingest.webhooks.*``, and they read the settings configured there.
    from ingest.webhooks import main as _main

    raise SystemExit(_main())
