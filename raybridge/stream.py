"""Redis I/O of the bridge: read, acknowledge, dead-letter, job hashes, outcomes.

Everything the bridge writes for one fact goes in one MULTI (rq's ``pipeline=None`` idiom: a
writer takes an optional pipeline and runs its own transaction when given none) or one Lua
script (accepting a new job, storing an outcome), so the job hash, the event and the XACK land
together or not at all. An entry is acknowledged only after its outcome is stored: a bridge
that dies before that leaves it pending, and the next bridge (same name: its own pending
entries; another name: once the dead bridge's lease lapses, leases.py) runs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from ingest.dead_letters import cap_fields
from ingest.models import JobState, JobStatus, field_args, hash_fields, now
from ingest.names import (
    BRIDGE_GROUP,
    DELIVERIES_FIELD,
    EVENT_FIELD,
    REASON_FIELD,
    STREAM_ID_FIELD,
    RedisNames,
)

log = logging.getLogger(__name__)

#: How long one XREADGROUP waits for new entries; also bounds how late a drain is noticed.
READ_BLOCK_MS = 1000
FINISHED = frozenset(s.value for s in JobStatus if s.finished)


@dataclass(frozen=True)
class Entry:
    """One jobs-stream entry as delivered to this bridge."""

    stream_id: str
    #: The entry's fields; empty when the entry was deleted from the stream after delivery.
    fields: Mapping[str, str]
    deliveries: int = 1


class JobStream:
    """The bridge's side of ``vidbrief:jobs`` (consumer group ``bridge``) and its outputs."""

    def __init__(
        self,
        redis: aioredis.Redis,
        names: RedisNames,
        consumer: str,
        *,
        events_maxlen: int,
        job_ttl_seconds: int,
        dead_letter_field_bytes: int = 65_536,
    ) -> None:
        self.redis = redis
        self.names = names
        self.consumer = consumer
        self.events_maxlen = events_maxlen
        self.job_ttl_seconds = job_ttl_seconds
        self.dead_letter_field_bytes = dead_letter_field_bytes
        self._finish_script = redis.register_script(_FINISH_LUA)
        self._accept_script = redis.register_script(_ACCEPT_LUA)

    # -- reading --------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; from the start, so no entry is skipped."""
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.redis.xgroup_create(self.names.jobs, BRIDGE_GROUP, id="0", mkstream=True)

    async def read_new(self, count: int, block_ms: int = READ_BLOCK_MS) -> list[Entry]:
        """Up to ``count`` entries never delivered before (blocks up to ``block_ms``)."""
        reply = await self.redis.xreadgroup(
            BRIDGE_GROUP, self.consumer, {self.names.jobs: ">"}, count=count, block=block_ms
        )
        return [Entry(sid, fields or {}) for sid, fields in _entries(reply)]

    async def read_own_pending(self, after: str, count: int) -> list[Entry]:
        """Entries delivered to this consumer name before (a restarted bridge), after ``after``."""
        reply = await self.redis.xreadgroup(
            BRIDGE_GROUP, self.consumer, {self.names.jobs: after}, count=count
        )
        return await self._with_deliveries(_entries(reply))

    async def is_pending(self, stream_id: str) -> bool:
        """Whether an entry is delivered to some bridge and not yet acknowledged."""
        found = await self.redis.xpending_range(
            self.names.jobs, BRIDGE_GROUP, stream_id, stream_id, 1
        )
        return bool(found)

    async def _with_deliveries(self, entries: list[tuple[str, dict[str, str]]]) -> list[Entry]:
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, _ in entries:
                pipe.xpending_range(self.names.jobs, BRIDGE_GROUP, sid, sid, 1)
            found = await pipe.execute()
        counts = [int(f[0]["times_delivered"]) if f else 1 for f in found]
        pairs = zip(entries, counts, strict=True)
        return [Entry(sid, fields or {}, n) for (sid, fields), n in pairs]

    # -- the job hash -----------------------------------------------------------------------

    async def job_state(self, job_id: str) -> JobState | None:
        """The job's hash, parsed; None when it is missing or unreadable (treated as new)."""
        fields = await self.redis.hgetall(self.names.job(job_id))
        if not fields:
            return None
        try:
            return JobState.from_hash(job_id, fields)
        except ValueError as e:
            log.warning("job %s: unreadable hash, treated as new: %s", job_id, e)
            return None

    async def begin_attempt(self, job_id: str) -> int:
        """Mark the job running and count one more attempt; return the attempt's number."""
        key, t = self.names.job(job_id), now()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=hash_fields(status=JobStatus.RUNNING, updated_at=t))
        pipe.hsetnx(key, "started_at", str(t))
        pipe.hincrby(key, "attempts", 1)
        *_, attempt = await pipe.execute()
        return int(attempt)

    # -- writing (pipeline=None: run a transaction of its own) -----------------------------

    @contextlib.asynccontextmanager
    async def transaction(self, pipeline: Pipeline | None = None) -> AsyncIterator[Pipeline]:
        """The given pipeline, or a new MULTI that is executed when the block ends."""
        if pipeline is not None:
            yield pipeline
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            yield pipe
            await pipe.execute()

    async def ack(self, stream_ids: list[str], pipeline: Pipeline | None = None) -> None:
        async with self.transaction(pipeline) as pipe:
            pipe.xack(self.names.jobs, BRIDGE_GROUP, *stream_ids)

    async def publish(self, event: bytes, pipeline: Pipeline | None = None) -> None:
        """XADD a CloudEvent to the events stream, trimmed approximately."""
        async with self.transaction(pipeline) as pipe:
            pipe.xadd(
                self.names.events,
                {EVENT_FIELD: event},
                maxlen=self.events_maxlen,
                approximate=True,
            )

    async def dead_letter(
        self, entry: Entry, reason: str, event: bytes, pipeline: Pipeline | None = None
    ) -> None:
        """Dead letter + ``job.rejected`` event + XACK, together. The letter keeps at most
        ``dead_letter_field_bytes`` of each field (ingest/dead_letters.py)."""
        ours = {
            REASON_FIELD: reason,
            DELIVERIES_FIELD: str(entry.deliveries),
            STREAM_ID_FIELD: entry.stream_id,
        }
        theirs = {k: v for k, v in entry.fields.items() if k not in ours}
        letter = cap_fields({**ours, **theirs}, self.dead_letter_field_bytes)
        async with self.transaction(pipeline) as pipe:
            pipe.xadd(self.names.dead, letter)
            await self.publish(event, pipe)
            await self.ack([entry.stream_id], pipe)

    async def update_job(
        self, job_id: str, fields: Mapping[str, str], pipeline: Pipeline | None = None
    ) -> None:
        async with self.transaction(pipeline) as pipe:
            pipe.hset(self.names.job(job_id), mapping=dict(fields))

    async def accept_new(
        self,
        job_id: str,
        stream_id: str,
        fields: Mapping[str, str],
        new_fields: Mapping[str, str],
        event: bytes,
    ) -> bool:
        """Accept a job never run, in one round trip: when its hash is missing, or queued for
        this entry with no cancel asked, write ``fields`` (and ``new_fields`` for a missing
        hash) and the ``job.accepted`` event. False, writing nothing, for any other state."""
        keys = [self.names.job(job_id), self.names.events]
        head = [stream_id, JobStatus.QUEUED.value, self.events_maxlen, EVENT_FIELD, event]
        pairs = field_args(fields)
        args = [*head, len(pairs), *pairs, *field_args(new_fields)]
        return bool(await self._accept_script(keys=keys, args=args))

    async def finish(
        self, job_id: str, stream_id: str, fields: Mapping[str, str], event: bytes
    ) -> bool:
        """Store a job's outcome, publish its terminal event and ack its entry, atomically.

        One Lua script, one round trip: a MULTI would need a WATCH on the job hash, which every
        step's progress record touches, and so retries. If another bridge stored an outcome
        first (a race after a restart), only the entry is acknowledged. Returns whether this
        call stored the outcome.
        """
        args = [
            self.job_ttl_seconds,
            self.events_maxlen,
            EVENT_FIELD,
            event,
            BRIDGE_GROUP,
            stream_id,
            *FINISHED,
        ]
        keys = [self.names.job(job_id), self.names.events, self.names.jobs]
        stored = await self._finish_script(
            keys=keys, args=[len(FINISHED), *args, *field_args(fields)]
        )
        return bool(stored)

    # -- the control stream and the heartbeat ----------------------------------------------

    async def control_tail(self) -> str:
        """The id of the newest control message (``0-0`` when none): where reading starts."""
        newest = await self.redis.xrevrange(self.names.control, count=1)
        return newest[0][0] if newest else "0-0"

    async def read_control(self, after: str, block_ms: int = READ_BLOCK_MS) -> list[Entry]:
        reply = await self.redis.xread({self.names.control: after}, count=100, block=block_ms)
        return [Entry(sid, fields or {}) for sid, fields in _entries(reply)]

    async def heartbeat(self, name: str, beat: Mapping[str, object]) -> None:
        await self.redis.hset(self.names.bridges, name, json.dumps(beat, separators=(",", ":")))

    async def forget_bridge(self, name: str) -> None:
        await self.redis.hdel(self.names.bridges, name)


