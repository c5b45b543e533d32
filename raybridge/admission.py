"""What each delivered entry becomes: a job to run, a dead letter, or an acknowledgement.

    entry ─ parse ─┬─ invalid, or delivered > max_deliveries ───────▶ dead letter + job.rejected
                   ├─ never run (no hash, or queued for this entry) ─▶ accepted: one script
                   └─ known job: look at its state
                        ├─ a duplicate entry of a job in the window ─▶ XACK
                        ├─ finished                                 ─▶ XACK (no second run)
                        ├─ cancel requested                         ─▶ stored as cancelled
                        ├─ its own entry still pending elsewhere    ─▶ XACK
                        └─ else (resumed, redelivered)              ─▶ accepted

An accepted job holds a slot in the window from here on; the bridge starts its coroutine
(job.py). A request without a ``job_id`` gets its entry id, the same on every redelivery.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from ingest.errors import InvalidRequest
from ingest.events import EventType, build_event
from ingest.models import (
    JOB_ID_PATTERN,
    JobRequest,
    JobState,
    JobStatus,
    hash_fields,
    now,
    parse_request,
)
from ingest.names import DELIVERIES_FIELD, DOWNLOAD_STEP, JOB_FIELD, REASON_FIELD, STREAM_ID_FIELD
from ingest.settings import Settings
from raybridge.finish import Finisher
from raybridge.metrics import BridgeMetrics
from raybridge.outcome import Outcome
from raybridge.stream import Entry, JobStream
from raybridge.window import Slot, Window

log = logging.getLogger(__name__)

#: A rejection's reason (dead letter, ``job.rejected`` event) is cut to this many characters.
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class Admitted:
    """A job accepted into the window, ready to run."""

    slot: Slot
    request: JobRequest
    #: The node that holds the job's finished download (a resumed job goes back there).
    prefer: str | None = None


@dataclass
class Admission:
    """Admits the entries one bridge reads."""

    settings: Settings
    stream: JobStream
    window: Window
    finisher: Finisher
    metrics: BridgeMetrics
    source: str

    async def admit(self, entry: Entry) -> Admitted | None:
        """The job to run for ``entry``, in the window already; None when there is none."""
        if self.window.by_stream_id(entry.stream_id):
            return None  # our own running entry, reclaimed because it looked idle
        if not entry.fields:
            await self.stream.ack([entry.stream_id])  # deleted from the stream meanwhile
            return None
        try:
            request = self.parse(entry)
        except InvalidRequest as e:
            await self.reject(entry, str(e))
            return None
        job_id = request.job_id or entry.stream_id
        request = request.model_copy(update={"job_id": job_id})
        if job_id not in self.window:
            admitted = await self._accept_new(entry, request)
            if admitted is not None:
                return admitted
        state = await self.stream.job_state(job_id)
        if await self._skip(entry, job_id, state):
            return None
        return await self._accept(entry, request, state)

    def parse(self, entry: Entry) -> JobRequest:
        """The entry's job request; InvalidRequest says why there is none."""
        if entry.deliveries > self.settings.max_deliveries:
            raise InvalidRequest(
                f"delivered {entry.deliveries} times, more than max_deliveries="
                f"{self.settings.max_deliveries} (set VIDBRIEF_MAX_DELIVERIES to allow more)"
            )
        if JOB_FIELD not in entry.fields:
            shown = ", ".join(sorted(entry.fields)) or "none"
            raise InvalidRequest(f"entry has no '{JOB_FIELD}' field (fields: {shown!a})")
        raw = entry.fields[JOB_FIELD]
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as e:  # undecodable bytes, kept as lone surrogates
            raise InvalidRequest(f"request: not UTF-8 (byte at position {e.start})") from e
        return parse_request(raw)

    async def reject(self, entry: Entry, reason: str) -> None:
        """Dead letter + ``job.rejected`` + XACK, together."""
        if len(reason) > MAX_REASON_CHARS:  # it may list a hostile entry's field names
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        subject = _guess_job_id(entry) or entry.stream_id
        data = {
            REASON_FIELD: reason,
            STREAM_ID_FIELD: entry.stream_id,
            DELIVERIES_FIELD: entry.deliveries,
        }
        fact = f"rejected/{entry.stream_id}"
        event = build_event(EventType.REJECTED, subject, self.source, fact, data)
        await self.stream.dead_letter(entry, reason, event)
        self.metrics.dead_letters.inc()
        log.info("entry %s dead-lettered: %s", entry.stream_id, reason)

    async def _skip(self, entry: Entry, job_id: str, state: JobState | None) -> bool:
        """Acknowledge entries whose job must not run (again). True when skipped."""
        if job_id in self.window:
            await self.stream.ack([entry.stream_id])  # a duplicate entry of a job we run
            return True
        if state is None:
            return False
        if state.status.finished:
            await self.stream.ack([entry.stream_id])  # finished: no second run, no event
            return True
        if state.cancel_requested:
            await self.finisher.store(job_id, entry.stream_id, Outcome.cancelled(), state)
            return True
        if await self._running_elsewhere(entry, state):
            await self.stream.ack([entry.stream_id])
            return True
        return False

    async def _running_elsewhere(self, entry: Entry, state: JobState) -> bool:
        """The job's own entry is another one that is still pending (in some bridge)."""
        other = state.stream_id
        return bool(other and other != entry.stream_id and await self.stream.is_pending(other))

    async def _accept_new(self, entry: Entry, request: JobRequest) -> Admitted | None:
        """The common case in one round trip: a job never run (no hash, or queued by a
        producer for this very entry) is accepted by one script. None: it needs a look at
        its state (finished, cancelled, running elsewhere, resumed) — the slow path."""
        job_id, t = request.job_id or "", now()
        slot = self.window.add(Slot(job_id, entry.stream_id, entry.deliveries))
        try:
            accepted = await self.stream.accept_new(
                job_id,
                entry.stream_id,
                self._accepted_fields(entry, request, t),
                hash_fields(status=JobStatus.QUEUED, created_at=t, attempts=0),
                self._accepted_event(entry, request),
            )
        except BaseException:
            self.window.remove(job_id)
            raise
        if not accepted:
            self.window.remove(job_id)
            return None
        return Admitted(slot, request)

    async def _accept(self, entry: Entry, request: JobRequest, state: JobState | None) -> Admitted:
        job_id = request.job_id or ""
        slot = self.window.add(Slot(job_id, entry.stream_id, entry.deliveries))
        try:
            await self._record_accepted(entry, request, state)
        except BaseException:
            self.window.remove(job_id)
            raise
        return Admitted(slot, request, _download_node(state))

    def _accepted_fields(self, entry: Entry, request: JobRequest, t: float) -> dict[str, str]:
        fields = hash_fields(
            url=request.url,
            stream_id=entry.stream_id,
            updated_at=t,
            bridge=self.settings.bridge_name,
        )
        fields["request"] = request.to_json()
        return fields

    def _accepted_event(self, entry: Entry, request: JobRequest) -> bytes:
        data = {STREAM_ID_FIELD: entry.stream_id, "url": request.url}
        return build_event(EventType.ACCEPTED, request.job_id or "", self.source, "accepted", data)

    async def _record_accepted(
        self, entry: Entry, request: JobRequest, state: JobState | None
    ) -> None:
        job_id, t = request.job_id or "", now()
        fields = self._accepted_fields(entry, request, t)
        if state is None:
            fields.update(hash_fields(status=JobStatus.QUEUED, created_at=t, attempts=0))
        async with self.stream.transaction() as pipe:
            await self.stream.update_job(job_id, fields, pipe)
            if state is None or state.status is JobStatus.QUEUED:
                await self.stream.publish(self._accepted_event(entry, request), pipe)


def _guess_job_id(entry: Entry) -> str | None:
    """The job id of a rejected request, when it has a usable one (the event's subject)."""
    try:
        doc = json.loads(entry.fields.get(JOB_FIELD, ""))
    except (ValueError, RecursionError):
        return None
    job_id = doc.get("job_id") if isinstance(doc, dict) else None
    return job_id if isinstance(job_id, str) and re.fullmatch(JOB_ID_PATTERN, job_id) else None


def _download_node(state: JobState | None) -> str | None:
    """The node that holds this job's finished download (a resumed job goes back there)."""
    timing = state.steps.get(DOWNLOAD_STEP) if state else None
    return timing.node if timing and timing.ended is not None and timing.node else None
