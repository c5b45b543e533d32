"""Each step's time limit (``VIDBRIEF_STEP_TIMEOUT_SECONDS``), kept by the bridge.

A step's clock starts when the step really starts, not when it was submitted: a job waiting
for its node's GPU (queued on the analysis actor behind other jobs) or for a CPU is not late.
The start is what ``steps.py`` records in the job hash (``step:<name>:started`` and the
attempt it belongs to). The job's coroutine awaits the step's ref as before and only notes
the step here; a watchdog (:meth:`StepClock.check`, every CHECK_EVERY_S) reads the hash only
for a step that could be late — a limit after it could start: a step that started later gets
the rest of its time, one not started yet is looked at again a limit later, one past its limit
is stopped. So a step costs the loop two dictionary operations, not a timer.

Stopping is the launcher's (``Launcher.abort``): a task is force-cancelled (Ray kills its
worker process); an analysis call cannot be, so its actor is restarted, after the call itself
is cancelled so that it is not retried on the new process, while other jobs' calls queued there
are. The job then fails with :class:`~ingest.errors.StepTimeout`, a permanent error (its
docstring says why). A step whose start could not be recorded (Redis unreachable from its
worker) is never taken for late: the limit may not hold for it, it never fires early.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import StepTimeout
from ingest.models import now
from ingest.settings import Settings
from raybridge.protocols import Launcher
from raybridge.stream import JobStream
from raybridge.window import Slot

#: How often the watchdog looks at the steps running: a step is stopped within this of its limit.
CHECK_EVERY_S = 1.0


@dataclass
class _Running:
    """One step being awaited, and when it may be late."""

    slot: Slot
    step: str
    ref: Any
    limit_s: float
    due: float  # wall clock (the job hash's clock): not late before this
    stopped: bool = False


@dataclass
class StepClock:
    """Steps' time limits for one bridge: :meth:`follow` per step, :meth:`check` periodically."""

    settings: Settings
    stream: JobStream
    launcher: Launcher
    _running: dict[str, _Running] = field(default_factory=dict)  # by job id

    async def follow(self, slot: Slot, step: str, ref: Any) -> Any:
        """The step's output (or its error); StepTimeout if the watchdog stopped it."""
        limit = self.settings.step_timeout(step)
        running = self._running[slot.job_id] = _Running(slot, step, ref, limit, now() + limit)
        try:
            return await ref
        except asyncio.CancelledError:
            if running.stopped and not _cancelling():  # a fake ref, cancelled by its launcher
                raise StepTimeout(step, limit) from None
            raise
        except Exception:
            if running.stopped:
                raise StepTimeout(step, limit) from None  # Ray's TaskCancelledError, say
            raise
        finally:
            if self._running.get(slot.job_id) is running:
                del self._running[slot.job_id]

    async def check(self) -> None:
        """Stop every step past its limit (the bridge runs this every CHECK_EVERY_S)."""
        for running in [r for r in self._running.values() if not r.stopped and now() >= r.due]:
            started = await self.started(running.slot, running.step)
            running.due = (started if started is not None else now()) + running.limit_s
            if started is not None and now() >= running.due and not running.stopped:
                running.stopped = True
                self.launcher.abort(running.step, running.ref, running.slot.analyser)

    async def started(self, slot: Slot, step: str) -> float | None:
        """When this attempt's run of ``step`` started, per the job hash; None if it has not."""
        fields = (f"step:{step}:started", f"step:{step}:attempt")
        started, attempt = await self.stream.redis.hmget(self.stream.names.job(slot.job_id), fields)
        if started is None or attempt != str(slot.attempt):
            return None  # not started, or the record of an earlier attempt
        return float(started)


def _cancelling() -> bool:
    """Whether the running task itself is being cancelled (a drain, a cancel request)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
