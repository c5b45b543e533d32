"""Celery as a peer in the benchmarks: the same synthetic chain, a queue per resource class.

    python -m celery -A vidbrief.bench.celerypeer worker -Q <queue> -c N ...   (started here)

The Celery way of building the chain: Redis is the broker; every task is acknowledged late
(``task_acks_late``: after it ran, so a killed worker's task is delivered again) and each worker
process reserves one message at a time (``worker_prefetch_multiplier=1``); one queue per
resource class, with a worker per node and class whose concurrency is that node's capacity:

    download            consumed by each node's download worker (concurrency: its slots)
    <node>.gpu          that node's analysis worker (concurrency: its GPUs); the download task,
                        once done, sends the analysis to the queue of the node it ran on
    brief, report       one worker each (concurrency 8)

Workers use the threads pool (the steps sleep; a fork per slot adds only start-up here). Each
task sleeps its job's ``pipeline.chain.synthetic_duration`` and appends its span (start, end,
node) to a Redis list; the report task appends the job's completion. Workers are separate
processes in their own process groups, stopped by their PIDs (``workers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery

from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP

BROKER_ENV, NODE_ENV = "VIDBRIEF_BENCH_CELERY_BROKER", "VIDBRIEF_BENCH_CELERY_NODE"
SPANS_KEY, DONE_KEY = "vidbrief-bench:celery:spans", "vidbrief-bench:celery:done"
DOWNLOAD_QUEUE, BRIEF_QUEUE, REPORT_QUEUE = "download", "brief", "report"
SHARED_CONCURRENCY = 8
WORKER_STOP_S = 10.0

app = Celery("vidbrief-bench", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue=DOWNLOAD_QUEUE,
)
_redis: Any = None


def gpu_queue(node: str) -> str:
    return f"{node}.gpu"


def _client() -> Any:
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(os.environ[BROKER_ENV])
    return _redis


def _work(job: str, step: str, seconds: dict[str, float]) -> str:
    node = os.environ.get(NODE_ENV, "")
    start = time.time()
    if seconds[step]:
        time.sleep(seconds[step])
    span = {"job": job, "step": step, "start": start, "end": time.time(), "node": node}
    _client().rpush(SPANS_KEY, json.dumps(span))
    return node


@app.task(name="vidbrief.download")
def download(job: str, seconds: dict[str, float]) -> None:
    node = _work(job, DOWNLOAD_STEP, seconds)
    analyse.apply_async((job, seconds), queue=gpu_queue(node))


@app.task(name="vidbrief.analyse")
def analyse(job: str, seconds: dict[str, float]) -> None:
    _work(job, ANALYSE_STEP, seconds)
    brief.apply_async((job, seconds), queue=BRIEF_QUEUE)


@app.task(name="vidbrief.brief")
def brief(job: str, seconds: dict[str, float]) -> None:
    _work(job, BRIEF_STEP, seconds)
    report.apply_async((job, seconds), queue=REPORT_QUEUE)


@app.task(name="vidbrief.report")
def report(job: str, seconds: dict[str, float]) -> None:
    _work(job, REPORT_STEP, seconds)
    _client().rpush(DONE_KEY, json.dumps({"job": job, "t": time.time()}))


# -- the driver's side ------------------------------------------------------------------------


def configure(broker: str) -> None:
    """Point this process's Celery app (and its span client) at ``broker``."""
    global _redis
    os.environ[BROKER_ENV] = broker
    app.conf.broker_url = broker
    _redis = None


def run_celery(topology: Any, durations: dict[str, dict[str, float]], broker: str) -> Any:
    """The topology's workers, the jobs through them, the workers stopped: the Run."""
    configure(broker)
    nodes = [(n.name, n.gpus, n.download_slots) for n in topology.nodes]
    head = next(n.name for n in topology.nodes if n.head)
    count = 2 * sum(1 for _, g, s in nodes if g and s) + 2
    with workers(broker, nodes, head):
        wait_ready(broker, count)
        total = sum(sum(d.values()) for d in durations.values())
        return run_jobs(broker, durations, max(120.0, total))


def _worker(broker: str, node: str, queue: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, BROKER_ENV: broker, NODE_ENV: node}
    args = [sys.executable, "-m", "celery", "-A", __name__, "worker", "-Q", queue]
    args += ["-c", str(concurrency), "--pool", "threads", "-n", f"{queue}@{node}"]
    args += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "WARNING"]
    return subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextlib.contextmanager
def workers(broker: str, nodes: list[tuple[str, int, int]], head: str) -> Iterator[None]:
    """A worker per (node, class): ``nodes`` as (name, GPUs, download slots); stopped by PID."""
    procs = []
    try:
        for name, gpus, slots in nodes:
            if slots and gpus:
                procs.append(_worker(broker, name, DOWNLOAD_QUEUE, slots))
                procs.append(_worker(broker, name, gpu_queue(name), gpus))
        procs.append(_worker(broker, head, BRIEF_QUEUE, SHARED_CONCURRENCY))
        procs.append(_worker(broker, head, REPORT_QUEUE, SHARED_CONCURRENCY))
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_ready(broker: str, queues: int, timeout_s: float = 60.0) -> None:
    """Until ``queues`` workers answer a ping (they are consuming)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        if len(replies) >= queues:
            return
    raise TimeoutError(f"celery workers not ready: {len(replies)} of {queues}")


def run_jobs(broker: str, durations: dict[str, dict[str, float]], timeout_s: float) -> Any:
    """Send every job's download, wait for all completions; the Run of spans."""
    from vidbrief.bench.bounds import Run, Span

    client = _client()
    client.delete(SPANS_KEY, DONE_KEY)
    t0 = time.time()
    for job, seconds in durations.items():
        download.apply_async((job, dict(seconds)), queue=DOWNLOAD_QUEUE)
    deadline = time.monotonic() + timeout_s
    while client.llen(DONE_KEY) < len(durations):
        if time.monotonic() > deadline:
            raise TimeoutError(f"celery: {client.llen(DONE_KEY)} of {len(durations)} jobs done")
        time.sleep(0.02)
    done = [json.loads(x) for x in client.lrange(DONE_KEY, 0, -1)]
    spans = [Span(**json.loads(x)) for x in client.lrange(SPANS_KEY, 0, -1)]
    completions = {d["job"]: d["t"] for d in done}
    return Run("celery", t0, max(completions.values()), spans, completions)


def celery_rate(topology: Any, broker: str, jobs: int, warm: int) -> tuple[float, dict[str, float]]:
    """No-op chains through the workers: (jobs/s from the first start to the last end, CPU ms
    per job by role). ``warm`` jobs run and are thrown away first."""
    from vidbrief.bench.cpu import cpu_meter

    configure(broker)
    nodes = [(n.name, n.gpus, n.download_slots) for n in topology.nodes]
    head = next(n.name for n in topology.nodes if n.head)
    count = 2 * sum(1 for _, g, s in nodes if g and s) + 2
    noop = dict.fromkeys((DOWNLOAD_STEP, ANALYSE_STEP, BRIEF_STEP, REPORT_STEP), 0.0)
    with workers(broker, nodes, head):
        wait_ready(broker, count)
        run_jobs(broker, {f"warm-{n}": noop for n in range(warm)}, 300)
        with cpu_meter(include_driver=False) as meter:
            run = run_jobs(broker, {f"tp-{n}": noop for n in range(jobs)}, 300)
    first = min(span.start for span in run.spans)
    return jobs / (run.t_end - first), meter.per_job_ms(jobs)
