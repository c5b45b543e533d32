"""Each step's time limit (``VIDBRIEF_STEP_TIMEOUT_SECONDS``), kept by the bridge.

A step's clock starts when the step really starts, not when it was submitted: a job waiting
for its node's GPU (queued on the analysis actor behind other jobs) or for a CPU is not late.
The start is what ``steps.py`` records in the job hash (``step:<name>:started`` and the
attempt it belongs to). The bridge does not poll for it: it waits for the step's ref until the
earliest moment the limit could have passed (a limit after the step could start), and only
then reads the hash: a step that started later gets the rest of its time, one not started yet
is looked at again a limit later, one past its limit is stopped.

Stopping is the launcher's (``Launcher.abort``): a task is force-cancelled (Ray kills its
worker process); an analysis call cannot be, so its actor is restarted, after the call itself
is cancelled so that it is not retried on the new process, while other jobs' calls queued there
are. The job then fails with :class:`~ingest.errors.StepTimeout`, a permanent error (its
docstring says why). A step whose start could not be recorded (Redis unreachable from its
worker) is never taken for late: the limit may not hold for it, it never fires early.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ingest.errors import StepTimeout
from ingest.models import now
from ingest.settings import Settings
from raybridge.protocols import Launcher
from raybridge.stream import JobStream
from raybridge.window import Slot


@dataclass
class StepClock:
    """Follows steps' refs against their time limits, for one bridge."""

    settings: Settings
    stream: JobStream
    launcher: Launcher

    async def follow(self, slot: Slot, step: str, ref: Any) -> Any:
        """The step's output (or its error); StepTimeout once it ran past its limit (stopped)."""
        limit = self.settings.step_timeout(step)
        future = _as_future(ref)
        deadline = now() + limit
        while True:
            done, _ = await asyncio.wait({future}, timeout=max(deadline - now(), 0.0))
            if done:
                return future.result()
            started = await self.started(slot, step)
            deadline = (started if started is not None else now()) + limit
            if started is not None and now() >= deadline:
                self.launcher.abort(step, ref, slot.analyser)
                raise StepTimeout(step, limit)

    async def started(self, slot: Slot, step: str) -> float | None:
        """When this attempt's run of ``step`` started, per the job hash; None if it has not."""
        fields = (f"step:{step}:started", f"step:{step}:attempt")
        started, attempt = await self.stream.redis.hmget(self.stream.names.job(slot.job_id), fields)
        if started is None or attempt != str(slot.attempt):
            return None  # not started, or the record of an earlier attempt
        return float(started)


def _as_future(ref: Any) -> asyncio.Future[Any]:
    """An asyncio future of ``ref``: a Ray ObjectRef's own, or the awaitable wrapped."""
    as_future = getattr(ref, "as_future", None)
    return as_future() if as_future is not None else asyncio.ensure_future(ref)
