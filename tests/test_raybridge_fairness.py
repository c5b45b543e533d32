"""Who goes first, and who takes over: priorities, producers in turn, several bridges, a dead
bridge's entries. The bridges run with the fake launcher (steps are asyncio sleeps) against the
real test Redis, so each case takes a second or two; tests/test_raybridge_scale.py runs the
same guarantees on a simulated Ray cluster.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from fake_launcher import FakeLauncher
from helpers import count_events, events, group_idle, states, xadd_raw

from ingest.events import EventType
from ingest.models import JobStatus
from ingest.names import BRIDGE_GROUP, JOB_FIELD, PARKED_CONSUMER, RedisNames
from ingest.redis_server import RedisServer
from ingest.settings import Settings
from raybridge.actor import Bridge
from raybridge.fairness import FairQueue

pytestmark = pytest.mark.integration

POLL_S = 0.01
TIMEOUT_S = 30.0


async def until(check: Callable[[], Any], timeout_s: float = TIMEOUT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(POLL_S)


async def run_bridges(bridges: list[Bridge], during: Callable[[], Awaitable[Any]]) -> None:
    """Start every bridge's loop, await ``during()``, then drain them all."""
    runners = [asyncio.create_task(b.run()) for b in bridges]
    await asyncio.gather(*(b.ready() for b in bridges))
    try:
        await during()
    finally:
        await asyncio.gather(*(b.drain(grace_s=1) for b in bridges))
        await asyncio.gather(*runners)


