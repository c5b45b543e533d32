"""The rq job that delivers one webhook, and rq's callbacks around it.

Retries are rq's: ``Retry(max=len(backoff), interval=[…])``, fixed at enqueue time
(enqueue.py). A 429 or 5xx raises :class:`WebhookAttemptFailed`, so rq schedules the next
attempt. A ``Retry-After`` longer than that next interval postpones instead: :func:`deliver`
returns rq's ``Retry`` with the asked delay (rq reschedules the same job, same webhook-id) and
takes one retry off ``retries_left`` itself, so waiting for the receiver costs what a retry
costs and the attempts stay bounded.

After the last attempt fails (rq's failure callback runs before rq's retry bookkeeping, so it
sees ``retries_left == 0``) or on a permanent failure: a dead letter and a
``vidbrief.webhook.failed`` event (records.py). An attempt whose worker or work horse died is
recorded as lost by the callbacks here; worker.py makes rq notice such a death in seconds.
"""

from __future__ import annotations

import math
import time
from typing import Any

import redis
from rq import Retry, get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job

from ingest.errors import WebhookAttemptFailed
from ingest.settings import Settings, get_settings
from webhooks.records import (
    AttemptOutcome,
    Delivery,
    Response,
    WebhookStatus,
    dead_letter,
    entry,
    log_attempt,
    utc_now,
)
from webhooks.send import classify, send

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
    at = utc_now()
    response = send(target, settings)
    outcome = classify(response)
    record = entry(attempt, outcome, response, at=at, started=started)
    return _conclude(job, settings, target, outcome, record, response)


def attempt_number(job: Job) -> int:
    """1 for the first attempt: rq counts ``retries_left`` down from ``len(retry_intervals)``."""
    return len(job.retry_intervals or []) - (job.retries_left or 0) + 1


def _conclude(
    job: Job,
    settings: Settings,
    delivery: Delivery,
    outcome: AttemptOutcome,
    record: dict[str, Any],
    response: Response,
) -> Retry | None:
    conn = job.connection
    if outcome is AttemptOutcome.DELIVERED:
        log_attempt(conn, settings, delivery, record, WebhookStatus.DELIVERED)
    elif outcome is AttemptOutcome.DISABLED:
        conn.sadd(settings.names.webhook_disabled(), delivery.url)
        log_attempt(conn, settings, delivery, record, WebhookStatus.DISABLED)
    elif outcome is AttemptOutcome.FAILED:
        log_attempt(conn, settings, delivery, record, WebhookStatus.FAILED)
        dead_letter(conn, settings, delivery, response.describe(), record["attempt"])
    else:
        return _retry(job, settings, delivery, record, response)
    return None


def _retry(
    job: Job, settings: Settings, delivery: Delivery, record: dict[str, Any], response: Response
) -> Retry:
    """Postpone (Retry-After) or raise for rq's retry; the last attempt raises too."""
    postponement = _postponement(job, response.retry_after_s)
    if postponement is not None:
        record["outcome"] = AttemptOutcome.POSTPONED
    elif not job.retries_left:
        record["outcome"] = AttemptOutcome.FAILED  # on_delivery_failure() dead-letters it
    status = WebhookStatus.PENDING if job.retries_left or postponement else WebhookStatus.FAILED
    log_attempt(job.connection, settings, delivery, record, status)
    if postponement is None:
        raise WebhookAttemptFailed(response.describe())
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
        dead_letter(connection, settings, delivery, reason, attempt_number(job))


def on_horse_killed(job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
    """rq's work-horse-killed handler: the attempt's process died (OOM, a signal)."""
    settings = worker_settings()
    delivery = Delivery(**job.args[0])
    reason = f"work horse died (waitpid status {ret_val}) during the attempt"
    _log_lost_attempt(job.connection, settings, delivery, job, reason)
    if not job.retries_left:
        dead_letter(job.connection, settings, delivery, reason, attempt_number(job))


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
    outcome = AttemptOutcome.LOST if job.retries_left else AttemptOutcome.FAILED
    record = entry(attempt, outcome, error=reason)
    status = WebhookStatus.PENDING if job.retries_left else WebhookStatus.FAILED
    log_attempt(conn, settings, delivery, record, status)
