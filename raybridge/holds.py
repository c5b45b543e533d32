"""Node capacity shared by every bridge of a cluster: one hash of holds per node in Redis.

    vidbrief:holds:<node>   <bridge>|<job> → "d|<media s>" (downloading) or "a|<media s>"
                            (downloaded, analysing or waiting for its analyser there); the
                            video's probed duration, which each bridge turns into expected
                            seconds with the node's pace as it measures it

A bridge takes a hold before it launches a job's download on a node (``acquire``: one Lua
script that drops the holds of bridges whose lease lapsed, counts the rest and adds this one
only while the node holds fewer jobs than its capacity — analysers + look-ahead — and fewer
downloads than its download slots), moves it to ``a`` when the download ends and gives it back
when the analysis ends or the job leaves the node. So whatever the number of bridges, a node
never holds more jobs than one bridge alone would give it, and each bridge places with the
others' jobs counted (their count, their downloads, their expected seconds: ``others``).
Moves and releases are sent without waiting for the reply: they only ever free room.

A bridge alone in its cluster keeps no holds (three round trips a job saved): it becomes
``active`` when it sees another bridge's lease (at start, and every node refresh), and then
first writes holds for the jobs it already has on nodes; the newcomer sees them within one node
refresh (2 s) and until then may place a few jobs more on a node than its look-ahead.

Ray's resources already keep the downloads of a node within its slots and the shared analysis
actors (one per GPU) keep analyses within its GPUs; the holds keep the *placement* right.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import redis.asyncio as aioredis

from ingest.names import RedisNames
from raybridge.placement import ClusterSnapshot
from raybridge.window import Phase, Window

log = logging.getLogger(__name__)

DOWNLOADING, ANALYSING = "d", "a"


@dataclass(frozen=True)
class Others:
    """The jobs other (live) bridges hold on one node."""

    jobs: int = 0
    downloading: int = 0
    media_s: float = 0.0


class Holds:
    """One bridge's holds on the nodes, and its view of the others'."""

    def __init__(self, redis: aioredis.Redis, names: RedisNames, bridge: str) -> None:
        self.redis = redis
        self.names = names
        self.bridge = bridge
        self.others: dict[str, Others] = {}
        #: Other bridges share the cluster: holds are taken, moved and given back.
        self.active = False
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._sent: set[asyncio.Task[object]] = set()

    def _field(self, job_id: str) -> str:
        return f"{self.bridge}|{job_id}"

    async def acquire(
        self, node: str, job_id: str, capacity: int, slots: float, media_s: float, force: bool
    ) -> bool:
        """Hold a place for ``job_id`` on ``node`` if there is room (always, with ``force``)."""
        keys = [self.names.holds(node)]
        args = [
            self.names.lease_prefix,
            self._field(job_id),
            f"{DOWNLOADING}|{media_s:.3f}",
            capacity,
            slots,
            1 if force else 0,
            self.bridge,
        ]
        ok, jobs, downloading, expected = await self._acquire(keys=keys, args=args)
        if int(jobs) or node in self.others:  # empty while this bridge is alone
            self.others[node] = Others(int(jobs), int(downloading), float(expected))
        return bool(ok)

    def downloaded(self, node: str, job_id: str, media_s: float) -> None:
        self._send(self.redis.hset(self.names.holds(node), self._field(job_id), f"a|{media_s}"))

    def release(self, node: str, job_id: str) -> None:
        self._send(self.redis.hdel(self.names.holds(node), self._field(job_id)))

    def _send(self, call: object) -> None:
        task = asyncio.ensure_future(call)  # type: ignore[arg-type]
        self._sent.add(task)
        task.add_done_callback(self._sent.discard)

    async def activate(
        self, nodes: Iterable[str], bound: dict[str, list[tuple[str, str, float]]]
    ) -> None:
        """Another bridge appeared: replace this bridge's holds on ``nodes`` by the jobs it now
        has there (``bound``: node → (job, ``d`` or ``a``, media seconds))."""
        keys = [self.names.holds(node) for node in {*nodes, *bound}]
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in keys:
                for field in await self.redis.hkeys(key):
                    if field.startswith(f"{self.bridge}|"):
                        pipe.hdel(key, field)
            for node, jobs in bound.items():
                for job_id, kind, expected in jobs:
                    pipe.hset(self.names.holds(node), self._field(job_id), f"{kind}|{expected}")
            await pipe.execute()
        self.active = True

    async def refresh(self, nodes: Iterable[str]) -> None:
        """Read the other live bridges' holds on ``nodes``."""
        nodes = list(nodes)
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hgetall(self.names.holds(node))
            found = await pipe.execute()
        bridges = sorted({f.partition("|")[0] for h in found for f in h} - {self.bridge})
        leases = await self.redis.mget([self.names.lease(b) for b in bridges]) if bridges else []
        alive = {b for b, v in zip(bridges, leases, strict=True) if v is not None}
        found_others = {
            n: _others(h, self.bridge, alive) for n, h in zip(nodes, found, strict=True)
        }
        self.others = found_others if alive else {}

    async def bridges_holding(self, nodes: Iterable[str]) -> dict[str, dict[str, int]]:
        """node → bridge → jobs held (``status --cluster``)."""
        out: dict[str, dict[str, int]] = {}
        for node in nodes:
            for field in await self.redis.hkeys(self.names.holds(node)):
                bridge = field.partition("|")[0]
                out.setdefault(node, {}).setdefault(bridge, 0)
                out[node][bridge] += 1
        return out

    async def close(self) -> None:
        if self._sent:
            await asyncio.gather(*self._sent, return_exceptions=True)


