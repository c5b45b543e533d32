"""raybridge.stream_trim on the real test Redis: acknowledged entries leave the jobs stream,
pending and undelivered ones never do, whatever group holds them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis
from fake_launcher import FakeLauncher
from helpers import video, xadd_raw

from ingest.names import BRIDGE_GROUP, JOB_FIELD, RedisNames
from ingest.redis_server import RedisServer
from ingest.settings import Settings
from raybridge.actor import Bridge

pytestmark = pytest.mark.integration


def trim(redis_server: RedisServer, names: RedisNames) -> int:
    from raybridge.stream_trim import JobsTrimmer

    async def go() -> int:
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        try:
            return await JobsTrimmer(client, names).trim()
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_only_entries_every_group_acknowledged_are_trimmed(
    redis_server: RedisServer, redis_client: redis.Redis, names: RedisNames
) -> None:
    r = redis_client
    ids = [r.xadd(names.jobs, {JOB_FIELD: str(n)}) for n in range(10)]
    assert trim(redis_server, names) == 0  # no group yet: nobody has read anything
    r.xgroup_create(names.jobs, BRIDGE_GROUP, id="0")
    r.xreadgroup(BRIDGE_GROUP, "b1", {names.jobs: ">"}, count=6)  # 0..5 delivered
    r.xack(names.jobs, BRIDGE_GROUP, ids[0], ids[1], ids[3])  # 2, 4, 5 still pending

    assert trim(redis_server, names) == 2
    assert [sid for sid, _ in r.xrange(names.jobs)] == ids[2:]  # from the oldest pending on

    r.xack(names.jobs, BRIDGE_GROUP, ids[2], ids[4], ids[5])
    r.xgroup_create(names.jobs, "audit", id=ids[5])  # another group, has read 0..5
    assert trim(redis_server, names) == 4
    assert [sid for sid, _ in r.xrange(names.jobs)] == ids[6:]  # 6..9 never delivered

    r.xreadgroup(BRIDGE_GROUP, "b1", {names.jobs: ">"})
    r.xack(names.jobs, BRIDGE_GROUP, *ids[6:])
    assert trim(redis_server, names) == 0  # "audit" has not read 7..9 yet
    assert [sid for sid, _ in r.xrange(names.jobs)] == ids[6:]


@pytest.mark.chaos
def test_the_bridge_trims_as_it_goes_and_never_a_pending_entry(
    make_settings: Callable[..., Settings],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    jobs = [f"trim-{n:02d}" for n in range(40)]
    for job_id in jobs:
        xadd_raw(redis_client, names, video(job_id))
    missing: list[str] = []

    async def main() -> None:
        settings = make_settings(heartbeat_seconds=0.02, window=4, bridge_name="b1")
        bridge = Bridge(settings, redis_server.url, launcher=FakeLauncher(step_s=0.01))
        runner = asyncio.create_task(bridge.run())
        await bridge.ready()
        while await bridge.redis.xlen(names.jobs):
            await asyncio.sleep(0.01)
            async with bridge.redis.pipeline(transaction=True) as pipe:  # one moment
                pipe.xpending_range(names.jobs, BRIDGE_GROUP, "-", "+", 100)
                pipe.xrange(names.jobs)
                held, rows = await pipe.execute()
            present = {sid for sid, _ in rows}
            missing.extend(p["message_id"] for p in held if p["message_id"] not in present)
            assert asyncio.get_running_loop().time() < deadline, "the stream was not emptied"
        await bridge.drain(grace_s=1)
        await runner

    deadline = 0.0

    async def run() -> None:
        nonlocal deadline
        deadline = asyncio.get_running_loop().time() + 30
        await main()

    asyncio.run(run())
    assert missing == []  # no pending entry was ever gone from the stream
    statuses = {redis_client.hget(names.job(j), "status") for j in jobs}
    assert statuses == {"completed"}
