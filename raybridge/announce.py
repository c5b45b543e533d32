"""What follows a stored outcome: the completion webhook (queued for rq) and the dataset row.

Both run after the job hash, the terminal event and the XACK are committed, so neither can
lose or repeat a job; a failure here is logged and never changes the job's outcome. The
webhook worker delivers (and retries) on its own; the dataset is a record for analytics.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis
from pydantic import SecretStr

from ingest.connect import as_secret
from ingest.models import JobState, JobStatus
from ingest.redact import error_summary
from ingest.settings import Settings
from raybridge.outcome import Outcome

log = logging.getLogger(__name__)

DATASET_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED)


class Announcer:
    """Queues webhooks and appends dataset rows for finished jobs (off the event loop)."""

    def __init__(self, settings: Settings, redis_url: str | SecretStr) -> None:
        self.settings = settings
        self.redis_url = as_secret(redis_url)
        self._sync: redis.Redis | None = None

    async def finished(self, state: JobState, outcome: Outcome, event: bytes) -> None:
        """Called once per job, after its outcome is stored."""
        webhook_url = (state.request or {}).get("webhook_url")
        row = bool(self.settings.dataset_url) and outcome.status in DATASET_STATUSES
        if webhook_url or row:  # a thread hop per job costs the loop more than the check
            await asyncio.to_thread(self._announce, state, outcome, event, webhook_url, row)

    def _announce(
        self, state: JobState, outcome: Outcome, event: bytes, webhook_url: str | None, row: bool
    ) -> None:
        if webhook_url:
            self._guarded("webhook", self._queue_webhook, state.job_id, webhook_url, event)
        if row:
            self._guarded("dataset row", self._append_row, state, outcome)

    def _guarded(self, what: str, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception as e:  # no traceback: its text (an S3 body, a URL) may hold secrets
            job_id = getattr(args[0], "job_id", args[0])
            log.error("job %s: %s not written: %s", job_id, what, error_summary(e))

    def _queue_webhook(self, job_id: str, url: str, event: bytes) -> None:
        from webhooks.enqueue import enqueue_webhook

        if self._sync is None:
            self._sync = redis.Redis.from_url(self.redis_url.get_secret_value())
        enqueue_webhook(self._sync, self.settings, job_id, url, event)

    def _append_row(self, state: JobState, outcome: Outcome) -> None:
        from pipeline import dataset, storage

        finished = state.model_copy(
            update={"status": outcome.status, "result": outcome.result, "error": outcome.error}
        )
        if finished.finished_at is None:
            finished = finished.model_copy(update={"finished_at": finished.updated_at})
        extra = {
            k: v
            for k, v in (outcome.result or {}).items()
            if k in ("report_url", "result_url", "duration_s")
        }
        if outcome.result and outcome.result.get("token_usage"):
            extra["token_usage"] = outcome.result["token_usage"]
        url = self.settings.dataset_url or ""
        dataset.append_rows(
            url,
            [dataset.row_from_state(finished, extra)],
            storage.settings_options(self.settings, url),
        )
