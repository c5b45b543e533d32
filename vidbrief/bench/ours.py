"""Our bridge, end to end: XADD the jobs to a private Redis, let ``start_bridge`` run them.

The makespan runs from the first XADD to the last outcome stored (the job hash's
``finished_at``); the step spans come from the job hashes (``step:<name>:started|ended|node``,
written by the step wrapper inside the Ray worker).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis

from ingest.models import JobState, now
from ingest.names import BRIDGE_GROUP, JOB_FIELD, RedisNames
from ingest.settings import Settings
from vidbrief.bench.bounds import STEPS, Run, Span

#: How often the benchmark driver looks at the job hashes (cheap: one pipelined HGET per job).
POLL_S = 0.02
#: A run that takes longer than its lower bound times this has hung.
HANG_FACTOR = 5.0
HANG_MIN_S = 60.0
BRIDGE_NAME = "bench"


def bench_settings(redis_url: str, workdir: Path, **fields: Any) -> Settings:
    """Bridge settings for a benchmark: our Redis, private folders, nothing from ``.env``."""
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "ray_address": None,
        "bridge_name": BRIDGE_NAME,
        "state_dir": workdir / "state",
        "work_dir": workdir / "work",
        "reports_url": str(workdir / "reports"),
        "metrics_port": None,
        "_env_file": None,
    }
    return Settings(**(base | fields))


def xadd_jobs(client: redis.Redis, names: RedisNames, job_ids: list[str]) -> float:
    """XADD every job in one round trip; returns the wall-clock time just before."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        request = {"url": f"https://videos.example.com/{job_id}.mp4", "job_id": job_id}
        pipe.xadd(names.jobs, {JOB_FIELD: json.dumps(request)})
    t0 = now()
    pipe.execute()
    return t0


def finished(client: redis.Redis, names: RedisNames, job_ids: list[str]) -> bool:
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(names.job(job_id), "finished_at")
    return all(pipe.execute())


def pending(client: redis.Redis, names: RedisNames) -> int:
    return int(client.xpending(names.jobs, BRIDGE_GROUP)["pending"])


def wait_done(client: redis.Redis, names: RedisNames, job_ids: list[str], timeout_s: float) -> None:
    """Until every job has an outcome and no entry is pending (XACKed)."""
    deadline = time.monotonic() + timeout_s
    while not (finished(client, names, job_ids) and pending(client, names) == 0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(job_ids)} jobs not all finished within {timeout_s:.0f} s")
        time.sleep(POLL_S)


def read_states(client: redis.Redis, names: RedisNames, job_ids: list[str]) -> list[JobState]:
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hgetall(names.job(job_id))
    return [JobState.from_hash(j, f) for j, f in zip(job_ids, pipe.execute(), strict=True)]


def spans_of(state: JobState) -> list[Span]:
    out = []
    for step in STEPS:
        timing = state.steps.get(step)
        if timing and timing.started is not None and timing.ended is not None:
            out.append(Span(state.job_id, step, timing.started, timing.ended, timing.node or ""))
    return out


def run_ours(settings: Settings, redis_url: str, job_ids: list[str], bound_s: float) -> Run:
    """Start the bridge (warm), XADD the jobs, wait for every outcome, stop the bridge."""
    from raybridge import start_bridge

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    handle = start_bridge(settings, redis_url)
    try:
        t0 = xadd_jobs(client, settings.names, job_ids)
        wait_done(client, settings.names, job_ids, max(HANG_MIN_S, HANG_FACTOR * bound_s))
    finally:
        handle.stop(grace_s=0)
    states = read_states(client, settings.names, job_ids)
    bad = {s.job_id: s.status for s in states if s.status != "completed"}
    if bad:
        raise RuntimeError(f"jobs did not complete: {bad}")
    completions = {s.job_id: float(s.finished_at or 0) for s in states}
    spans = [span for s in states for span in spans_of(s)]
    return Run("ours", t0, max(completions.values()), spans, completions)