def _others(holds: dict[str, str], me: str, alive: set[str]) -> Others:
    jobs = downloading = 0
    expected = 0.0
    for field, value in holds.items():
        bridge = field.partition("|")[0]
        if bridge == me or bridge not in alive:
            continue
        kind, _, seconds = value.partition("|")
        jobs += 1
        downloading += kind == DOWNLOADING
        expected += float(seconds or 0)
    return Others(jobs, downloading, expected)  # media seconds


# KEYS: the node's holds. ARGV: lease prefix, this hold's field, its value, capacity, download
# slots, force (1/0), this bridge. Drops holds of bridges without a lease; adds this one if the
# node has room (or force). Returns {added, other bridges' jobs, their downloads, their media
# seconds} as counted before adding.
_ACQUIRE_LUA = """
local all = redis.call('HGETALL', KEYS[1])
local alive, jobs, downloading, others, other_dl, other_s = {}, 0, 0, 0, 0, 0
for i = 1, #all, 2 do
  local bridge = string.match(all[i], '^(.-)|')
  if alive[bridge] == nil then
    alive[bridge] = redis.call('EXISTS', ARGV[1] .. bridge) == 1
  end
  if alive[bridge] then
    local kind, seconds = string.match(all[i + 1], '^(%a)|(.*)$')
    jobs = jobs + 1
    if kind == 'd' then downloading = downloading + 1 end
    if bridge ~= ARGV[7] then
      others = others + 1
      if kind == 'd' then other_dl = other_dl + 1 end
      other_s = other_s + (tonumber(seconds) or 0)
    end
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
local room = jobs < tonumber(ARGV[4]) and downloading < tonumber(ARGV[5])
if room or ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
return {(room or ARGV[6] == '1') and 1 or 0, others, other_dl, tostring(other_s)}
"""


def holds_of(window: Window) -> dict[str, list[tuple[str, str, float]]]:
    """A bridge's jobs on nodes now, as holds: node → (job, kind, media s)."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    for slot in window:
        if slot.node_id is not None and slot.phase in (Phase.DOWNLOADING, Phase.ANALYSING):
            kind = DOWNLOADING if slot.phase is Phase.DOWNLOADING else ANALYSING
            out.setdefault(slot.node_id, []).append((slot.job_id, kind, slot.media_s or 0.0))
    return out


def with_others_backlog(snapshot: ClusterSnapshot, others: Mapping[str, Others]) -> ClusterSnapshot:
    """The nodes with the other bridges' jobs added: their media seconds at each node's pace
    as this bridge measures it (the cluster's mean where it has none)."""
    if not others:
        return snapshot
    mean = snapshot.mean_pace
    return ClusterSnapshot(
        tuple(
            replace(n, backlog_s=(n.backlog_s or 0.0) + others[n.node_id].media_s * p)
            if n.node_id in others and (p := n.pace if n.pace is not None else mean)
            else n
            for n in snapshot.nodes
        )
    )
