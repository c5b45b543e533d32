"""Trimming the jobs stream of the entries every consumer group is done with.

An entry is acknowledged when its job's outcome is stored, and is of no use after that; left
in the stream, entries add up (a 10 MB request refused stays there in full). ``XADD MAXLEN``
cannot be used (it would drop entries not yet read), and neither can ``XDEL`` right after
``XACK`` alone: another consumer group on the stream may not have read the entry yet.

So the trim point is computed, in one script (atomic: nothing is delivered or acknowledged in
between), as the lowest of, over every consumer group: its oldest pending entry, or, when none
is pending, the entry after its last delivered one. ``XTRIM MINID`` then removes exactly the
entries below it: each one delivered to every group and acknowledged by it. A pending entry or
one not yet delivered is never removed, and entries after a slow pending one wait for it.

Redis 6.2 has ``XTRIM MINID`` and the fields used from ``XINFO GROUPS`` (``name``, ``pending``,
``last-delivered-id``); 7.0 adds ``entries-read`` and ``lag``, which are not needed.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from ingest.names import RedisNames

# KEYS: the jobs stream. Returns {entries removed, the trim point ('' when none)}.
_TRIM_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function below(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
local floor = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local bound
  if tonumber(info['pending']) > 0 then
    bound = parse(redis.call('XPENDING', KEYS[1], info['name'])[2])
  else
    bound = parse(info['last-delivered-id'])
    bound[2] = bound[2] + 1
  end
  if floor == nil or below(bound, floor) then floor = bound end
end
if floor == nil then return {0, ''} end
local point = string.format('%.0f-%.0f', floor[1], floor[2])
return {redis.call('XTRIM', KEYS[1], 'MINID', point), point}
"""


class JobsTrimmer:
    """Removes the jobs stream's entries that every consumer group has acknowledged."""

    def __init__(self, redis: aioredis.Redis, names: RedisNames) -> None:
        self._names = names
        self._script = redis.register_script(_TRIM_LUA)

    async def trim(self) -> int:
        """Remove the entries below the trim point (see the module docstring); how many."""
        removed, _point = await self._script(keys=[self._names.jobs])
        return int(removed)
