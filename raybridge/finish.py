"""Storing a job's outcome: the job hash, its terminal event and the XACK in one script, then
what follows it (announce.py: the webhook and the dataset row).

The terminal event's data carries the step durations from the job hash, the steps taken from
kept outputs (``reused_steps``) and, for a completed job, the result (report and result files);
its id is ``<job_id>/<status>``, the same if a restarted bridge stores the outcome again (then
the script only acknowledges the entry). The job's work folders are deleted after this
(cleanup.py, started by job.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ingest.events import build_event
from ingest.models import JobState, hash_fields, now
from ingest.names import STEP_NAMES
from raybridge.announce import Announcer
from raybridge.metrics import BridgeMetrics
from raybridge.outcome import Outcome
from raybridge.stream import JobStream

log = logging.getLogger(__name__)


@dataclass
class Finisher:
    """Stores outcomes for one bridge and announces the ones it stored."""

    stream: JobStream
    metrics: BridgeMetrics
    announcer: Announcer
    source: str

    async def store(
        self, job_id: str, stream_id: str, outcome: Outcome, state: JobState | None = None
    ) -> None:
        """Job hash + terminal event + XACK, atomically (JobStream.finish); then announce."""
        state = state or await self.stream.job_state(job_id)
        seconds = step_seconds(state)
        t = now()
        fields = hash_fields(
            status=outcome.status,
            finished_at=t,
            updated_at=t,
            result=outcome.result,
            error=outcome.error,
        )
        data = _data(outcome, state, seconds)
        event = build_event(outcome.event_type, job_id, self.source, str(outcome.status), data)
        if not await self.stream.finish(job_id, stream_id, fields, event):
            return
        self.metrics.finished.labels(outcome=str(outcome.status)).inc()
        reused = set(reused_steps(state))  # their 0 s would skew the step durations
        self.metrics.observe_steps({s: v for s, v in seconds.items() if s not in reused})
        line, fields = outcome_line(job_id, outcome, state, t)
        log.info("%s", line, extra=fields)
        if state is not None:
            stored = state.model_copy(update={"finished_at": t, "updated_at": t})
            await self.announcer.finished(stored, outcome, event)


def outcome_line(
    job_id: str, outcome: Outcome, state: JobState | None, t: float
) -> tuple[str, dict[str, Any]]:
    """The bridge's one log line for a job's end, and its fields (the keys the line adds to a
    JSON log line)."""
    began = state.started_at or state.created_at if state else None
    fields: dict[str, Any] = {
        "job": job_id,
        "outcome": str(outcome.status),
        "attempts": state.attempts if state else 0,
        "seconds": round(t - began, 3) if began else None,
    }
    took = f" in {fields['seconds']:.1f} s" if began else ""
    line = f"job {job_id} {outcome.status} after {fields['attempts']} attempt(s){took}"
    error = outcome.error or {}
    if error:
        fields.update(error_class=error.get("class"), failed_step=error.get("step"))
        line += f": {error.get('class')} in {error.get('step') or '?'}: {error.get('message')}"
    return line, fields


def _data(outcome: Outcome, state: JobState | None, seconds: dict[str, float]) -> dict[str, Any]:
    """The terminal event's data: status, step durations, attempts, then result or error."""
    data: dict[str, Any] = {
        "status": str(outcome.status),
        "step_seconds": seconds,
        "attempts": state.attempts if state else 0,
        "reused_steps": reused_steps(state),
    }
    data.update(outcome.result or {})
    if outcome.error:
        data["error"] = outcome.error
    return data


def step_seconds(state: JobState | None) -> dict[str, float]:
    """How long each finished step took, from the job hash."""
    if state is None:
        return {}
    return {step: round(t.seconds, 6) for step, t in state.steps.items() if t.seconds is not None}


def reused_steps(state: JobState | None) -> list[str]:
    """The steps served by kept outputs, in chain order (the job hash's ``reused`` marks)."""
    if state is None:
        return []
    return [step for step in STEP_NAMES if step in state.steps and state.steps[step].reused]