@pytest.fixture
def make_bridge(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> Callable[..., Bridge]:
    def make(name: str = "b1", step_s: float = 0.01, **overrides: object) -> Bridge:
        settings = make_settings(bridge_name=name, **overrides)
        launcher = FakeLauncher(step_s=step_s)
        bridge = Bridge(settings, redis_server.url, launcher=launcher)
        launcher.window = lambda: bridge.window
        return bridge

    return make


def job(job_id: str, producer: str | None = None, priority: str | None = None) -> dict[str, str]:
    doc = {"url": f"https://videos.example.com/{job_id}.mp4", "job_id": job_id}
    doc |= {"producer": producer} if producer else {}
    return doc | ({"priority": priority} if priority else {})


def accepted_order(client: redis.Redis, names: RedisNames) -> list[str]:
    return [e.job_id for e in events(client, names) if e.type == EventType.ACCEPTED]


def completed_order(client: redis.Redis, names: RedisNames) -> list[str]:
    return [e.job_id for e in events(client, names) if e.type == EventType.COMPLETED]


def test_a_flooding_producer_does_not_starve_one_that_comes_later(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    window, flood, few = 4, 60, 5
    a_jobs = [f"a-{n:03d}" for n in range(flood)]
    b_jobs = [f"b-{n:03d}" for n in range(few)]
    for job_id in a_jobs:
        xadd_raw(redis_client, names, job(job_id, "A"))
    for job_id in b_jobs:
        xadd_raw(redis_client, names, job(job_id, "B"))
    bridge = make_bridge(window=window)
    asyncio.run(run_bridges([bridge], lambda: until(lambda: group_idle(redis_client, names))))

    started = accepted_order(redis_client, names)
    assert sorted(started) == sorted(a_jobs + b_jobs)  # each started once
    # The bound (raybridge/fairness.py): B's k-th job is taken within 2k takes of its arrival,
    # and A had at most one window in flight before: B's last starts before A's window+few+1-th.
    a_before_last_b = started[: started.index(b_jobs[-1])]
    assert sum(j.startswith("a-") for j in a_before_last_b) <= window + few
    done = completed_order(redis_client, names)
    assert done.index(b_jobs[-1]) < done.index(a_jobs[2 * (window + few)])
    assert [j for j in started if j.startswith("a-")] == a_jobs  # each producer in its order


def test_a_high_priority_job_starts_at_the_next_free_slot_behind_a_backlog(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    normal = [f"n-{n:03d}" for n in range(40)]
    for job_id in normal:
        xadd_raw(redis_client, names, job(job_id, "A"))
    bridge = make_bridge(window=4, step_s=0.02)
    started_when_sent: list[int] = []

    async def during() -> None:
        await until(lambda: len(completed_order(redis_client, names)) >= 6)
        started_when_sent.append(len(accepted_order(redis_client, names)))
        xadd_raw(redis_client, names, job("urgent", "A", "high"))
        await until(lambda: group_idle(redis_client, names))

    asyncio.run(run_bridges([bridge], during))
    started = accepted_order(redis_client, names)
    # At most one read already under way when it was sent takes normal jobs first: it starts
    # within one window turnover, ahead of the 30-odd normal jobs still waiting.
    assert started.index("urgent") <= started_when_sent[0] + bridge.window.capacity
    assert started.index("urgent") < len(normal) - 20
    assert states(redis_client, names, ["urgent"])["urgent"].status is JobStatus.COMPLETED


def test_three_bridges_complete_every_job_exactly_once(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    job_ids = [f"multi-{n:03d}" for n in range(60)]
    for n, job_id in enumerate(job_ids):
        xadd_raw(redis_client, names, job(job_id, f"p{n % 3}"))
    bridges = [make_bridge(f"b{i}", window=4) for i in range(3)]
    asyncio.run(run_bridges(bridges, lambda: until(lambda: group_idle(redis_client, names))))

    evs = events(redis_client, names)
    assert count_events(evs, EventType.COMPLETED) == dict.fromkeys(job_ids, 1)
    assert count_events(evs, EventType.ACCEPTED) == dict.fromkeys(job_ids, 1)
    ran_on = {s.job_id: s for s in states(redis_client, names, job_ids).values()}
    assert {s.status for s in ran_on.values()} == {JobStatus.COMPLETED}
    by_bridge = {b.settings.bridge_name: b.window.high_water for b in bridges}
    assert all(high > 0 for high in by_bridge.values()), by_bridge  # all three took work


def test_a_dead_bridges_entries_are_taken_over_and_a_live_ones_are_not(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    redis_client.xgroup_create(names.jobs, BRIDGE_GROUP, id="0", mkstream=True)
    dead = [xadd_raw(redis_client, names, job(f"dead-{n}")) for n in range(3)]
    redis_client.xreadgroup(BRIDGE_GROUP, "crashed", {names.jobs: ">"}, count=3)
    live = xadd_raw(redis_client, names, job("live-0"))
    redis_client.xreadgroup(BRIDGE_GROUP, "busy", {names.jobs: ">"}, count=1)
    redis_client.set(names.lease("busy"), "1", px=60_000)  # a live bridge, working on it
    bridge = make_bridge(window=8, lease_seconds=0.6)

    async def during() -> None:
        t0 = asyncio.get_running_loop().time()
        await until(
            lambda: (
                all(
                    s.status.finished
                    for s in states(redis_client, names, ["dead-0", "dead-1", "dead-2"]).values()
                )
                and len(states(redis_client, names, ["dead-0", "dead-1", "dead-2"])) == 3
            )
        )
        assert asyncio.get_running_loop().time() - t0 < 5  # not after an idle time of minutes

    asyncio.run(run_bridges([bridge], during))
    owners = {
        r["message_id"]: r["consumer"]
        for r in redis_client.xpending_range(names.jobs, BRIDGE_GROUP, "-", "+", 10)
    }
    assert owners == {live: "busy"}  # the live bridge keeps its entry
    assert [c["name"] for c in redis_client.xinfo_consumers(names.jobs, BRIDGE_GROUP)].count(
        "crashed"
    ) == 0  # the dead consumer, emptied, is gone
    assert len(dead) == 3
    completed = count_events(events(redis_client, names), EventType.COMPLETED)
    assert completed == {f"dead-{n}": 1 for n in range(3)}


def test_unparseable_requests_are_routed_and_then_dead_lettered_as_before(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    redis_client.xadd(names.jobs, {JOB_FIELD: "not json"})
    redis_client.xadd(names.jobs, {JOB_FIELD: json.dumps({"url": "x", "priority": "urgent"})})
    xadd_raw(redis_client, names, job("fine", "A", "low"))
    bridge = make_bridge()
    asyncio.run(run_bridges([bridge], lambda: until(lambda: group_idle(redis_client, names))))
    assert redis_client.xlen(names.dead) == 2
    assert count_events(events(redis_client, names), EventType.COMPLETED) == {"fine": 1}


def test_waiting_ids_are_reported_per_priority_and_producer(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    import redis.asyncio as aioredis

    for n in range(3):
        xadd_raw(redis_client, names, job(f"x{n}", "A"))
    xadd_raw(redis_client, names, job("y", "B", "high"))
    redis_client.xgroup_create(names.jobs, BRIDGE_GROUP, id="0", mkstream=True)

    async def main() -> tuple[list[str], dict[str, dict[str, int]]]:
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        try:
            queue = FairQueue(client, names, "b1")
            taken = await queue.take(1)
            return [e.stream_id for e in taken.entries], await queue.waiting()
        finally:
            await client.aclose()

    taken, waiting = asyncio.run(main())
    assert len(taken) == 1
    assert waiting == {"normal": {"A": 3}}  # the high one was taken first
    owners = [
        r["consumer"] for r in redis_client.xpending_range(names.jobs, BRIDGE_GROUP, "-", "+", 10)
    ]
    assert sorted(owners) == [PARKED_CONSUMER] * 3 + ["b1"]


def test_an_own_entry_left_pending_while_the_bridge_lives_is_run_again_after_the_idle_time(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    bridge = make_bridge(claim_idle_ms=300)

    async def during() -> None:
        # As after an outcome that could not be stored: pending under its own name, not in
        # its window, after its start-up recovery.
        await until(lambda: bridge.window.capacity > 0 and bridge._own_cursor is None)
        xadd_raw(redis_client, names, job("left"))
        redis_client.xreadgroup(BRIDGE_GROUP, "b1", {names.jobs: ">"}, count=1)
        await until(lambda: group_idle(redis_client, names))

    asyncio.run(run_bridges([bridge], during))
    assert count_events(events(redis_client, names), EventType.COMPLETED) == {"left": 1}
