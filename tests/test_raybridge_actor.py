"""The bridge's loop without Ray: a fake launcher runs each step as an asyncio sleep.

``Bridge`` takes its launcher as an argument (the outside world is injected), so its loop —
backpressure, placement look-ahead, admission, retries, outcomes — runs here against the real
test Redis in well under a second per case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import redis
from helpers import count_events, events, group_idle, states, video, xadd_raw

from ingest.errors import StepError
from ingest.events import EventType
from ingest.models import JobStatus
from ingest.names import RedisNames
from ingest.redis_server import RedisServer
from ingest.settings import Settings
from pipeline.chain import CHAIN
from pipeline.context import JobContext
from raybridge.actor import Bridge
from raybridge.outcome import Failure, FailureKind
from raybridge.placement import NodeView

pytestmark = pytest.mark.integration

STEP_S = 0.02
NODE = "node-a"


class FakeLauncher:
    """One node with one analyser; steps sleep; records how many jobs the node held at once."""

    def __init__(self, bridge_window: Callable[[], Any], fail: Mapping[str, int] | None = None):
        self.window = bridge_window
        self.fail = dict(fail or {})  # job id -> attempts that fail (retryable) in "brief"
        self.most_on_node = 0

    @staticmethod
    def nodes() -> list[NodeView]:
        return [NodeView(NODE, gpus=1, download_slots=1)]

    def start_analyser(self, node_id: str, *, on_gpu: bool) -> tuple[object, asyncio.Future[str]]:
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        ready.set_result(node_id)
        return object(), ready

    @staticmethod
    def stop_analyser(handle: object) -> None:
        pass

    def launch(
        self, ctx: JobContext, node_id: str, analyser: object, done: Mapping[str, Any]
    ) -> dict[str, Any]:
        held = self.window().assigned_per_node()[NODE]
        self.most_on_node = max(self.most_on_node, held)
        refs, previous = dict(done), None
        for spec in CHAIN:
            if spec.name not in refs:
                refs[spec.name] = asyncio.ensure_future(self._step(ctx, spec.name, previous))
            previous = refs[spec.name]
        return {s.name: refs[s.name] for s in CHAIN}

    async def _step(self, ctx: JobContext, step: str, previous: Any) -> dict[str, str]:
        if previous is not None:
            await previous
        await asyncio.sleep(STEP_S)
        if step == "brief" and ctx.attempt <= self.fail.get(ctx.job_id, 0):
            raise StepError(f"flaky brief, attempt {ctx.attempt}", step=step, retryable=True)
        return {"step": step, "job_id": ctx.job_id}

    @staticmethod
    def cancel(refs: Any) -> None:
        for ref in refs:
            ref.cancel()

    @staticmethod
    def classify(error: BaseException, step: str) -> Failure:
        retryable = isinstance(error, StepError) and error.retryable
        kind = FailureKind.RETRYABLE if retryable else FailureKind.PERMANENT
        return Failure(kind, step, type(error).__name__, str(error))


async def run_until_done(bridge: Bridge, client: redis.Redis, names: RedisNames) -> None:
    runner = asyncio.create_task(bridge.run())
    await bridge.ready()
    for _ in range(400):
        await asyncio.sleep(0.025)
        if group_idle(client, names):
            break
    await bridge.drain(grace_s=1)
    await runner


@pytest.fixture
def make_bridge(
    make_settings: Callable[..., Settings], redis_server: RedisServer
) -> Callable[..., tuple[Bridge, FakeLauncher]]:
    def make(fail: Mapping[str, int] | None = None, **overrides: object) -> tuple[Bridge, Any]:
        settings = make_settings(retry_backoff_seconds=0.01, **overrides)
        launcher = FakeLauncher(lambda: bridge.window, fail)
        bridge = Bridge(settings, redis_server.url, launcher=launcher)
        return bridge, launcher

    return make


def test_window_and_lookahead_bound_the_work_without_ray(
    make_bridge: Callable[..., tuple[Bridge, FakeLauncher]],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    bridge, launcher = make_bridge(window=5, download_lookahead=1)
    job_ids = [f"fake-{n}" for n in range(15)]
    for job_id in job_ids:
        xadd_raw(redis_client, names, video(job_id))
    asyncio.run(run_until_done(bridge, redis_client, names))

    assert {s.status for s in states(redis_client, names, job_ids).values()} == {
        JobStatus.COMPLETED
    }
    assert bridge.window.high_water == 5
    assert launcher.most_on_node <= 2  # one analyser + a look-ahead of one
    assert count_events(events(redis_client, names), EventType.COMPLETED) == dict.fromkeys(
        job_ids, 1
    )


def test_retry_runs_again_from_the_failed_step_without_ray(
    make_bridge: Callable[..., tuple[Bridge, FakeLauncher]],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    bridge, _ = make_bridge(fail={"twice": 2, "always": 99}, step_retries=2)
    for job_id in ("twice", "always"):
        xadd_raw(redis_client, names, video(job_id))
    asyncio.run(run_until_done(bridge, redis_client, names))

    found = states(redis_client, names, ["twice", "always"])
    assert found["twice"].status is JobStatus.COMPLETED and found["twice"].attempts == 3
    assert found["always"].status is JobStatus.FAILED and found["always"].attempts == 3
    assert found["always"].error == {
        "class": "StepError",
        "message": "flaky brief, attempt 3",
        "step": "brief",
        "retryable": True,
    }
