"""The bridge's loop without Ray: a fake launcher (tests/fake_launcher.py) runs each step as an
asyncio sleep, so the loop — backpressure, placement look-ahead, cancel requests, drain and
recovery, the heartbeat — runs against the real test Redis in well under a second per case.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from fake_launcher import FakeLauncher
from helpers import count_events, events, group_idle, pending, states, video, xadd_raw

from ingest.client import Client
from ingest.events import EventType
from ingest.models import JobStatus
from ingest.names import BRIDGE_GROUP, PARKED_CONSUMER, RedisNames
from ingest.redis_server import RedisServer
from ingest.settings import Settings
from raybridge.actor import Bridge
from raybridge.window import Window

pytestmark = pytest.mark.integration

POLL_S = 0.02
LOOP_TIMEOUT_S = 10.0


async def until(check: Callable[[], Any], timeout_s: float = LOOP_TIMEOUT_S) -> None:
    """Let the bridge's loop run until ``check()`` is true."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(POLL_S)


async def run_bridge(
    bridge: Bridge, during: Callable[[], Awaitable[Any]], grace_s: float = 1
) -> dict[str, Any]:
    """Start the loop, await ``during()``, then drain; return the drain's stats."""
    runner = asyncio.create_task(bridge.run())
    await bridge.ready()
    try:
        await during()
    finally:
        stats = await bridge.drain(grace_s=grace_s)
        await runner
    outliving = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert outliving == [], "a task of the bridge outlived its drain"
    return stats


@pytest.fixture
def make_bridge(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> Callable[..., Bridge]:
    """A Bridge with a fake launcher, built inside the running event loop."""

    def make(launcher: FakeLauncher | None = None, **overrides: object) -> Bridge:
        settings = make_settings(**{"retry_backoff_seconds": 0.01, **overrides})
        launcher = launcher or FakeLauncher()
        bridge = Bridge(settings, redis_server.url, launcher=launcher)
        launcher.window = lambda: bridge.window
        return bridge

    return make


def test_window_and_lookahead_bound_the_work(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    job_ids = [f"fake-{n}" for n in range(15)]
    for job_id in job_ids:
        xadd_raw(redis_client, names, video(job_id))
    launcher = FakeLauncher()

    async def main() -> Bridge:
        bridge = make_bridge(launcher, window=5, download_lookahead=1)
        await run_bridge(bridge, lambda: until(lambda: group_idle(redis_client, names)))
        return bridge

    bridge = asyncio.run(main())
    found = states(redis_client, names, job_ids)
    assert {s.status for s in found.values()} == {JobStatus.COMPLETED}
    assert bridge.window.high_water == 5
    assert launcher.most_on_node <= 2  # one analyser + a look-ahead of one
    completed = count_events(events(redis_client, names), EventType.COMPLETED)
    assert completed == dict.fromkeys(job_ids, 1)


def test_a_cancel_request_stops_a_running_job(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    client = Client(redis_client, names)
    client.submit({"url": "https://example.com/long.mp4", "job_id": "long"})

    async def during(bridge: Bridge) -> None:
        await until(lambda: "long" in bridge.window and bridge.window.get("long").refs)
        client.cancel("long")  # through the control stream, as `vidbrief cancel` does
        await until(lambda: group_idle(redis_client, names))

    async def main() -> None:
        bridge = make_bridge(FakeLauncher(step_s=5.0))
        await run_bridge(bridge, lambda: during(bridge))

    asyncio.run(main())
    assert states(redis_client, names, ["long"])["long"].status is JobStatus.CANCELLED
    assert count_events(events(redis_client, names), EventType.CANCELLED) == {"long": 1}


def test_a_drained_bridge_leaves_its_jobs_pending_and_the_next_one_finishes_them(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    job_ids = [f"drain-{n}" for n in range(4)]
    for job_id in job_ids:
        xadd_raw(redis_client, names, video(job_id))

    async def first() -> dict[str, Any]:
        bridge = make_bridge(FakeLauncher(step_s=5.0), window=2)
        return await run_bridge(bridge, lambda: until(lambda: bridge.window.free == 0), grace_s=0)

    stats = asyncio.run(first())
    assert stats["left_pending"] == 2 and pending(redis_client, names) == 4
    # Its two stay under its name; the other two wait in the fair-share lanes.
    owners = Counter(
        r["consumer"] for r in redis_client.xpending_range(names.jobs, BRIDGE_GROUP, "-", "+", 10)
    )
    assert owners == {"bridge-1": 2, PARKED_CONSUMER: 2}
    assert not redis_client.hexists(names.bridges, "bridge-1")  # heartbeat removed
    assert not redis_client.exists(names.lease("bridge-1"))  # lease given back

    async def second() -> None:
        bridge = make_bridge()  # same name: its own pending entries first, then the rest
        await run_bridge(bridge, lambda: until(lambda: group_idle(redis_client, names)))

    asyncio.run(second())
    completed = count_events(events(redis_client, names), EventType.COMPLETED)
    assert completed == dict.fromkeys(job_ids, 1)


def test_an_entry_being_admitted_as_a_drain_begins_stays_pending_and_does_not_run(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    for job_id in ("first", "second"):
        xadd_raw(redis_client, names, video(job_id))

    async def main() -> dict[str, Any]:
        bridge = make_bridge(FakeLauncher(step_s=5.0), window=2)
        accept_new = bridge.stream.accept_new

        async def slow_accept(*args: Any) -> bool:  # a slow Redis: the drain comes meanwhile
            await asyncio.sleep(0.3)
            return await accept_new(*args)

        bridge.stream.accept_new = slow_accept  # type: ignore[method-assign]
        return await run_bridge(bridge, lambda: until(lambda: bridge.window.free == 0), 0)

    stats = asyncio.run(main())  # run_bridge checks that no job task outlives the drain
    assert stats["left_pending"] == 2 and pending(redis_client, names) == 2
    assert count_events(events(redis_client, names), EventType.COMPLETED) == {}


class Closed:
    """A backpressure policy that admits nothing (Ray Data's one-method interface)."""

    def can_add_input(self, window: Window) -> bool:
        return False


def test_the_backpressure_policy_decides_whether_the_bridge_reads(
    make_settings: Callable[..., Settings],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    xadd_raw(redis_client, names, video("waits"))

    async def main() -> dict[str, Any]:
        bridge = Bridge(make_settings(), redis_server.url, launcher=FakeLauncher(), policy=Closed())
        heartbeat = lambda: redis_client.hget(names.bridges, "bridge-1")  # noqa: E731
        return await run_bridge(bridge, lambda: until(heartbeat))

    stats = asyncio.run(main())
    assert stats["in_flight"] == 0 and stats["nodes"] == 1
    assert pending(redis_client, names) == 0 and redis_client.xlen(names.jobs) == 1
    assert not redis_client.exists(names.job("waits"))  # never read, so never accepted


def test_the_heartbeat_shows_the_window_and_the_nodes(
    make_bridge: Callable[..., Bridge], redis_client: redis.Redis, names: RedisNames
) -> None:
    beats: list[dict[str, Any]] = []

    async def during() -> None:
        await until(lambda: redis_client.hget(names.bridges, "bridge-1"))
        beats.append(json.loads(redis_client.hget(names.bridges, "bridge-1")))

    asyncio.run(run_bridge(make_bridge(window=3, heartbeat_seconds=0.05), during))
    [beat] = beats
    assert beat["window"] == 3 and beat["in_flight"] == 0 and beat["draining"] is False
    assert beat["analysers"] == {"node-a": 1}
    assert [row["node_id"] for row in beat["cluster"]] == ["node-a"]
