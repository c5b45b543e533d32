"""The bridge on one local Ray node and a real redis-server, with synthetic steps."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import ray
import redis
from helpers import (
    FAST_STEPS_S,
    all_finished,
    count_events,
    events,
    group_idle,
    max_overlap,
    states,
    video,
    wait_until,
    xadd_many,
    xadd_raw,
)

from ingest.client import Client
from ingest.events import EventType
from ingest.models import JobRequest, JobStatus
from ingest.names import BRIDGE_GROUP, JOB_FIELD, PARKED_CONSUMER, TRUNCATED_FIELD, RedisNames
from ingest.redis_server import free_port
from ingest.settings import Settings
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE, save_output, synthetic_output
from pipeline.context import JobContext
from raybridge import BridgeHandle

pytestmark = [pytest.mark.ray, pytest.mark.integration, pytest.mark.usefixtures("local_ray")]

#: Logical CPUs of the module's Ray: sleeping synthetic steps need slots, not cores.
RAY_CPUS = 8


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=RAY_CPUS,
        resources={DOWNLOAD_SLOT: 4, REPORT_NODE: 1},
        include_dashboard=False,
    )
    yield
    ray.shutdown()


@pytest.mark.timeout(120)
def test_fifty_raw_jobs_complete_once_each_within_the_window(
    bridge: Callable[..., BridgeHandle], redis_client: redis.Redis, names: RedisNames
) -> None:
    window, port = 8, free_port()
    handle = bridge(window=window, cpu_analysers_per_node=2, metrics_port=port)
    job_ids = [f"raw-{n:02d}" for n in range(50)]
    for job_id in job_ids:
        xadd_raw(redis_client, names, video(job_id))
    xadd_raw(redis_client, names, video("raw-07"))  # a duplicate entry of a queued/running job

    wait_until("50 jobs finished", lambda: all_finished(redis_client, names, job_ids))
    wait_until("every entry acknowledged", lambda: group_idle(redis_client, names))
    found = states(redis_client, names, job_ids)
    assert {s.status for s in found.values()} == {JobStatus.COMPLETED}
    assert count_events(events(redis_client, names), EventType.COMPLETED) == dict.fromkeys(
        job_ids, 1
    )
    # The window bounded the jobs in flight, and was used fully.
    assert handle.stats()["high_water"] == window
    spans = [(s.created_at or 0, s.finished_at or 0) for s in found.values()]
    assert max_overlap(spans) <= window  # from Redis alone: accepted..finished intervals
    beat = json.loads(redis_client.hget(names.bridges, "bridge-1") or "{}")
    assert beat["window"] == window and beat["high_water"] <= window
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b'vidbrief_bridge_jobs_finished_total{outcome="completed"} 50.0' in metrics
    assert b"vidbrief_bridge_step_seconds_bucket" in metrics

    # A foreign producer sends finished jobs again: acknowledged, not run, no second event.
    for job_id in job_ids[:3]:
        xadd_raw(redis_client, names, video(job_id))
    wait_until("the re-sent entries acknowledged", lambda: group_idle(redis_client, names))
    again = count_events(events(redis_client, names), EventType.COMPLETED)
    assert all(again[j] == 1 for j in job_ids)
    assert all(s.attempts == 1 for s in states(redis_client, names, job_ids).values())


@pytest.mark.timeout(120)
def test_invalid_entries_are_dead_lettered_and_step_failures_reported(
    bridge: Callable[..., BridgeHandle], redis_client: redis.Redis, names: RedisNames
) -> None:
    bridge(step_retries=2)
    bad = {
        "not valid JSON": {JOB_FIELD: "{not json"},
        "scheme 'ftp' is not allowed": {JOB_FIELD: json.dumps({"url": "ftp://example.com/v"})},
        "url: required field is missing": {JOB_FIELD: json.dumps({"job_id": "no-url"})},
        "colour: unknown field": {JOB_FIELD: json.dumps({"url": "https://e.com/v", "colour": 1})},
        "no 'job' field": {"video": "https://e.com/v"},
        "larger than 65536 bytes": {
            JOB_FIELD: json.dumps({"url": "https://e.com/v", "instructions": "x" * 70_000})
        },
    }
    bad_ids = {reason: redis_client.xadd(names.jobs, fields) for reason, fields in bad.items()}
    jobs = {
        "perm": video("perm", "vidbrief-fail=analyse:permanent"),
        "flaky": video("flaky", "vidbrief-fail=brief:retryable:1"),
        "hopeless": video("hopeless", "vidbrief-fail=download:retryable:99"),
        "after-bad": video("after-bad"),  # the bridge kept running
    }
    for job in jobs.values():
        xadd_raw(redis_client, names, job)

    wait_until("jobs finished", lambda: all_finished(redis_client, names, list(jobs)))
    wait_until("every entry acknowledged", lambda: group_idle(redis_client, names))

    dead = {f["stream_id"]: f for _, f in redis_client.xrange(names.dead)}
    assert len(dead) == len(bad)
    for reason, stream_id in bad_ids.items():
        letter = dead[stream_id]
        assert reason in letter["reason"]
        assert letter["deliveries"] == "1"
        kept = {k: v for k, v in letter.items() if k in bad[reason]}
        if reason.startswith("larger than"):  # kept in part: dead_letter_field_bytes of it
            assert kept[JOB_FIELD] == bad[reason][JOB_FIELD][:65_536]
            assert json.loads(letter[TRUNCATED_FIELD]) == [JOB_FIELD]
        else:
            assert kept == bad[reason]
    evs = events(redis_client, names)
    assert sum(count_events(evs, EventType.REJECTED).values()) == len(bad)

    found = states(redis_client, names, jobs)
    assert found["after-bad"].status is JobStatus.COMPLETED
    perm = found["perm"]
    assert perm.status is JobStatus.FAILED
    assert perm.error == {
        "class": "PermanentStepError",
        "step": "analyse",
        "retryable": False,
        "message": "synthetic permanent failure of analyse",
    }
    assert "brief" not in perm.steps and perm.attempts == 1
    flaky = found["flaky"]
    assert flaky.status is JobStatus.COMPLETED and flaky.attempts == 2
    started = [(e.job_id, e.data["step"]) for e in evs if e.type == EventType.STEP_STARTED]
    assert started.count(("flaky", "download")) == 1  # the retry ran from the failed step
    assert started.count(("flaky", "brief")) == 2
    hopeless = found["hopeless"]
    assert hopeless.status is JobStatus.FAILED and hopeless.attempts == 3
    assert hopeless.error and hopeless.error["retryable"] is True
    assert count_events(evs, EventType.FAILED) == {"perm": 1, "hopeless": 1}


@pytest.mark.timeout(120)
def test_cancel_a_queued_and_a_running_job(
    bridge: Callable[..., BridgeHandle],
    redis_client: redis.Redis,
    names: RedisNames,
    client: Client,
) -> None:
    analyse_s = 6.0  # long enough that a cancel that waited for it would show, even under load
    bridge(window=1, synthetic_seconds={**FAST_STEPS_S, "analyse": analyse_s})
    client.submit(JobRequest(**video("long")))
    client.submit(JobRequest(**video("queued")))  # window 1: not read while "long" runs
    wait_until(
        "long's analysis started",
        lambda: redis_client.hget(names.job("long"), "step:analyse:started"),
    )
    asked = time.monotonic()
    client.cancel("queued")
    client.cancel("long")
    wait_until("both cancelled", lambda: all_finished(redis_client, names, ["long", "queued"]))
    assert time.monotonic() - asked < analyse_s  # did not wait for the analysis to end
    client.submit(JobRequest(**video("next")))  # runs after long's analysis would have ended
    wait_until("the next job", lambda: all_finished(redis_client, names, ["next"]), 30)
    wait_until("every entry acknowledged", lambda: group_idle(redis_client, names))

    found = states(redis_client, names, ["long", "queued", "next"])
    assert found["long"].status is JobStatus.CANCELLED
    assert found["queued"].status is JobStatus.CANCELLED and "download" not in found["queued"].steps
    assert found["next"].status is JobStatus.COMPLETED
    evs = events(redis_client, names)
    assert count_events(evs, EventType.CANCELLED) == {"long": 1, "queued": 1}
    assert count_events(evs, EventType.COMPLETED) == {"next": 1}


@pytest.mark.timeout(120)
def test_recovery_acks_finished_resumes_interrupted_and_reclaims_idle(
    bridge: Callable[..., BridgeHandle],
    redis_client: redis.Redis,
    names: RedisNames,
    make_settings: Callable[..., Settings],
) -> None:
    me, gone = "bridge-1", "bridge-gone"
    redis_client.xgroup_create(names.jobs, BRIDGE_GROUP, id="0", mkstream=True)
    ids = {
        j: xadd_raw(redis_client, names, video(j))
        for j in ("done-before", "half-done", "too-often", "orphan")
    }
    # A previous life of this bridge read three of them and died; another bridge read one.
    redis_client.xreadgroup(BRIDGE_GROUP, me, {names.jobs: ">"}, count=3)
    redis_client.xreadgroup(BRIDGE_GROUP, gone, {names.jobs: ">"}, count=1)
    redis_client.xclaim(names.jobs, BRIDGE_GROUP, me, 0, [ids["too-often"]], retrycount=5)
    redis_client.hset(names.job("done-before"), mapping={"status": "completed", "attempts": "1"})
    node = ray.get_runtime_context().get_node_id()
    settings = make_settings(step_mode="synthetic")
    ctx = JobContext("half-done", JobRequest(**video("half-done")), settings, attempt=1)
    save_output("download", ctx, synthetic_output("download", ctx))  # its video is on disk
    redis_client.hset(
        names.job("half-done"),
        mapping={
            "status": "running",
            "attempts": "1",
            "stream_id": ids["half-done"],
            "step:download:started": "1.0",
            "step:download:ended": "2.0",
            "step:download:node": node,
        },
    )
    claim_idle_ms = 200
    wait_until(
        "the other bridge's entry idle longer than claim_idle_ms",
        lambda: redis_client.xpending_range(
            names.jobs, BRIDGE_GROUP, "-", "+", 1, consumername=gone, idle=claim_idle_ms + 1
        ),
        10,
    )

    bridge(bridge_name=me, claim_idle_ms=claim_idle_ms, max_deliveries=5)
    wait_until("every entry handled", lambda: group_idle(redis_client, names))
    wait_until("jobs finished", lambda: all_finished(redis_client, names, ["half-done", "orphan"]))

    found = states(redis_client, names, ["done-before", "half-done", "orphan", "too-often"])
    assert found["done-before"].attempts == 1 and "download" not in found["done-before"].steps
    half = found["half-done"]
    assert half.status is JobStatus.COMPLETED and half.attempts == 2
    assert half.steps["download"].started == 1.0  # resumed after the download: not run again
    assert found["orphan"].status is JobStatus.COMPLETED
    assert "too-often" not in found  # never became a job here
    dead = [f for _, f in redis_client.xrange(names.dead)]
    assert [d["stream_id"] for d in dead] == [ids["too-often"]]
    assert "more than max_deliveries=5" in dead[0]["reason"] and dead[0]["deliveries"] == "6"
    completed = count_events(events(redis_client, names), EventType.COMPLETED)
    assert completed == {"half-done": 1, "orphan": 1}


@pytest.mark.timeout(120)
def test_drain_leaves_unfinished_jobs_pending_for_the_next_bridge(
    bridge: Callable[..., BridgeHandle],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    slow = bridge(window=4, synthetic_seconds={**FAST_STEPS_S, "analyse": 5.0})
    job_ids = [f"drain-{n}" for n in range(6)]
    # At once: the bridge's first read routes all six (four taken, two parked in the lanes).
    xadd_many(redis_client, names, [video(j) for j in job_ids])
    wait_until("the window full", lambda: slow.stats()["in_flight"] == 4)
    stats = slow.stop(grace_s=0.2)
    assert stats["left_pending"] == 4
    owners = redis_client.xpending(names.jobs, BRIDGE_GROUP)["consumers"]
    assert {c["name"]: c["pending"] for c in owners} == {"bridge-1": 4, PARKED_CONSUMER: 2}
    assert not redis_client.hexists(names.bridges, "bridge-1")  # heartbeat removed
    assert not any(s.status.finished for s in states(redis_client, names, job_ids).values())

    bridge()  # the next bridge, same name: takes over the pending entries, then the rest
    wait_until("all finished", lambda: all_finished(redis_client, names, job_ids))
    wait_until("every entry acknowledged", lambda: group_idle(redis_client, names))
    completed = count_events(events(redis_client, names), EventType.COMPLETED)
    assert completed == dict.fromkeys(job_ids, 1)
