"""One job's coroutine: place it, launch its chain, follow its refs, retry, store the outcome.

    attempt ─▶ node (fleet.acquire_node) ─▶ download ─▶ the first free analyser of that node
       ▲          │                                      (fleet.acquire_analyser) ─▶ the rest
       │          └ kept: a resumed job's download node, or steps done ◀────┤ await each ref
       │                                                                    ▼
       ├── retryable failure, retries left: back off, run again from the failed step
       ├── node lost or cancelled by Ray, moves left: download again elsewhere
       ├── taken over by an idle node before its analysis began: download again there
       └── otherwise: the outcome (completed, failed, cancelled) ─▶ finish.py

Before the first attempt, a metadata probe gives the video's duration (placement by expected
work; a video the download would refuse fails here, before any byte of media); before the
first attempt (and after a move), ``reuse.py`` looks for its video's kept analysis: when there
is one, the chain starts with download and analysis done (no node, no download slot, no GPU
queue). Once the outcome is stored, ``cleanup.py`` deletes the job's work folders.

A cancel request (the bridge cancels the task) ends it as cancelled; a bridge that stops
cancels it too, and then nothing is stored: the entry stays pending for the next bridge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from redis.exceptions import RedisError

from ingest.models import JobRequest
from ingest.names import ANALYSE_STEP, DOWNLOAD_STEP
from ingest.redact import error_summary
from ingest.settings import Settings
from pipeline.chain import CHAIN
from pipeline.context import JobContext
from raybridge.cleanup import Cleaner, settle
from raybridge.finish import Finisher
from raybridge.fleet import Fleet
from raybridge.outcome import Failure, FailureKind, Outcome
from raybridge.protocols import Launcher
from raybridge.reuse import Reuse
from raybridge.step_limits import StepClock
from raybridge.stream import JobStream
from raybridge.window import Phase, Slot

log = logging.getLogger(__name__)

#: Longest wait between retries of a step, whatever the backoff doubling says.
MAX_BACKOFF_S = 60.0
#: How long a failed attempt waits for its later steps to report the same failure.
SETTLE_S = 10.0
STEP_NAMES_IN_ORDER = tuple(s.name for s in CHAIN)
LAST_STEP = CHAIN[-1].name


@dataclass
class JobRunner:
    """Runs jobs' chains for one bridge; one :meth:`run` coroutine per job."""

    settings: Settings
    stream: JobStream
    fleet: Fleet
    launcher: Launcher
    finisher: Finisher
    reuse: Reuse
    cleaner: Cleaner
    clock: StepClock = field(init=False)

    def __post_init__(self) -> None:
        self.clock = StepClock(self.settings, self.stream, self.launcher)

    async def run(self, slot: Slot, request: JobRequest, prefer: str | None) -> None:
        """Run the job and store its outcome; a Redis or bridge error leaves it pending."""
        try:
            outcome = await self._outcome(slot, request, prefer)
            slot.finishing = True  # from here on a cancel comes too late
            await self.finisher.store(slot.job_id, slot.stream_id, outcome)
        except (RedisError, OSError) as e:
            why = error_summary(e)
            log.warning("job %s: outcome not stored, entry stays pending: %s", slot.job_id, why)
        except Exception:
            log.exception("job %s: bridge error; entry stays pending", slot.job_id)
        else:
            self.cleaner.finished(slot.job_id, slot.refs.values())
            return
        self.cleaner.forget(slot.job_id)

    async def _outcome(self, slot: Slot, request: JobRequest, prefer: str | None) -> Outcome:
        try:
            return await self._execute(slot, request, prefer)
        except asyncio.CancelledError:
            if not slot.cancelled:
                raise  # the bridge is stopping: the entry stays pending
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return Outcome.cancelled()
        finally:
            self.fleet.leave_node(slot, Phase.FINISHING)

    async def _execute(self, slot: Slot, request: JobRequest, prefer: str | None) -> Outcome:
        """Attempts until the chain completes, fails for good, or runs out of retries."""
        done: dict[str, Any] = {}
        retries = moves = 0
        refused = await self._probe(slot, request) if prefer is None else None
        if refused is not None:
            return Outcome.failed(refused)
        while not slot.cancelled:
            outputs, failure = await self._attempt(slot, request, done, prefer)
            stolen_by, slot.steal_to = slot.steal_to, None
            if failure is None:
                return Outcome.completed(_as_json(outputs[LAST_STEP]))
            if stolen_by is not None and failure.kind is FailureKind.CANCELLED:
                done, prefer, slot.fresh = {}, stolen_by, True
            elif failure.kind is FailureKind.RETRYABLE and retries < self.settings.step_retries:
                retries += 1
                done = _kept_before(slot, failure.step)
                await asyncio.sleep(self._backoff_s(retries))
            elif _relocatable(failure) and moves < self.settings.placement_retries:
                moves, done, prefer = moves + 1, {}, None
                self.fleet.drop_analyser(slot.analyser, failure)
                log.warning("job %s: %s; downloading again elsewhere", slot.job_id, failure.message)
                await self.fleet.refresh_nodes()
            else:
                return Outcome.failed(failure)
        return Outcome.cancelled()

    async def _probe(self, slot: Slot, request: JobRequest) -> Failure | None:
        """The video's duration for placement (None: unknown); a refusal fails the job."""
        ctx = JobContext(slot.job_id, request, self.settings, slot.attempt)
        try:
            slot.media_s = await self.launcher.probe(ctx)
        except Exception as e:  # the probe's own error, or Ray's around it
            failure = self.launcher.classify(e, DOWNLOAD_STEP)
            if failure.kind is FailureKind.PERMANENT:
                return failure
            log.info("job %s: no duration from the probe: %s", slot.job_id, failure.message)
        return None

    async def _attempt(
        self, slot: Slot, request: JobRequest, done: dict[str, Any], prefer: str | None
    ) -> tuple[dict[str, Any], Failure | None]:
        kept = await self.reuse.find(slot.job_id, request) if not done else {}
        if isinstance(kept, Failure):
            return {}, kept
        if DOWNLOAD_STEP not in done and DOWNLOAD_STEP not in kept:
            self.fleet.leave_node(slot, Phase.WAITING)
            self.cleaner.touched(slot.job_id, await self.fleet.acquire_node(slot, prefer))
        slot.attempt = await self.stream.begin_attempt(slot.job_id)
        if kept:
            done = await self.reuse.launched(slot.job_id, slot.attempt, kept)
            self.fleet.window.advance(slot.job_id, Phase.FINISHING)
        fresh = frozenset({DOWNLOAD_STEP}) if slot.fresh else frozenset()
        ctx = JobContext(slot.job_id, request, self.settings, slot.attempt, fresh=fresh)
        slot.fresh = False
        slot.refs, outputs = dict(done), {}
        if DOWNLOAD_STEP not in done:
            slot.launched_at = time.monotonic()
            slot.refs = self._launch(ctx, slot, None, DOWNLOAD_STEP)
            outputs, failure = await self._follow(slot)
            if failure is not None:
                return outputs, failure
        if ANALYSE_STEP not in slot.refs:
            analyser = await self.fleet.acquire_analyser(slot)
            if analyser is None:
                return outputs, self._no_analyser(slot)
        slot.refs = self._launch(ctx, slot, slot.analyser, None)
        return await self._follow(slot, outputs)

    def _launch(
        self, ctx: JobContext, slot: Slot, analyser: Any, through: str | None
    ) -> dict[str, Any]:
        return self.launcher.launch(ctx, slot.node_id or "", analyser, slot.refs, through)

    @staticmethod
    def _no_analyser(slot: Slot) -> Failure:
        if slot.steal_to is not None:
            why = f"taken over by idle node {slot.steal_to} before its analysis began"
            return Failure(FailureKind.CANCELLED, ANALYSE_STEP, "TakenOver", why)
        why = f"node {slot.node_id} has no analysis actor any more"
        return Failure(FailureKind.NODE_LOST, ANALYSE_STEP, "NoAnalyser", why)

    async def _follow(
        self, slot: Slot, outputs: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], Failure | None]:
        """Await each step's ref not in ``outputs`` in chain order, within its time limit
        (step_limits.py); the first error names the failed step."""
        outputs = dict(outputs or {})
        pending = [(step, ref) for step, ref in slot.refs.items() if step not in outputs]
        for index, (step, ref) in enumerate(pending):
            try:
                outputs[step] = await self.clock.follow(slot, step, ref)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the step's error or Ray's, wrapped by Ray; or its limit
                if step == ANALYSE_STEP:
                    self.fleet.analysis_ended(slot)
                # Collect the errors of this step and the later ones (they fail at once, with
                # the same error; a stopped step with its own): Ray then logs none as unhandled.
                await settle([r for _, r in pending[index:]], SETTLE_S)
                return outputs, self.launcher.classify(e, step)
            self._step_done(slot, step)
        return outputs, None

    def _step_done(self, slot: Slot, step: str) -> None:
        if step == DOWNLOAD_STEP and slot.phase is Phase.DOWNLOADING:
            self.fleet.downloaded(slot, time.monotonic())
        elif step == ANALYSE_STEP:
            self.fleet.analysed(slot, time.monotonic())

    def _backoff_s(self, retry: int) -> float:
        return min(self.settings.retry_backoff_seconds * 2 ** (retry - 1), MAX_BACKOFF_S)


def _kept_before(slot: Slot, step: str) -> dict[str, Any]:
    """Refs of the steps before ``step``: a retry runs only ``step`` and what follows."""
    names = STEP_NAMES_IN_ORDER
    cut = names.index(step) if step in names else 0
    return {name: slot.refs[name] for name in names[:cut]}


def _relocatable(failure: Failure) -> bool:
    return failure.kind in (FailureKind.NODE_LOST, FailureKind.CANCELLED)


def _as_json(output: Any) -> dict[str, Any]:
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    return dict(output) if isinstance(output, dict) else {"value": output}