# Accepts a job that never ran (see JobStream.accept_new). KEYS: job hash, events stream.
# ARGV: entry id, the queued status, events maxlen, event field, event JSON, m, then m
# field/value items for every job, then the field/value items for a missing hash only.
_ACCEPT_LUA = """
local h = redis.call('HMGET', KEYS[1], 'status', 'stream_id', 'cancel_requested')
local fresh = h[1] == false
if not fresh then
  if h[1] ~= ARGV[2] or h[3] or (h[2] and h[2] ~= ARGV[1]) then return 0 end
end
local m = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 7, 6 + m))
if fresh and #ARGV > 6 + m then
  redis.call('HSET', KEYS[1], unpack(ARGV, 7 + m))
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ARGV[4], ARGV[5])
return 1
"""


# The outcome of one job, atomically (see JobStream.finish). KEYS: job hash, events stream,
# jobs stream. ARGV: n finished statuses, job TTL, events maxlen, event field, event JSON,
# consumer group, entry id, the n finished statuses, then the hash's field/value pairs.
_FINISH_LUA = """
local n = tonumber(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
local stored = 1
for i = 8, 7 + n do
  if status == ARGV[i] then stored = 0 end
end
if stored == 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 8 + n))
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ARGV[4], ARGV[5])
end
redis.call('XACK', KEYS[3], ARGV[6], ARGV[7])
return stored
"""


def _entries(reply: object) -> list[tuple[str, dict[str, str]]]:
    """The (id, fields) pairs of a one-stream XREAD/XREADGROUP reply (RESP2, our client)."""
    return list(reply[0][1]) if reply else []  # type: ignore[index]
