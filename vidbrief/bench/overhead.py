"""``vidbrief bench bridge``: what the bridge costs per job, with steps that do nothing.

On one simulated node (1 logical GPU, 2 download slots, the report resource) and a private
redis-server:

- **bridge**: N jobs XADDed at once to an idle, warm bridge; from the XADD to the last outcome
  stored (``finished_at``), checked until every job is finished and XPENDING is 0;
- **raw Ray**: the same four steps with the same resources (download task pinned to the node,
  analysis on one warm actor holding the GPU, brief, report), the same window, submitted by a
  driver loop on ``ray.wait`` — no Redis, no progress records, no kept outputs;
- **rq**: N no-op jobs enqueued, then one worker in burst mode in its own process, from the
  first job's start to the last one's end (``rq.Worker``, which forks per job, and
  ``rq.SimpleWorker``);
- **latency**: one job at a time to the idle bridge: the job hash's ``step:download:started``
  (written by the step wrapper in the Ray worker) minus the wall-clock time just before XADD.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis

from ingest.events import EventType, parse_event
from ingest.models import now
from ingest.names import (
    ANALYSE_STEP,
    BRIEF_STEP,
    DOWNLOAD_STEP,
    EVENT_FIELD,
    JOB_FIELD,
    REPORT_STEP,
    STEP_NAMES,
    RedisNames,
)
from vidbrief.bench.bounds import median, percentile
from vidbrief.bench.targets import Target
from vidbrief.bench.workloads import NodeSpec, Topology

log = logging.getLogger(__name__)
T = TypeVar("T")

OVERHEAD_NODE = Topology("overhead", (NodeSpec("node-1gpu", gpus=1, download_slots=2, head=True),))
NOOP_SECONDS = dict.fromkeys(STEP_NAMES, 0.0)
#: The throughput and latency targets (targets.py).
RAW_RAY_RATIO, RQ_RATIO = 0.8, 3.0
LATENCY_P50_MS, LATENCY_P99_MS = 10.0, 50.0
RQ_QUEUE = "vidbrief-bench-noop"
RQ_TIMEOUT_S = 300
RUN_TIMEOUT_S = 300.0
#: Jobs run and thrown away first, so workers, leases and imports are warm when timing starts.
WARM_JOBS = 100
#: Pause between latency samples, so the bridge is back in its blocking read (idle).
IDLE_PAUSE_S = 0.05
EVENT_BLOCK_MS = 5000


@dataclass(frozen=True)
class Rate:
    """One throughput run: jobs per second, and CPU milliseconds per job by role."""

    jobs_per_s: float
    cpu_ms: dict[str, float]


@dataclass(frozen=True)
class OverheadOptions:
    jobs: int = 500
    window: int = 8
    samples: int = 200
    repeat: int = 1


def run_overhead(options: OverheadOptions) -> dict[str, Any]:
    """All four measurements; returns the JSON document.

    Each repeat runs raw Ray, the bridge and rq one after the other, so that a noisy neighbour
    on this shared machine slows all of them, not just whichever happened to run then.
    """
    from vidbrief.bench.cluster import private_redis, simulated_cluster

    rates: dict[str, list[Rate]] = {
        "bridge": [],
        "raw_ray": [],
        "rq": [],
        "rq_simple": [],
        "celery": [],
    }
    with (
        private_redis() as server,
        tempfile.TemporaryDirectory(prefix="vidbrief-bench-") as tmp,
        simulated_cluster(OVERHEAD_NODE) as sim,
    ):
        for r in range(options.repeat):
            _one_repeat(sim, server.url, Path(tmp) / f"r{r}", options, rates)
        latencies = with_bridge(server.url, Path(tmp) / "latency", options, _latencies)
    return _document(options, rates, latencies)


def _one_repeat(
    sim: Any,
    redis_url: str,
    workdir: Path,
    options: OverheadOptions,
    rates: dict[str, list[Rate]],
) -> None:
    rates["raw_ray"].append(raw_ray_rate(sim, options))
    rates["bridge"].append(with_bridge(redis_url, workdir, options, _bridge_rate))
    rates["rq"].append(rq_rate(redis_url, options.jobs, "fork"))
    rates["rq_simple"].append(rq_rate(redis_url, options.jobs, "simple"))
    rates["celery"].append(celery_rate(redis_url, options.jobs))


def _document(
    options: OverheadOptions, rates: dict[str, list[Rate]], latencies_ms: list[float]
) -> dict[str, Any]:
    per_s = {name: median([r.jobs_per_s for r in runs]) for name, runs in rates.items()}
    b = per_s["bridge"]
    doc: dict[str, Any] = {
        "bench": "bridge",
        "jobs": options.jobs,
        "window": options.window,
        "repeat": options.repeat,
        **{f"{name}_jobs_per_s": value for name, value in per_s.items()},
        "bridge_vs_raw_ray": b / per_s["raw_ray"],
        "bridge_vs_rq": b / per_s["rq"],
        "bridge_vs_rq_simple": b / per_s["rq_simple"],
        "bridge_vs_celery": b / per_s["celery"],
        "latency_samples": len(latencies_ms),
        "latency_ms_p50": percentile(latencies_ms, 50),
        "latency_ms_p90": percentile(latencies_ms, 90),
        "latency_ms_p99": percentile(latencies_ms, 99),
        "latency_ms_max": max(latencies_ms),
        "cpu_ms_per_job": {name: runs[-1].cpu_ms for name, runs in rates.items()},
        "runs": {name: [r.jobs_per_s for r in runs] for name, runs in rates.items()},
    }
    doc["targets"] = [t.as_dict() for t in _targets(doc)]
    return doc


def _targets(doc: dict[str, Any]) -> list[Target]:
    return [
        Target("bridge / raw Ray jobs/s", doc["bridge_vs_raw_ray"], RAW_RAY_RATIO),
        Target("bridge / rq (Worker) jobs/s", doc["bridge_vs_rq"], RQ_RATIO),
        Target("bridge / rq (SimpleWorker) jobs/s", doc["bridge_vs_rq_simple"], RQ_RATIO),
        Target("XADD → step.started p50 ms", doc["latency_ms_p50"], LATENCY_P50_MS, at_most=True),
        Target("XADD → step.started p99 ms", doc["latency_ms_p99"], LATENCY_P99_MS, at_most=True),
    ]


# -- raw Ray --------------------------------------------------------------------------------


def _noop(*_earlier: Any) -> int:
    return 0


class _NoopAnalyser:
    def analyse(self, *_earlier: Any) -> int:
        return 0

    def ready(self) -> bool:
        return True


def raw_ray_rate(sim: Any, options: OverheadOptions) -> Rate:
    """The 4-step no-op chain straight on Ray, ``window`` chains in flight (``ray.wait``)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipeline.chain import STEPS
    from vidbrief.bench.cluster import wait_for_gpus_free

    node = next(iter(sim.names))
    pinned = NodeAffinitySchedulingStrategy(node, soft=False)
    task = ray.remote(_noop)
    steps = {
        name: task.options(
            num_cpus=spec.num_cpus,
            resources=dict(spec.resources),
            scheduling_strategy=pinned if name == DOWNLOAD_STEP else "DEFAULT",
        )
        for name, spec in STEPS.items()
        if name != ANALYSE_STEP
    }
    analyser = (
        ray.remote(_NoopAnalyser)
        .options(num_gpus=1, num_cpus=STEPS[ANALYSE_STEP].num_cpus, scheduling_strategy=pinned)
        .remote()
    )
    ray.get(analyser.ready.remote())

    def chain() -> Any:
        a = analyser.analyse.remote(steps[DOWNLOAD_STEP].remote())
        return steps[REPORT_STEP].remote(steps[BRIEF_STEP].remote(a))

    try:
        _windowed(chain, WARM_JOBS, options.window)
        return _timed_windowed(chain, options)
    finally:
        ray.kill(analyser)
        wait_for_gpus_free()


