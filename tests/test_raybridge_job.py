"""One job's coroutine on the real test Redis with a fake launcher, the read loop not running:
outcomes stored with their event and XACK, retries from the failed step, a lost node, a cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fake_launcher import FakeLauncher
from helpers import count_events, events, pending, run_all, states, video, xadd_raw

from ingest.events import EventType
from ingest.models import JobStatus
from ingest.names import RedisNames
from raybridge.actor import Bridge
from raybridge.placement import NodeView

pytestmark = pytest.mark.integration

TWO_NODES = [NodeView("a", gpus=1, download_slots=1), NodeView("b", gpus=1, download_slots=1)]


def test_a_completed_job_is_stored_with_its_result_event_and_ack(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    xadd_raw(redis_client, names, video("ok"))
    on_bridge(run_all)
    state = states(redis_client, names, ["ok"])["ok"]
    assert state.status is JobStatus.COMPLETED and state.attempts == 1
    assert state.result == {"step": "report", "job_id": "ok"}  # the last step's output
    [completed] = [e for e in events(redis_client, names) if e.type == EventType.COMPLETED]
    assert completed.id == "ok/completed" and completed.data["step"] == "report"
    assert pending(redis_client, names) == 0


def test_a_retry_runs_again_from_the_failed_step(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    launcher = FakeLauncher(fail={"twice": 2, "always": 99})
    for job_id in ("twice", "always"):
        xadd_raw(redis_client, names, video(job_id))
    on_bridge(run_all, launcher, step_retries=2, retry_backoff_seconds=0.01)

    found = states(redis_client, names, ["twice", "always"])
    assert found["twice"].status is JobStatus.COMPLETED and found["twice"].attempts == 3
    assert found["always"].status is JobStatus.FAILED and found["always"].attempts == 3
    assert found["always"].error == {
        "class": "StepError",
        "message": "flaky brief, attempt 3",
        "step": "brief",
        "retryable": True,
    }
    steps_run = [steps for job, _, steps in launcher.launches if job == "twice"]
    full = ["download", "analyse", "brief", "report"]
    assert steps_run == [full, ["brief", "report"], ["brief", "report"]]


@pytest.mark.parametrize(
    ("moves", "status", "attempts"),
    [(1, JobStatus.COMPLETED, 2), (0, JobStatus.FAILED, 1)],
    ids=["downloaded-again", "no-moves-left"],
)
def test_a_job_whose_node_is_lost_is_downloaded_again_while_moves_last(
    on_bridge: Callable[..., Any],
    redis_client: redis.Redis,
    names: RedisNames,
    moves: int,
    status: JobStatus,
    attempts: int,
) -> None:
    launcher = FakeLauncher(nodes=TWO_NODES, lose_node_once=["lost"])
    xadd_raw(redis_client, names, video("lost"))
    on_bridge(run_all, launcher, placement_retries=moves)

    state = states(redis_client, names, ["lost"])["lost"]
    assert state.status is status and state.attempts == attempts
    assert [steps[0] for _, _, steps in launcher.launches] == ["download"] * attempts
    if status is JobStatus.FAILED:
        assert state.error["class"] == "NodeGone"
        assert count_events(events(redis_client, names), EventType.FAILED) == {"lost": 1}


def test_a_cancelled_job_is_stored_as_cancelled_and_its_steps_stopped(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    launcher = FakeLauncher(step_s=5.0)
    xadd_raw(redis_client, names, video("stop"))

    async def action(bridge: Bridge) -> list[bool]:
        await bridge.fleet.refresh_nodes()
        await bridge.fleet.wait_warm()
        [entry] = await bridge.stream.read_new(1, block_ms=10)
        admitted = await bridge.admission.admit(entry)
        task = asyncio.create_task(bridge.runner.run(admitted.slot, admitted.request, None))
        while not admitted.slot.refs:  # its chain is launched
            await asyncio.sleep(0.01)
        admitted.slot.cancelled = True  # what the bridge does on a cancel request
        bridge.launcher.cancel(admitted.slot.refs.values())
        task.cancel()
        await task
        return [ref.cancelled() for ref in admitted.slot.refs.values()]

    assert all(on_bridge(action, launcher))
    state = states(redis_client, names, ["stop"])["stop"]
    assert state.status is JobStatus.CANCELLED
    [cancelled] = [e for e in events(redis_client, names) if e.type == EventType.CANCELLED]
    assert cancelled.data["status"] == "cancelled" and pending(redis_client, names) == 0
    assert json.loads(redis_client.hget(names.job("stop"), "request"))["job_id"] == "stop"
