"""At launch: a job whose video is analysed already runs only brief and report, on any node.

    job ─▶ pipeline.reuse.find_analysed (in a thread): the source record of its URL, the
           analysis of that media with these settings, then the URL against the address policy
              ├─ refused      ─▶ the job fails (permanent), nothing reused
              ├─ not kept     ─▶ the whole chain, as always
              └─ both kept    ─▶ launch(done={download: ref, analyse: ref}): no download slot,
                                 no GPU queue; the job hash and step.completed events say
                                 ``reused``

The outputs go to Ray as objects of their own (``launcher.put``), like the refs of steps that
finished in an earlier attempt.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from ingest.errors import StepError
from ingest.events import EventType, build_event
from ingest.models import JobRequest, hash_fields, now, step_fields
from ingest.names import DOWNLOAD_STEP
from ingest.settings import Settings
from pipeline.context import JobContext
from pipeline.reuse import find_analysed
from raybridge.outcome import Failure, FailureKind
from raybridge.protocols import Launcher
from raybridge.stream import JobStream

log = logging.getLogger(__name__)


@dataclass
class Reuse:
    """Finds kept analyses for one bridge's jobs and hands them to their chains."""

    settings: Settings
    stream: JobStream
    launcher: Launcher
    source: str

    async def find(self, job_id: str, request: JobRequest) -> dict[str, Any] | Failure:
        """The kept outputs this job can start from ({} when none), or why it must fail."""
        ctx = JobContext(job_id, request, self.settings)
        try:
            found = await asyncio.to_thread(find_analysed, ctx)
        except StepError as e:  # the URL is refused now: nothing of it is reused, or fetched
            kind = FailureKind.RETRYABLE if e.retryable else FailureKind.PERMANENT
            return Failure(kind, e.step or DOWNLOAD_STEP, type(e).__name__, str(e))
        except Exception as e:  # the store unreadable: run the steps instead
            log.warning("job %s: artefact store not read: %s", job_id, e)
            return {}
        if found:
            log.info("job %s: analysis kept; running brief and report only", job_id)
        return found or {}

    async def launched(self, job_id: str, attempt: int, kept: dict[str, Any]) -> dict[str, Any]:
        """Record the kept steps as reused (hash and events); return their refs for launch."""
        t = now()
        async with self.stream.transaction() as pipe:
            for step in kept:
                # node "": ran nowhere for this job (not where an earlier attempt ran it)
                fields = step_fields(step, started=t, ended=t, node="", reused="1")
                await self.stream.update_job(job_id, {**fields, **hash_fields(updated_at=t)}, pipe)
                data = {"step": step, "attempt": attempt, "node": "", "reused": True}
                fact = f"{attempt}/{step}/completed"
                event = build_event(EventType.STEP_COMPLETED, job_id, self.source, fact, data)
                await self.stream.publish(event, pipe)
        return {step: self.launcher.put(output) for step, output in kept.items()}
