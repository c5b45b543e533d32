"""Cost of trimming the jobs stream (raybridge/stream_trim.py) on a private redis-server.

    .venv/bin/python scripts/jobs_trim_cost.py [ENTRIES_PER_TRIM ...]

For each size: that many entries XADDed (a typical request, ~150 bytes), delivered to the
``bridge`` group and acknowledged, 50 more left pending; then one trim. Prints one JSON line
per size: the script's time in Redis (``INFO commandstats``), the round trip seen by the
bridge's client, and both per job trimmed. The bridge trims once per heartbeat
(``VIDBRIEF_HEARTBEAT_SECONDS``), so a trim removes the jobs acknowledged since the last one.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis

from ingest.names import BRIDGE_GROUP, JOB_FIELD, RedisNames
from ingest.redis_server import start_redis_server
from raybridge.stream_trim import JobsTrimmer

REQUEST = json.dumps({"url": "https://videos.example.com/talk-0001.mp4", "job_id": "job-0001"})
PENDING = 50


async def one(url: str, entries: int) -> dict[str, float]:
    names = RedisNames()
    r = aioredis.from_url(url, decode_responses=True)
    await r.delete(names.jobs)
    await r.xgroup_create(names.jobs, BRIDGE_GROUP, id="0", mkstream=True)
    async with r.pipeline(transaction=False) as pipe:
        for _ in range(entries + PENDING):
            pipe.xadd(names.jobs, {JOB_FIELD: REQUEST})
        await pipe.execute()
    reply = await r.xreadgroup(BRIDGE_GROUP, "b1", {names.jobs: ">"})
    ids = [sid for sid, _ in reply[0][1]]
    if entries:
        await r.xack(names.jobs, BRIDGE_GROUP, *ids[:entries])
    trimmer = JobsTrimmer(r, names)
    await r.config_resetstat()
    started = time.perf_counter()
    removed = await trimmer.trim()
    round_trip_us = (time.perf_counter() - started) * 1e6
    stats = await r.info("commandstats")
    in_redis_us = float(stats.get("cmdstat_evalsha", stats.get("cmdstat_eval", {})).get("usec", 0))
    await r.aclose()
    return {
        "entries_trimmed": removed,
        "left": entries + PENDING - removed,
        "in_redis_us": round(in_redis_us, 1),
        "round_trip_us": round(round_trip_us, 1),
        "in_redis_us_per_job": round(in_redis_us / max(removed, 1), 2),
        "round_trip_us_per_job": round(round_trip_us / max(removed, 1), 2),
    }


def main(sizes: list[int]) -> None:
    server = start_redis_server(Path(tempfile.mkdtemp()), appendonly=False, daemonize=False)
    try:
        for size in sizes:
            print(json.dumps(asyncio.run(one(server.url, size))))
    finally:
        server.stop()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [0, 120, 1000, 10_000])
