"""The producer side: submit jobs, read their state and events, cancel, follow to the end.

Idempotent submit: one Lua script checks the job hash and, only when it does not exist, creates
it (status ``queued``) and XADDs the entry — atomically, so two producers racing with the same
``job_id`` enqueue it once. Producers that XADD raw (other languages) skip this check; the bridge
dedupes those by job id when it reads them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from ingest import dead_letters
from ingest.errors import JobTimeout
from ingest.events import Event, EventFilter, parse_event
from ingest.models import (
    JobRequest,
    JobState,
    JobStatus,
    field_args,
    hash_fields,
    now,
    parse_request,
)
from ingest.names import CANCEL_FIELD, EVENT_FIELD, JOB_FIELD, RedisNames

# KEYS: job hash, jobs stream. ARGV: the entry's field name, request JSON, then hash
# field/value pairs.
_SUBMIT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGET', KEYS[1], 'status') or ''}
end
local id = redis.call('XADD', KEYS[2], '*', ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'stream_id', id, unpack(ARGV, 3))
return {1, id}
"""

FOLLOW_BLOCK_MS = 1000
#: How many of the newest events ``recent_events`` looks through for matching ones.
RECENT_SCAN_EVENTS = 2_000
#: The control stream keeps about this many cancel requests (a bridge reads only new ones).
CONTROL_MAXLEN = 10_000


@dataclass(frozen=True)
class Submitted:
    job_id: str
    created: bool  # False: the job id existed already, nothing was enqueued
    stream_id: str | None
    status: str


class Client:
    """A producer's handle on vidbrief. The Redis client is injected (sync, decoded)."""

    def __init__(self, redis_client: redis.Redis, names: RedisNames | None = None) -> None:
        self.redis = redis_client
        self.names = names or RedisNames()
        self._submit = self.redis.register_script(_SUBMIT_LUA)

    # -- submit
    def submit(self, request: JobRequest | dict[str, Any] | str) -> Submitted:
        """Validate and enqueue one job; a job id that exists already is not enqueued again."""
        if not isinstance(request, JobRequest):
            request = parse_request(request)
        request = request.with_job_id()
        job_id = request.job_id or ""
        t = now()
        fields = hash_fields(
            status=JobStatus.QUEUED, url=request.url, created_at=t, updated_at=t, attempts=0
        )
        fields["request"] = request.to_json()
        argv = [JOB_FIELD, request.to_json(), *field_args(fields)]
        created, info = self._submit(keys=[self.names.job(job_id), self.names.jobs], args=argv)
        if created:
            return Submitted(job_id, True, info, JobStatus.QUEUED)
        return Submitted(job_id, False, None, info or "unknown")

    # -- read
    def status(self, job_id: str) -> JobState | None:
        fields = self.redis.hgetall(self.names.job(job_id))
        return JobState.from_hash(job_id, fields) if fields else None

    def last_event_id(self) -> str:
        """The id of the newest event (``0-0`` when none): a start point for following."""
        newest = self.redis.xrevrange(self.names.events, count=1)
        return newest[0][0] if newest else "0-0"

    def events(
        self,
        since: str = "0-0",
        *,
        follow: bool = False,
        count: int = 100,
        block_ms: int = FOLLOW_BLOCK_MS,
    ) -> Iterator[Event]:
        """Events after ``since``; with ``follow`` keep blocking for new ones (until closed)."""
        last = since
        while True:
            if follow:
                batch = self.redis.xread({self.names.events: last}, count=count, block=block_ms)
                entries = batch[0][1] if batch else []
            else:
                entries = self.redis.xrange(self.names.events, f"({last}", "+", count=count)
            for stream_id, fields in entries:
                last = stream_id
                yield parse_event(fields[EVENT_FIELD], stream_id)
            if not follow and len(entries) < count:
                return

    def recent_events(self, wanted: EventFilter, keep: int) -> tuple[list[Event], str]:
        """The ``keep`` newest events that ``wanted`` matches among the RECENT_SCAN_EVENTS
        newest, oldest first, and the id of the newest event looked at (to follow from)."""
        newest = self.redis.xrevrange(self.names.events, count=RECENT_SCAN_EVENTS)
        events = (parse_event(fields[EVENT_FIELD], sid) for sid, fields in reversed(newest))
        matching = [e for e in events if wanted(e)]
        last_seen = newest[0][0] if newest else "0-0"
        return (matching[-keep:] if keep else []), last_seen

    def wait(self, job_id: str, timeout_s: float | None = None, since: str | None = None) -> Event:
        """Block until the job's terminal event; return it. ``since``: start of the search."""
        last = since if since is not None else self.last_event_id()
        state = self.status(job_id)
        if state and state.status.finished:
            last = "0-0"  # the terminal event is already in the stream: find it
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            left_ms = FOLLOW_BLOCK_MS if deadline is None else (deadline - time.monotonic()) * 1e3
            batch = self.redis.xread(
                {self.names.events: last},
                count=100,
                block=max(1, int(min(left_ms, FOLLOW_BLOCK_MS))),
            )
            for stream_id, fields in batch[0][1] if batch else []:
                last = stream_id
                event = parse_event(fields[EVENT_FIELD], stream_id)
                if event.job_id == job_id and event.terminal:
                    return event
        raise JobTimeout(f"job {job_id} did not finish within {timeout_s} s")

    # -- cancel
    def cancel(self, job_id: str) -> JobState | None:
        """Ask the bridges to cancel a queued or running job; None if the job is unknown."""
        state = self.status(job_id)
        if state is None or state.status.finished:
            return state
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.names.job(job_id), mapping={"cancel_requested": "1", "updated_at": now()})
        pipe.xadd(
            self.names.control, {CANCEL_FIELD: job_id}, maxlen=CONTROL_MAXLEN, approximate=True
        )
        pipe.execute()
        return self.status(job_id)

    # -- dead letters
    def dead_letters(self, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        return self.redis.xrevrange(self.names.dead, count=count)

    def replay_dead(self, dead_id: str) -> str:
        """Put a dead letter's original entry back on the jobs stream; return the new id.

        Its job hash is cleared (so the job runs again) only if it belongs to that entry;
        ingest/dead_letters.py says when a letter is refused.
        """
        return dead_letters.replay(self.redis, self.names, dead_id)
