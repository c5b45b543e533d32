"""raybridge.steps: the per-step wrapper records in Redis before returning, and only once."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Iterator

import pytest
import ray
import redis
from helpers import events

from ingest.events import EventType
from ingest.models import JobRequest, JobState, JobStatus, hash_fields
from ingest.names import RedisNames
from ingest.redis_server import RedisServer
from ingest.settings import Settings
from pipeline.chain import CHAIN
from pipeline.context import JobContext
from raybridge import steps
from raybridge.steps import Progress, run_recorded

pytestmark = pytest.mark.integration

STEP_EVENTS = (EventType.STEP_STARTED, EventType.STEP_COMPLETED)


@pytest.fixture
def progress(redis_server: RedisServer, names: RedisNames) -> Progress:
    return Progress(redis_server.url, names.prefix, "test", 1000)


@pytest.fixture
def job(
    redis_client: redis.Redis, names: RedisNames, make_settings: Callable[..., Settings]
) -> Callable[[int], JobContext]:
    """Factory: a running job whose hash is at ``attempts``; its context at attempt 1."""

    def make(attempts: int) -> JobContext:
        fields = hash_fields(status=JobStatus.RUNNING, attempts=attempts)
        redis_client.hset(names.job("job-1"), mapping=fields)
        settings = make_settings(step_mode="synthetic")
        return JobContext("job-1", JobRequest(url="https://example.org/v.mp4"), settings)

    return make


def run_chain(progress: Progress, ctx: JobContext) -> list[object]:
    outputs: list[object] = []
    for spec in CHAIN:
        outputs.append(run_recorded(progress, spec.name, ctx, *outputs))
    return outputs


def step_events(client: redis.Redis, names: RedisNames) -> list[tuple[str, str]]:
    return [(e.type, e.data["step"]) for e in events(client, names) if e.type in STEP_EVENTS]


def test_each_step_recorded_before_it_returns(
    progress: Progress,
    job: Callable[[int], JobContext],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    ctx = job(1)
    outputs: list[object] = []
    for spec in CHAIN:
        outputs.append(run_recorded(progress, spec.name, ctx, *outputs))
        fields = redis_client.hgetall(names.job(ctx.job_id))
        assert {"started", "ended", "node"} <= {
            k.rsplit(":", 1)[1] for k in fields if k.startswith(f"step:{spec.name}:")
        }
        assert fields[f"step:{spec.name}:node"] == ""  # outside Ray
    expected = [(t, s.name) for s in CHAIN for t in STEP_EVENTS]
    assert step_events(redis_client, names) == expected
    run_chain(progress, ctx)  # kept outputs: returned without recording again
    report = CHAIN[-1].name  # never kept: it runs (and is recorded) again
    again = [(t, report) for t in STEP_EVENTS]
    assert step_events(redis_client, names) == expected + again


def test_abandoned_attempt_not_recorded(
    progress: Progress,
    job: Callable[[int], JobContext],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    ctx = job(2)  # the bridge moved on to attempt 2; this task is attempt 1's
    assert run_chain(progress, ctx)[0] == {"synthetic": True, "step": "download", "job_id": "job-1"}
    assert not [k for k in redis_client.hgetall(names.job(ctx.job_id)) if k.startswith("step:")]
    assert step_events(redis_client, names) == []


def test_steps_served_from_the_artefact_store_are_recorded_as_reused(
    progress: Progress,
    job: Callable[[int], JobContext],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    first = job(1)
    run_chain(progress, first)  # job-1 analyses and briefs the video
    redis_client.hset(names.job("job-2"), mapping=hash_fields(status="running", attempts=1))
    second = dataclasses.replace(first, job_id="job-2")  # the same request, another job
    report = run_chain(progress, second)[-1]

    state = JobState.from_hash("job-2", redis_client.hgetall(names.job("job-2")))
    assert {s for s, t in state.steps.items() if t.reused} == {"analyse", "brief"}
    assert set(state.steps) == {s.name for s in CHAIN}  # download and report ran
    reused = [
        e.data["step"]
        for e in events(redis_client, names)
        if e.job_id == "job-2" and e.type == EventType.STEP_COMPLETED and e.data.get("reused")
    ]
    assert reused == ["analyse", "brief"]
    assert report == {"synthetic": True, "step": "report", "job_id": "job-2"}
    seconds, steps_reused = progress.finished_steps(second)
    assert steps_reused == ("analyse", "brief") and set(seconds) == {s.name for s in CHAIN}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    yield
    ray.shutdown()


@ray.remote
def _node_in_worker() -> tuple[str, str | None]:
    return steps.current_node_id(), steps._worker_node_id


@pytest.mark.ray
def test_node_id_kept_by_workers_only(local_ray: None) -> None:
    node = ray.get_runtime_context().get_node_id()
    assert ray.get(_node_in_worker.remote()) == (node, node)
    assert steps.current_node_id() == node
    assert steps._worker_node_id is None  # a driver may join another cluster: it asks again


def test_the_redis_url_a_step_carries_is_a_secret(redis_server: RedisServer) -> None:
    url = "redis://:step-pw-3f9a@127.0.0.1:6379/0"
    progress = Progress(url, "vidbrief", "test", 1000)  # a plain string is made a secret
    assert progress.redis_url.get_secret_value() == url
    for shown in (repr(progress), str(progress), f"{progress}"):
        assert "step-pw-3f9a" not in shown
    # Ray keeps a step's arguments pickled; what a log line or a traceback prints is the repr.
    assert "step-pw-3f9a" not in repr(pickle.loads(pickle.dumps(progress)))
