"""Which waiting entry a bridge takes next: priorities first, then producers in turn.

    vidbrief:jobs ──route (XREADGROUP to ":parked")──▶ vidbrief:lane:<priority>:<producer>
                                                         (stream ids, oldest first)
    vidbrief:lanes:<priority>  a ring of the producers with ids waiting at that priority
    take(n): for priority high, normal, low: turn the ring, one id per producer per turn,
             XCLAIM it (JUSTID) from ":parked" to this bridge, return it with its fields

Producers XADD to ``vidbrief:jobs`` exactly as before; each entry stays pending in the group
``bridge`` from its first delivery until the script that stores its outcome acknowledges it.
Routing only moves its *id* into a lane (and its ownership to the consumer ``:parked``), so the
bridge never holds the backlog in memory: the backlog stays in Redis (the stream, the group's
pending list, the lanes of ids), and the window still bounds what one bridge reads. Routing and
taking are one Lua script, one round trip per read: atomic, so an id is in exactly one lane or
taken by exactly one bridge, across any number of bridges sharing the lanes.

The rule is round robin between producers inside a priority (deficit round robin with a
quantum of one job), a higher priority always first. Bounds (one or several bridges; jobs
counted as they are taken, i.e. as they start):

- a *priority* job waits for at most one free window slot: it is taken by the next read of any
  bridge, ahead of every lower-priority entry, however many;
- with *P* producers waiting at a priority, a producer's *k*-th job is taken within
  ``P × k`` takes of that priority after its entry was routed. Routing goes through the
  backlog ``ROUTE_MAX`` entries per read, so an entry behind ``B`` unrouted entries is routed
  within ``ceil(B / ROUTE_MAX)`` reads.

So producer A's 300 jobs followed by producer B's 10: B's 10 are taken among the next 20 takes
(alternating with A's), while A has had only the window's worth (already in flight) before —
B's last job starts before A's ``window + 11``-th.

Requests that do not parse route to the default priority and no producer: admission rejects
them (dead letter) as before. The lanes' keys are built in the script from the prefixes of
``ingest.names`` (one Redis, not Redis Cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from ingest.models import DEFAULT_PRIORITY, PRIORITIES
from ingest.names import BRIDGE_GROUP, JOB_FIELD, PARKED_CONSUMER, RedisNames
from raybridge.stream import READ_BLOCK_MS, Entry

#: Entries routed at most per read (bounds the script's time: about 5 µs each here).
ROUTE_MAX = 500
NO_ENTRY = "0-0"


@dataclass(frozen=True)
class Taken:
    """What one read found: the entries taken, whether routing stopped short of the backlog's
    end, and the newest id of the stream (where a blocking wait for new entries starts)."""

    entries: list[Entry]
    more: bool
    newest: str


class FairQueue:
    """The fair-share lanes of one Redis, as one bridge (``consumer``) reads them."""

    def __init__(self, redis: aioredis.Redis, names: RedisNames, consumer: str) -> None:
        self.redis = redis
        self.names = names
        self.consumer = consumer
        self.newest = NO_ENTRY
        self._script = redis.register_script(_ROUTE_AND_TAKE_LUA)

    async def take(self, count: int) -> Taken:
        """Route what is new, then take up to ``count`` entries, best first."""
        args = [
            BRIDGE_GROUP,
            PARKED_CONSUMER,
            self.consumer,
            ROUTE_MAX,
            count,
            self.names.lane_prefix,
            self.names.lanes_prefix,
            JOB_FIELD,
            DEFAULT_PRIORITY,
            *PRIORITIES,
        ]
        routed, newest, taken = await self._script(keys=[self.names.jobs], args=args)
        self.newest = newest
        entries = [Entry(sid, _pairs(fields), int(n)) for sid, n, fields in taken]
        return Taken(entries, int(routed) >= ROUTE_MAX, newest)

    async def wait_new(self, block_ms: int = READ_BLOCK_MS) -> None:
        """Until an entry newer than the last one seen is added (or ``block_ms`` passes)."""
        await self.redis.xread({self.names.jobs: self.newest}, count=1, block=block_ms)

    async def waiting(self) -> dict[str, dict[str, int]]:
        """Ids waiting per priority and producer (for ``status --cluster``)."""
        out: dict[str, dict[str, int]] = {}
        for priority in PRIORITIES:
            producers = await self.redis.lrange(self.names.lanes(priority), 0, -1)
            if not producers:
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for producer in producers:
                    pipe.llen(self.names.lane(priority, producer))
                counts = await pipe.execute()
            out[priority] = dict(zip(producers, map(int, counts), strict=True))
        return out


def _pairs(flat: list[str] | None) -> dict[str, str]:
    flat = flat or []
    return dict(zip(flat[::2], flat[1::2], strict=True))


# KEYS: the jobs stream. ARGV: group, the parked consumer, this bridge's consumer, route max,
# take count, lane prefix, lanes (ring) prefix, the job field, the default priority, then the
# priorities, highest first. Returns {routed, newest id, {{id, deliveries, fields}, ...}}.
_ROUTE_AND_TAKE_LUA = """
local group, parked, me = ARGV[1], ARGV[2], ARGV[3]
local route_max, want = tonumber(ARGV[4]), tonumber(ARGV[5])
local lane_p, ring_p, job_field, default = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local known = {}
for i = 10, #ARGV do known[ARGV[i]] = true end

local function lane_of(fields)
  local prio, producer = default, ''
  for i = 1, #fields, 2 do
    if fields[i] == job_field then
      local ok, doc = pcall(cjson.decode, fields[i + 1])
      if ok and type(doc) == 'table' then
        if type(doc.priority) == 'string' and known[doc.priority] then prio = doc.priority end
        if type(doc.producer) == 'string' and #doc.producer <= 100 then
          producer = doc.producer
        end
      end
    end
  end
  return prio, producer
end

local routed = 0
local r = redis.call('XREADGROUP', 'GROUP', group, parked, 'COUNT', route_max,
                     'STREAMS', KEYS[1], '>')
if r then
  for _, e in ipairs(r[1][2]) do
    local prio, producer = lane_of(e[2] or {})
    if redis.call('RPUSH', lane_p .. prio .. ':' .. producer, e[1]) == 1 then
      redis.call('RPUSH', ring_p .. prio, producer)
    end
    routed = routed + 1
  end
end

local taken = {}
for i = 10, #ARGV do
  local ring = ring_p .. ARGV[i]
  while #taken < want do
    local producer = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
    if not producer then break end
    local lane = lane_p .. ARGV[i] .. ':' .. producer
    local id = redis.call('LPOP', lane)
    if redis.call('LLEN', lane) == 0 then redis.call('LREM', ring, -1, producer) end
    if id and #redis.call('XCLAIM', KEYS[1], group, me, 0, id, 'JUSTID') > 0 then
      local found = redis.call('XRANGE', KEYS[1], id, id)
      local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
      local fields = (found[1] and found[1][2]) or {}
      table.insert(taken, {id, (p[1] and p[1][4]) or 1, fields})
    end
  end
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
return {routed, (newest[1] and newest[1][1]) or '0-0', taken}
"""
