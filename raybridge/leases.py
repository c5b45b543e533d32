"""Which bridges are alive, and what happens to the entries of one that is not.

Every bridge holds a lease, ``vidbrief:lease:<bridge>``: a key with a time to live of
``VIDBRIEF_LEASE_SECONDS``, renewed three times per period. It is set before the bridge reads
anything and deleted when it stops. A bridge that dies (SIGKILL, a lost node) stops renewing,
and its lease lapses within one period.

Every ``lease_seconds / 3`` each bridge looks at the consumers of the group ``bridge``: the
entries pending under a consumer without a lease (a dead or stopped bridge) are claimed — one
Lua script per consumer that checks the lease and claims (XCLAIM, which counts a delivery) in
one step, so a bridge that comes back under the same name keeps what it re-reads itself, and
two bridges never claim one entry. The claimed entries are admitted like any other (a job
resumes from its last finished step). So a dead bridge's jobs go on elsewhere seconds after it
died, not after an idle time. The consumer ``:parked`` (entries waiting in fair-share lanes,
fairness.py) is never claimed; a consumer with no lease and nothing pending is deleted.

A bridge's *own* entries can be left pending too, while it lives: an outcome it could not
store (Redis down a moment) leaves the job's entry pending and the job out of its window. The
same sweep claims those back once idle ``VIDBRIEF_CLAIM_IDLE_MS`` (never the ones in its
window), and they run again (a finished step is not redone).

The same leases tell which bridges' holds on nodes still count (holds.py).
"""

from __future__ import annotations

import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ingest.names import BRIDGE_GROUP, PARKED_CONSUMER, RedisNames
from raybridge.stream import Entry

log = logging.getLogger(__name__)

#: The lease is renewed this many times per lease period.
RENEWALS_PER_LEASE = 3
#: An entry claimed by another bridge less than this long ago is left to it (a claim race).
CLAIM_MIN_IDLE_MS = 200


class Leases:
    """One bridge's lease, and its claims on the entries of bridges without one."""

    def __init__(
        self, redis: aioredis.Redis, names: RedisNames, consumer: str, lease_seconds: float
    ) -> None:
        self.redis = redis
        self.names = names
        self.consumer = consumer
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self._claim = redis.register_script(_CLAIM_ORPHANS_LUA)

    @property
    def renew_every_s(self) -> float:
        return self.lease_ms / 1000 / RENEWALS_PER_LEASE

    async def renew(self) -> None:
        await self.redis.set(self.names.lease(self.consumer), "1", px=self.lease_ms)

    async def release(self) -> None:
        await self.redis.delete(self.names.lease(self.consumer))

    async def alive(self, bridges: list[str]) -> set[str]:
        """Which of ``bridges`` hold a lease now."""
        if not bridges:
            return set()
        found = await self.redis.mget([self.names.lease(b) for b in bridges])
        return {b for b, v in zip(bridges, found, strict=True) if v is not None}

    async def claim_orphans(self, count: int) -> list[Entry]:
        """Claim up to ``count`` entries pending under consumers that hold no lease."""
        try:
            consumers = await self.redis.xinfo_consumers(self.names.jobs, BRIDGE_GROUP)
        except ResponseError:  # no group yet
            return []
        claimed: list[Entry] = []
        for consumer in consumers:
            name = consumer["name"]
            if name in (self.consumer, PARKED_CONSUMER) or len(claimed) >= count:
                continue
            claimed += await self._claim_from(name, count - len(claimed))
        return claimed

    async def claim_own_stale(
        self, count: int, min_idle_ms: int, in_window: set[str]
    ) -> list[Entry]:
        """This bridge's own pending entries idle ``min_idle_ms`` and not in its window."""
        rows = await self.redis.xpending_range(
            self.names.jobs,
            BRIDGE_GROUP,
            "-",
            "+",
            count + len(in_window),
            consumername=self.consumer,
            idle=min_idle_ms,
        )
        ids = [r["message_id"] for r in rows if r["message_id"] not in in_window][:count]
        if not ids:
            return []
        claimed = await self.redis.xclaim(
            self.names.jobs, BRIDGE_GROUP, self.consumer, min_idle_ms, ids
        )
        out = []
        for sid, fields in claimed:
            found = await self.redis.xpending_range(self.names.jobs, BRIDGE_GROUP, sid, sid, 1)
            deliveries = int(found[0]["times_delivered"]) if found else 1
            out.append(Entry(sid, fields or {}, deliveries))
        return out

    async def _claim_from(self, name: str, count: int) -> list[Entry]:
        keys = [self.names.jobs, self.names.lease(name)]
        args = [BRIDGE_GROUP, name, self.consumer, count, CLAIM_MIN_IDLE_MS]
        reply = await self._claim(keys=keys, args=args)
        if reply:
            log.info("claimed %d entries of bridge %s (no lease)", len(reply), name)
        return [Entry(sid, _pairs(fields), int(n)) for sid, n, fields in reply]

    async def forget(self) -> None:
        """Stop: release the lease so that others claim what is left at once."""
        with contextlib.suppress(Exception):
            await self.release()


def _pairs(flat: list[str] | None) -> dict[str, str]:
    flat = flat or []
    return dict(zip(flat[::2], flat[1::2], strict=True))


# KEYS: jobs stream, the other consumer's lease. ARGV: group, that consumer, this consumer,
# count, min idle ms. Nothing when the lease exists; else its pending entries (up to count),
# claimed, as {id, deliveries, fields}; a consumer with none left is deleted.
_CLAIM_ORPHANS_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local group, other, me = ARGV[1], ARGV[2], ARGV[3]
local pend = redis.call('XPENDING', KEYS[1], group, 'IDLE', ARGV[5], '-', '+', ARGV[4], other)
local out = {}
for _, p in ipairs(pend) do
  local got = redis.call('XCLAIM', KEYS[1], group, me, ARGV[5], p[1])
  if got[1] then
    local n = redis.call('XPENDING', KEYS[1], group, p[1], p[1], 1)
    table.insert(out, {p[1], (n[1] and n[1][4]) or 1, got[1][2] or {}})
  end
end
if #redis.call('XPENDING', KEYS[1], group, '-', '+', 1, other) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, other)
end
return out
"""
