"""Each step's time limit, kept by the bridge on a local Ray with synthetic steps: a step past
it is stopped (a task's worker killed, the analysis actor restarted) and the job fails naming
the setting; a step waiting for its turn is not late."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
import redis
from helpers import FAST_STEPS_S, all_finished, states, video, wait_until, xadd_raw

from ingest.models import JobState, JobStatus, now
from ingest.names import RedisNames
from ingest.settings import Settings
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE, synthetic_duration
from raybridge import BridgeHandle
from raybridge.actor import Bridge
from raybridge.window import Slot

pytestmark = pytest.mark.integration

SLOTS = 4
LIMIT_S = 2.0
#: What a stopped step may take beyond its limit: the bridge's look at the hash, Ray's cancel,
#: storing the outcome — on a loaded 2-core machine.
STOP_SLACK_S = 8.0


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=8,
        resources={DOWNLOAD_SLOT: SLOTS, REPORT_NODE: 1},
        include_dashboard=False,
    )
    yield
    ray.shutdown()


def analyser_pids(handle: BridgeHandle) -> list[int]:
    actors = ray.get(
        handle.actor.__ray_call__.remote(
            lambda self: [a for hs in self.fleet.analysers.values() for a in hs]
        ),
        timeout=30,
    )
    return [ray.get(a.__ray_call__.remote(lambda self: os.getpid()), timeout=60) for a in actors]


def job_whose(settings: Settings, step: str, wanted: Callable[[float], bool], prefix: str) -> str:
    """A job id whose synthetic ``step`` lasts what ``wanted`` accepts (durations vary per job
    with ``synthetic_jitter``, deterministically)."""
    return next(
        f"{prefix}-{n}"
        for n in range(10_000)
        if wanted(synthetic_duration(settings, f"{prefix}-{n}", step))
    )


def assert_stopped(state: JobState, step: str) -> None:
    assert state.status is JobStatus.FAILED
    assert state.error is not None
    assert state.error["class"] == "StepTimeout"
    assert state.error["step"] == step and state.error["retryable"] is False
    assert f'VIDBRIEF_STEP_TIMEOUT_SECONDS="{step}=' in state.error["message"]
    assert state.attempts == 1  # permanent: not run again
    started = state.steps[step].started
    assert started is not None and state.finished_at is not None
    assert state.finished_at - started < LIMIT_S + STOP_SLACK_S


@pytest.mark.timeout(180)
@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_an_analysis_past_its_limit_fails_and_the_next_job_runs_on_a_restarted_actor(
    bridge: Callable[..., BridgeHandle],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    timing: dict[str, Any] = {
        "synthetic_seconds": {**FAST_STEPS_S, "analyse": 20.0},
        "synthetic_jitter": 1.0,  # analyses of 0 to 40 s, by job id
    }
    settings = make_settings(**timing)
    slow = job_whose(settings, "analyse", lambda s: s > 30, "slow")
    quick = job_whose(settings, "analyse", lambda s: s < 0.5, "quick")
    handle = bridge(
        **timing,
        step_timeout_seconds={"analyse": LIMIT_S},
        cpu_analysers_per_node=1,
        window=2,
    )
    (pid_before,) = analyser_pids(handle)
    xadd_raw(redis_client, names, video(slow))
    wait_until(
        "the slow analysis started",
        lambda: (
            states(redis_client, names, [slow]).get(slow)
            and states(redis_client, names, [slow])[slow].steps.get("analyse")
        ),
        60,
    )
    xadd_raw(redis_client, names, video(quick))  # queued on the same actor, behind it

    wait_until("both finished", lambda: all_finished(redis_client, names, [slow, quick]), 90)
    found = states(redis_client, names, [slow, quick])
    assert_stopped(found[slow], "analyse")
    assert found[quick].status is JobStatus.COMPLETED, found[quick].error
    (pid_after,) = analyser_pids(handle)
    assert pid_after != pid_before  # the actor was killed and came back on its node


@pytest.mark.timeout(180)
@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_a_download_past_its_limit_is_killed_and_its_slot_freed(
    bridge: Callable[..., BridgeHandle], redis_client: redis.Redis, names: RedisNames
) -> None:
    bridge(
        synthetic_seconds={**FAST_STEPS_S, "download": 120.0},
        step_timeout_seconds={"download": LIMIT_S},
    )
    xadd_raw(redis_client, names, video("long-download"))
    wait_until("the job failed", lambda: all_finished(redis_client, names, ["long-download"]), 60)
    assert_stopped(states(redis_client, names, ["long-download"])["long-download"], "download")
    # The task's worker was killed: its download slot is free long before its 120 s sleep ends.
    wait_until(
        "the download slot back",
        lambda: ray.available_resources().get(DOWNLOAD_SLOT) == SLOTS,
        20,
    )


@pytest.mark.timeout(180)
@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_a_step_waiting_for_its_turn_is_not_late(
    bridge: Callable[..., BridgeHandle], redis_client: redis.Redis, names: RedisNames
) -> None:
    # One analyser, three 1.5 s analyses: the third waits 3 s in the actor's queue, longer than
    # its 2 s limit, and runs 1.5 s — within it.
    bridge(
        synthetic_seconds={**FAST_STEPS_S, "analyse": 1.5},
        step_timeout_seconds={"analyse": LIMIT_S},
        cpu_analysers_per_node=1,
        window=3,
    )
    jobs = [f"queued-{n}" for n in range(3)]
    started = time.monotonic()
    for job_id in jobs:
        xadd_raw(redis_client, names, video(job_id))
    wait_until("the jobs finished", lambda: all_finished(redis_client, names, jobs), 90)
    found = states(redis_client, names, jobs)
    assert {j: s.status for j, s in found.items()} == dict.fromkeys(jobs, JobStatus.COMPLETED)
    assert time.monotonic() - started > 3 * 1.5  # they really queued one behind the other


def test_the_watchdog_stops_a_step_only_when_this_attempt_started_it_a_limit_ago(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    """The clock's rule, without Ray: the fake launcher's ref never resolves by itself."""
    from ingest.errors import StepTimeout

    limit_s, beyond_s = 0.05, 0.1
    job = names.job("j1")

    async def action(bridge: Bridge) -> tuple[list[str], ...]:
        clock, launcher = bridge.runner.clock, bridge.launcher
        slot = Slot("j1", "1-1", attempt=2)
        never = asyncio.get_running_loop().create_future()
        follow = asyncio.create_task(clock.follow(slot, "brief", never))
        looks = []
        for started, attempt in ((None, None), (now() - 60, 1), (now() - 60, 2)):
            if started is not None:  # what steps.py records when the step starts
                redis_client.hset(
                    job, mapping={"step:brief:started": started, "step:brief:attempt": attempt}
                )
            await asyncio.sleep(beyond_s)
            await clock.check()
            looks.append(list(launcher.aborted))
        with pytest.raises(StepTimeout, match=r"brief ran past its time limit of 0\.05 s"):
            await follow
        return tuple(looks)

    not_started, earlier_attempt, this_attempt = on_bridge(
        action, step_timeout_seconds={"brief": limit_s}
    )
    assert not_started == [] and earlier_attempt == []  # waiting, or a stale record: not late
    assert this_attempt == ["brief"]