def _timed_windowed(chain: Any, options: OverheadOptions) -> Rate:
    from vidbrief.bench.cpu import cpu_meter

    with cpu_meter(include_driver=True) as meter:
        seconds = _windowed(chain, options.jobs, options.window)
    log.info("raw Ray: %d jobs in %.2f s", options.jobs, seconds)
    return Rate(options.jobs / seconds, meter.per_job_ms(options.jobs))


def _windowed(chain: Any, jobs: int, window: int) -> float:
    import ray

    t0 = time.perf_counter()
    in_flight: list[Any] = []
    submitted = 0
    while submitted < jobs or in_flight:
        while len(in_flight) < window and submitted < jobs:
            in_flight.append(chain())
            submitted += 1
        done, in_flight = ray.wait(in_flight, num_returns=1)
        ray.get(done)
    return time.perf_counter() - t0


# -- the bridge -----------------------------------------------------------------------------


def with_bridge(
    redis_url: str, workdir: Path, options: OverheadOptions, measure: Callable[..., T]
) -> T:
    """Start a bridge with no-op steps on an empty Redis, warm it, ``measure``, stop it."""
    from raybridge import start_bridge
    from vidbrief.bench.cluster import wait_for_gpus_free
    from vidbrief.bench.ours import bench_settings

    settings = bench_settings(
        redis_url,
        workdir,
        window=options.window,
        step_mode="synthetic",
        synthetic_seconds=NOOP_SECONDS,
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    handle = start_bridge(settings, redis_url)
    try:
        _bridge_rate(client, settings.names, options, "warm", WARM_JOBS)
        return measure(client, settings.names, options)
    finally:
        handle.stop(grace_s=0)
        wait_for_gpus_free()


def _latencies(client: redis.Redis, names: RedisNames, options: OverheadOptions) -> list[float]:
    return [_latency_ms(client, names, f"lat-{n:04d}") for n in range(options.samples)]


def _bridge_rate(
    client: redis.Redis,
    names: RedisNames,
    options: OverheadOptions,
    prefix: str = "tp",
    jobs: int | None = None,
) -> Rate:
    """XADD the jobs at once to the idle bridge; until every outcome is stored and acked."""
    from vidbrief.bench.cpu import cpu_meter
    from vidbrief.bench.ours import read_states, wait_done, xadd_jobs

    jobs = jobs or options.jobs
    job_ids = [f"{prefix}-{n:04d}" for n in range(jobs)]
    with cpu_meter(include_driver=False) as meter:  # the driver only watches
        t0 = xadd_jobs(client, names, job_ids)
        wait_done(client, names, job_ids, RUN_TIMEOUT_S)
    t_end = max(float(s.finished_at or 0) for s in read_states(client, names, job_ids))
    log.info("bridge: %d jobs in %.2f s", jobs, t_end - t0)
    return Rate(jobs / (t_end - t0), meter.per_job_ms(jobs))


def _latency_ms(client: redis.Redis, names: RedisNames, job_id: str) -> float:
    """XADD one job to the idle bridge; its download's recorded start minus the XADD time."""
    time.sleep(IDLE_PAUSE_S)
    after = client.xrevrange(names.events, count=1)
    cursor = after[0][0] if after else "0-0"
    request = {"url": f"https://videos.example.com/{job_id}.mp4", "job_id": job_id}
    t0 = now()
    client.xadd(names.jobs, {JOB_FIELD: json.dumps(request)})
    _await_terminal(client, names, job_id, cursor)
    started = client.hget(names.job(job_id), "step:download:started")
    return (float(started or "nan") - t0) * 1000


def _await_terminal(client: redis.Redis, names: RedisNames, job_id: str, cursor: str) -> None:
    """Block on the events stream (no polling) until the job's terminal event."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        reply = client.xread({names.events: cursor}, block=EVENT_BLOCK_MS)
        for _, entries in reply or []:
            for stream_id, fields in entries:
                cursor = stream_id
                event = parse_event(fields[EVENT_FIELD], stream_id)
                if event.job_id == job_id and event.terminal:
                    if event.type != EventType.COMPLETED:
                        raise RuntimeError(f"job {job_id} ended {event.type}: {event.data}")
                    return
    raise TimeoutError(f"job {job_id} did not finish within {RUN_TIMEOUT_S:.0f} s")


# -- rq -------------------------------------------------------------------------------------


def rq_rate(redis_url: str, jobs: int, kind: str) -> Rate:
    """Enqueue ``jobs`` no-ops, run one burst worker process; first start to last end."""
    from rq import Queue
    from rq.job import Job

    from vidbrief.bench.rqjobs import noop

    connection = redis.Redis.from_url(redis_url)
    queue = Queue(RQ_QUEUE, connection=connection)
    queue.empty()
    with connection.pipeline() as pipe:
        enqueued = queue.enqueue_many(
            [Queue.prepare_data(noop, result_ttl=RQ_TIMEOUT_S) for _ in range(jobs)],
            pipeline=pipe,
        )
        pipe.execute()
    from vidbrief.bench.cpu import cpu_meter

    with cpu_meter(include_driver=False) as meter:
        _run_worker(redis_url, kind)
    done = [j for j in Job.fetch_many([j.id for j in enqueued], connection=connection) if j]
    starts = [_epoch(j.started_at) for j in done if j.started_at]
    ends = [_epoch(j.ended_at) for j in done if j.ended_at]
    if len(ends) != jobs:
        raise RuntimeError(f"rq ({kind}) finished {len(ends)} of {jobs} jobs")
    log.info("rq %s: %d jobs in %.2f s", kind, jobs, max(ends) - min(starts))
    return Rate(jobs / (max(ends) - min(starts)), meter.per_job_ms(jobs))


def celery_rate(redis_url: str, jobs: int) -> Rate:
    """The same no-op chain through Celery workers (celerypeer.py), a queue per class."""
    from vidbrief.bench.celerypeer import celery_rate as measure

    per_s, cpu_ms = measure(OVERHEAD_NODE, redis_url, jobs, WARM_JOBS)
    log.info("celery: %.1f jobs/s", per_s)
    return Rate(per_s, cpu_ms)


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _run_worker(redis_url: str, kind: str) -> None:
    """``python -m vidbrief.bench.rqjobs`` in its own process group; killed by PID if it hangs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidbrief.bench.rqjobs", redis_url, RQ_QUEUE, kind],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = proc.wait(RQ_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if code != 0:
        raise RuntimeError(f"rq worker ({kind}) exited with {code}")
