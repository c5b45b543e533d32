"""What a long step tells its caller, and what the caller can tell it: progress inside the step
(media seconds decoded, transcribed) and a cancel.

The caller puts a :class:`StepHooks` in the job's context (``JobContext.hooks``): the bridge's
analysis actor with a cancel check that reads Ray's cancel flag of the running call,
``run-local`` with a progress callback that draws a bar with an ETA. The step's loops call
:meth:`StepHooks.check` and :meth:`StepHooks.progress` as they go; both are cheap when nobody
listens, and neither knows Ray or Redis — the callbacks do.

Why a flag checked in the loops rather than killing the process: the analysis runs in a
long-lived actor that holds the loaded models (and the GPU); killing it would cost the next job
a model load. A check between packets (decoding) and between segments (speech to text) stops
the work within a fraction of a second on a GPU, within one 30 s window's decoding on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.errors import PermanentStepError

#: How often the cancel callback is asked at most (it may cross a process boundary).
CHECK_EVERY_S = 0.05
#: How often progress is reported at most (a terminal redraws at about this rate).
PROGRESS_EVERY_S = 0.25

#: (stage, done, total): "decoding" 42.0 of 300.0 media seconds; total None when unknown.
ProgressCallback = Callable[[str, float, float | None], None]


class StepCancelled(PermanentStepError):
    """The step stopped because its job was cancelled (or its bridge is stopping)."""


@dataclass
class StepHooks:
    """Callbacks of one running step; the default does nothing."""

    on_progress: ProgressCallback | None = None
    cancelled: Callable[[], bool] | None = None
    _next_check: float = field(default=0.0, repr=False)
    _next_report: float = field(default=0.0, repr=False)

    def check(self, step: str = "", *, now: bool = False) -> None:
        """Raise StepCancelled if the caller has cancelled this step (asked at most every
        CHECK_EVERY_S, unless ``now``: after work a cancel may have cut short)."""
        if self.cancelled is None:
            return
        t = time.monotonic()
        if t < self._next_check and not now:
            return
        self._next_check = t + CHECK_EVERY_S
        if self.cancelled():
            raise StepCancelled("cancelled while running", step=step)

    def progress(
        self, stage: str, done: float, total: float | None, *, final: bool = False
    ) -> None:
        """Report ``done`` of ``total`` for ``stage`` (at most every PROGRESS_EVERY_S, unless
        ``final``)."""
        if self.on_progress is None:
            return
        t = time.monotonic()
        if t < self._next_report and not final:
            return
        self._next_report = t + PROGRESS_EVERY_S
        self.on_progress(stage, done, total)


#: For callers that pass none.
NO_HOOKS = StepHooks()
