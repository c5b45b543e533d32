"""CPU per job of the bridge's own loop, without Ray: the real Bridge on a private redis-server,
the tests' fake launcher with steps that take no time, N jobs through a window of 8.

    .venv/bin/python scripts/bridge_loop_cpu.py [JOBS]

Prints one JSON object: milliseconds of this process's CPU per job — the read loop, admission,
the job coroutines, storing outcomes, and redis-py's share of the round trips — which is what a
change to ``raybridge/`` can make dearer. ``vidbrief bench bridge`` measures the whole service
with Ray; on a shared machine its figures move with the neighbours, this one much less.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_launcher import FakeLauncher

from ingest.names import BRIDGE_GROUP, JOB_FIELD, RedisNames
from ingest.redis_server import start_redis_server
from ingest.settings import Settings
from raybridge.actor import Bridge

DEFAULT_JOBS = 2000
WINDOW = 8
POLL_S = 0.05


def settings_for(url: str, folder: Path) -> Settings:
    return Settings(
        redis_url=url,
        state_dir=folder / "state",
        work_dir=folder / "work",
        reports_url=str(folder / "reports"),
        window=WINDOW,
        heartbeat_seconds=60,
        node_refresh_seconds=60,
        _env_file=None,  # type: ignore[call-arg]
    )


async def loop_cpu_s(settings: Settings, url: str) -> float:
    """CPU seconds of this process from the bridge being ready until every entry is acked."""
    bridge = Bridge(settings, url, launcher=FakeLauncher(step_s=0.0))
    runner = asyncio.create_task(bridge.run())
    await bridge.ready()
    started = time.process_time()
    while not await _all_acked(bridge):
        await asyncio.sleep(POLL_S)
    cpu = time.process_time() - started
    await bridge.drain(grace_s=1)
    await runner
    return cpu


async def _all_acked(bridge: Bridge) -> bool:
    """Every entry delivered to the group and acknowledged."""
    groups = await bridge.redis.xinfo_groups(bridge.names.jobs)
    [group] = [g for g in groups if g["name"] == BRIDGE_GROUP]
    [(newest, _)] = await bridge.redis.xrevrange(bridge.names.jobs, count=1)
    return group["pending"] == 0 and group["last-delivered-id"] == newest


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_JOBS
    folder = Path(tempfile.mkdtemp(prefix="vidbrief-loop-"))
    server = start_redis_server(folder / "redis", appendonly=False, daemonize=False)
    try:
        client, names = server.client(), RedisNames()
        with client.pipeline(transaction=False) as pipe:
            for i in range(jobs):
                request = {"url": f"https://example.com/{i}.mp4", "job_id": f"loop-{i}"}
                pipe.xadd(names.jobs, {JOB_FIELD: json.dumps(request)})
            pipe.execute()
        cpu = asyncio.run(loop_cpu_s(settings_for(server.url, folder), server.url))
        print(json.dumps({"jobs": jobs, "cpu_ms_per_job": round(1000 * cpu / jobs, 3)}))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
