"""The webhook worker: a long-lived rq worker with its scheduler, on ``<prefix>-webhooks``.

rq needs the main thread for its signals (it does not run inside a threaded or async Ray
actor), so the worker is a process of its own: ``vidbrief webhook-worker`` or
``python -m webhooks``. SIGTERM or SIGINT stops it after the attempt in progress (rq's warm
shutdown).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import redis
from rq import Worker
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.scripts import release_lock

from ingest.connect import redis_url
from ingest.errors import ConfigError
from ingest.settings import Settings, get_settings
from webhooks.deliver import configure_worker, on_horse_killed

log = logging.getLogger("vidbrief.webhooks")

RQ_SCHEDULER_LOCK_TTL_S = 61  # rq's RQScheduler sets its lock to interval (1 s) + 60 s


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
    (``vidbrief webhook-worker`` or ``python -m webhooks``).
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


def main() -> int:
    """``python -m webhooks``: the webhook worker, configured from the environment."""
    try:
        return run_worker(get_settings())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
